r"""`scope_trl.rewards`: reference forms, unparseable references, last-box extraction, time bounds, threads, pool.

The grading runs in worker subprocesses (started once per session, about 0.5 s). The benchmark files are graded on
20 references each; the full measurement is `benchmarks/reward_grading.py`.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scope_trl.rewards import (
    GraderPool,
    accuracy_reward,
    count_boxes,
    format_reward,
    last_boxed,
    normalize_answer,
    normalize_reference,
)


REPO = Path(__file__).resolve().parents[1]
MATH_EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "math_eval"
BENCHMARK_FILES = ["aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench", "gsm8k_test", "math_train"]


def chat(text):
    return [{"role": "assistant", "content": text}]


# --------------------------------------------------------------------------------------------------------------------
# Reference forms
# --------------------------------------------------------------------------------------------------------------------

# (reference as a dataset holds it, equivalent boxed answers, wrong boxed answers)
REFERENCE_FORMS = [
    pytest.param(r"\frac{1}{2}", [r"\frac12", "0.5", "1/2"], [r"\frac{1}{3}", "2"], id="bare-latex-fraction"),
    pytest.param(
        r"x_{0} \cos(\omega t)",
        [r"x_0 \cos(\omega t)", r"x_{0}\cos (\omega t)"],
        [r"x_0 \sin(\omega t)"],
        id="bare-latex",
    ),
    pytest.param(r"$\frac{3}{4}$", [r"\frac{3}{4}", "0.75", r"$\dfrac34$"], [r"\frac{4}{3}"], id="dollar-delimited"),
    pytest.param("2,125", ["2125", "2,125", r"2,\!125"], ["2126", "2.125"], id="thousands-separator"),
    pytest.param(r"10,\!080", ["10080", "10,080"], ["10081"], id="latex-thousands-separator"),
    pytest.param("27.0", ["27", "27.0", "27.00"], ["27.5", "28"], id="trailing-zero-fraction"),
    pytest.param("025", ["25", "025"], ["250", "24"], id="leading-zeros"),
    pytest.param(204, ["204"], ["205"], id="json-integer"),
    pytest.param(
        r"We find $x = 3$, so the area is $\boxed{\dfrac{\sqrt{3}}{2}}$.",
        [r"\frac{\sqrt3}{2}", r"\frac{\sqrt{3}}{2}"],
        [r"\sqrt{3}", r"\frac{\sqrt{2}}{2}"],
        id="full-solution",
    ),
    pytest.param("$69$,$84$", ["69, 84", "84,69"], ["69", "69, 85"], id="dollar-list"),
    pytest.param("4.5e33", [r"4.5 \times 10^{33}", "4.5e33"], [r"4.5 \times 10^{32}"], id="scientific-notation"),
    pytest.param(r"\text{Evelyn}", [r"\text{Evelyn}"], [r"\text{Bob}"], id="text-answer"),
    pytest.param(r"\left( 3, \frac{\pi}{2} \right)", [r"(3, \pi/2)"], [r"(3, \pi)"], id="tuple"),
    pytest.param(r"(-\infty, 0) \cup (1, \infty)", [r"(-\infty,0)\cup(1,\infty)"], [r"(-\infty, 0)"], id="interval"),
]


@pytest.mark.parametrize(("reference", "correct", "wrong"), REFERENCE_FORMS)
def test_reference_forms_are_graded(reference, correct, wrong):
    answers = correct + wrong
    completions = [chat(f"Some reasoning. The final answer is $\\boxed{{{answer}}}$.") for answer in answers]
    rewards = accuracy_reward(completions, [reference] * len(answers))
    assert rewards == [1.0] * len(correct) + [0.0] * len(wrong), list(zip(answers, rewards))


def test_plain_string_and_conversational_completions_agree():
    solutions = ["42", r"\frac{1}{3}", "7"]
    texts = [r"So \boxed{42}.", r"\boxed{\frac{1}{3}}", r"\boxed{8}"]
    assert accuracy_reward(texts, solutions) == [1.0, 1.0, 0.0]
    assert accuracy_reward([chat(t) for t in texts], solutions) == [1.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "reference",
    [None, "", "   ", r"so the answer is \boxed{3", r"\boxed{}", "1" * 1001],
    ids=["none", "empty", "blank", "unclosed-solution-box", "empty-box", "too-long"],
)
def test_unparseable_reference_gives_none(reference):
    assert normalize_reference(reference) is None
    assert accuracy_reward([chat(r"\boxed{3}"), chat("no answer")], [reference, reference]) == [None, None]


def test_none_is_only_for_the_reference():
    # A wrong, unparseable or missing answer against a good reference is 0.0, never None.
    completions = [chat("no box at all"), chat(r"\boxed{\frac{}{}}"), chat(r"\boxed{"), chat(r"\boxed{}")]
    assert accuracy_reward(completions, ["5"] * 4) == [0.0, 0.0, 0.0, 0.0]


def test_the_last_box_is_the_answer():
    completion = chat(r"First guess \boxed{1}, but after checking, the answer is \boxed{2}.")
    assert accuracy_reward([completion, completion], ["2", "1"]) == [1.0, 0.0]
    # A final box that never closes (a truncated answer) is not replaced by an earlier complete one.
    assert accuracy_reward([chat(r"\boxed{2} and finally \boxed{2")], ["2"]) == [0.0]


def test_log_extra_columns():
    logged = {}
    rewards = accuracy_reward(
        [chat(r"\boxed{4}"), chat("none"), chat(r"\boxed{1}")],
        ["4", "4", ""],
        log_extra=lambda name, values: logged.__setitem__(name, values),
    )
    assert rewards == [1.0, 0.0, None]
    assert set(logged) == {"solution", "gold_parsed", "answer_parsed"}
    assert logged["solution"] == ["4", "4", ""]
    assert "4" in logged["gold_parsed"][0] and logged["gold_parsed"][2] == "[unparseable]"
    assert logged["answer_parsed"][1] == "[no boxed answer]"


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="completions"):
        accuracy_reward(["a", "b"], ["1"])


# --------------------------------------------------------------------------------------------------------------------
# Extraction and normalisation
# --------------------------------------------------------------------------------------------------------------------


def test_last_boxed():
    assert last_boxed(r"\boxed{\frac{1}{\sqrt{2}}}") == r"\frac{1}{\sqrt{2}}"
    assert last_boxed(r"\boxed{\{1, 2\}} end") == r"\{1, 2\}"  # escaped braces do not close the group
    assert last_boxed(r"a \boxed{1} b \fbox{2}") == "2"
    assert last_boxed(r"$\boxed 5$") == "5"  # the brace-less form of some MATH solutions
    assert last_boxed(r"\boxed{ 7 }") == "7"
    assert last_boxed("no box") is None
    assert last_boxed(r"\boxed{1} \boxed{") is None
    assert last_boxed(r"\boxed{}") is None
    assert last_boxed(r"\boxed{" + "1" * 1001 + "}") is None
    assert last_boxed(r"\boxedmath{1}") is None


def test_normalize_answer():
    assert normalize_answer(r"$\frac{1}{2}$") == r"\frac{1}{2}"
    assert normalize_answer("2,125") == "2125"
    assert normalize_answer("1,000,000.5") == "1000000.5"
    assert normalize_answer("2500,7500") == "2500,7500"  # a list, not a thousands separator
    assert normalize_answer("27.0") == "27"
    assert normalize_answer("-025") == "-25"
    assert normalize_answer("0.50") == "0.50"
    assert normalize_answer(r"\$32,\!348") == r"\$32348"
    assert normalize_answer(r"\dfrac{1}{20,\!000}") == r"\dfrac{1}{20000}"
    assert normalize_answer("4.5e33") == r"4.5 \times 10^{33}"
    assert normalize_answer(r"\(x+1\).") == "x+1"


def test_format_reward():
    completions = [
        r"Reasoning ... so the answer is \boxed{12}. I hope it is correct.",
        chat(r"The answer is $\boxed{\frac{1}{2}}$"),
        r"\boxed{1} or maybe \boxed{2}",
        r"\boxed{}",
        r"\boxed{12",
        "12",
    ]
    assert format_reward(completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert count_boxes(r"\boxed{1} \fbox{2}") == 2


# --------------------------------------------------------------------------------------------------------------------
# Time bounds, threads and the worker pool
# --------------------------------------------------------------------------------------------------------------------

PATHOLOGICAL = [
    "so " * 66_667 + r"\boxed{2}",  # 200k characters, wrong final answer
    r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",  # nesting beyond MAX_ANSWER_CHARS
    r"\boxed{" + "{" * 400 + "1" + "}" * 400 + "}",  # nesting within it
    r"The answer is \boxed{1" + " and so on" * 20_000,  # unclosed, 200k characters
    r"\boxed{9^{9^{9^{9}}}}",  # verify would evaluate a power tower
    r"\boxed{(10^{100})!}",
    "x" * 1_000_000 + r"\boxed{3}",  # a megabyte of text, wrong final answer
    "{" * 1_000_000,  # a megabyte of open braces, no box
    r"\boxed{2^{2^{40}}}",  # evaluating it would need 137 GB: the worker's timeout (or memory cap) stops it
    r"\boxed{10^{10^{10}}}",
]


def test_pathological_completions_are_bounded_and_wrong():
    start = time.monotonic()
    rewards = accuracy_reward([chat(text) for text in PATHOLOGICAL], ["1"] * len(PATHOLOGICAL), timeout_seconds=2)
    assert rewards == [0.0] * len(PATHOLOGICAL)
    assert time.monotonic() - start < 30


def test_same_results_off_the_main_thread():
    completions = [chat(r"\boxed{0.5}"), chat(r"\boxed{2126}"), chat("none"), chat(r"\boxed{9^{9^{9^{9}}}}")]
    solutions = [r"\frac{1}{2}", "2,125", "3", "1"]
    on_main = accuracy_reward(completions, solutions, timeout_seconds=2)
    results = []
    thread = threading.Thread(
        target=lambda: results.append(accuracy_reward(completions, solutions, timeout_seconds=2))
    )
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert results == [on_main] == [[1.0, 0.0, 0.0, 0.0]]


def test_pool_kills_an_unresponsive_worker_and_recovers():
    pool = GraderPool(num_workers=1, timeout_seconds=1)
    try:
        assert pool.grade([("1", "1")])[0].reward == 1.0
        os.kill(pool._workers[0].process.pid, signal.SIGSTOP)  # a worker that no longer answers, alarm or not
        start = time.monotonic()
        verdicts = pool.grade([("1", "1"), ("2", "2")])
        assert verdicts[0].reward == 0.0 and "killed" in verdicts[0].answer_parsed
        assert verdicts[1].reward == 1.0  # graded by a fresh worker
        assert time.monotonic() - start < 20
        os.kill(pool._workers[0].process.pid, signal.SIGKILL)  # a worker that died between calls is replaced
        pool._workers[0].process.wait()
        assert [v.reward for v in pool.grade([("3", "3"), ("3", "4")])] == [1.0, 0.0]
    finally:
        pool.close()


def test_pool_grades_in_parallel_in_order():
    pool = GraderPool(num_workers=2, timeout_seconds=5)
    try:
        jobs = [(str(i), str(i if i % 3 else i + 1)) for i in range(30)]
        assert [v.reward for v in pool.grade(jobs)] == [0.0 if i % 3 == 0 else 1.0 for i in range(30)]
    finally:
        pool.close()


# --------------------------------------------------------------------------------------------------------------------
# The benchmark files (samples; skipped without ../shared)
# --------------------------------------------------------------------------------------------------------------------


def _sample_answers(name, count=20):
    path = MATH_EVAL / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is not available")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row["answer"] for row in random.Random(0).sample(rows, min(count, len(rows)))]


@pytest.mark.parametrize("name", BENCHMARK_FILES)
def test_benchmark_references_are_self_consistent(name):
    answers = _sample_answers(name)
    others = answers[1:] + answers[:1]
    pairs = [(a, b) for a, b in zip(answers, others) if normalize_reference(a) != normalize_reference(b)]
    completions = [chat(f"The final answer is \\boxed{{{a}}}.") for a in answers]
    completions += [chat(f"The final answer is \\boxed{{{b}}}.") for _, b in pairs]
    rewards = accuracy_reward(completions, answers + [a for a, _ in pairs])
    assert rewards[: len(answers)] == [1.0] * len(answers)
    assert rewards[len(answers) :] == [0.0] * len(pairs)


def test_benchmark_script_runs():
    if not MATH_EVAL.exists():
        pytest.skip(f"{MATH_EVAL} is not available")
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "reward_grading.py"), "--limit", "3", "--skip-trl"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "aime24" in result.stdout and "Our failures" in result.stdout
