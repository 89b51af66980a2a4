"""Evaluation: the Avg@k / Pass@k / bootstrap estimators, the evaluator on the benchmark files, the CLI, the callback."""

import json
import math
import sys
import warnings
from fractions import Fraction
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from scope_trl import DGPOConfig, DGPOTrainer
from scope_trl import evaluation as ev
from scope_trl.apps.toy import digit_fraction_reward, make_arithmetic_dataset
from scope_trl.cli import main
from scope_trl.evaluation import (
    BENCHMARKS,
    PeriodicEvaluationCallback,
    avg_at_k,
    bootstrap_best_at_k,
    evaluate,
    load_benchmarks,
    pass_at_k,
)

from .helpers import tiny_args


MATH_EVAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "math_eval"
needs_math_eval = pytest.mark.skipif(not MATH_EVAL_DIR.is_dir(), reason=f"{MATH_EVAL_DIR} is absent")


def exact_pass_at_k(n, c, k):
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


# ------------------------------------------------------------------------------------------------------------------
# Estimators
# ------------------------------------------------------------------------------------------------------------------


def test_avg_at_k_is_the_mean_per_problem_accuracy():
    assert avg_at_k([0, 4, 2], 4) == pytest.approx((0 + 1 + 0.5) / 3)
    assert avg_at_k([1, 1], [2, 4]) == pytest.approx((0.5 + 0.25) / 2)
    assert math.isnan(avg_at_k([], 4))
    with pytest.raises(ValueError):
        avg_at_k([5], 4)


def test_pass_at_k_hand_computed_values():
    # n = 4, c = 1, k = 2: 1 - C(3, 2) / C(4, 2) = 1 - 3/6
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    # n = 10, c = 3, k = 2: 1 - C(7, 2) / C(10, 2) = 1 - 21/45
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)  # Pass@1 = c / n
    values = pass_at_k(10, [0, 3, 10], 2)
    assert isinstance(values, np.ndarray) and values.shape == (3,)
    assert values.tolist() == pytest.approx([0.0, 1 - 21 / 45, 1.0])


def test_pass_at_k_edge_cases():
    assert pass_at_k(32, 0, 32) == 0.0  # c = 0: exactly 0
    assert pass_at_k(32, 32, 1) == 1.0  # c = n: exactly 1
    assert pass_at_k(8, 6, 4) == 1.0  # n - c < k: exactly 1
    assert pass_at_k(32, [0, 1, 5, 32], 32).tolist() == [0.0, 1.0, 1.0, 1.0]  # k = n: any correct
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k([8, 4], [1, 1], 6)  # per-problem n, one of them too small
    for bad_k in (0, -1, 1.5):
        with pytest.raises(ValueError):
            pass_at_k(4, 1, bad_k)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 2)


def test_pass_at_k_is_stable_for_1024_samples():
    n = 1024
    for c, k in [(1, 1), (1, 512), (3, 100), (10, 1000), (100, 32), (500, 500), (1000, 24), (1023, 1)]:
        expected = float(exact_pass_at_k(n, c, k))
        assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-15), (c, k)
    # A tiny probability that a naive float ratio of binomials (inf / inf) could not give.
    assert pass_at_k(n, 1, 1) == pytest.approx(1 / 1024, rel=1e-12)


def test_bootstrap_is_seeded_and_matches_its_expectation():
    correctness = [[1] + [0] * 31, [1] * 32, [0] * 32]
    first = bootstrap_best_at_k(correctness, 32)
    assert first == bootstrap_best_at_k(correctness, 32)  # seeded: reproducible
    assert first != bootstrap_best_at_k(correctness, 32, seed=7)
    mean, std = first
    # E[best@32] = 1 - (1 - c/n)^k per problem: (0.638 + 1 + 0) / 3, below "any correct" (2/3).
    assert mean == pytest.approx((1 - (31 / 32) ** 32 + 1) / 3, abs=0.01)
    assert mean < 2 / 3
    p = 1 - (31 / 32) ** 32  # only the first problem varies between rounds: a Bernoulli(p) over 3 problems
    assert std == pytest.approx(math.sqrt(p * (1 - p)) / 3, abs=0.01)
    assert bootstrap_best_at_k([[1, 1], [1]], 4) == (1.0, 0.0)
    assert bootstrap_best_at_k([[0, 0]], 4) == (0.0, 0.0)


def test_summarize_excludes_ungradable_references():
    result = ev.summarize("toy", [[1.0, 0.0], [None, None], [0.0, 0.0]], k=2)
    assert (result.num_problems, result.num_excluded) == (2, 1)
    assert result.num_correct == [1, 0]
    assert result.avg_at_k == pytest.approx(0.25) and result.pass_at_k == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------------------------
# Evaluator
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def student(student_path):
    return AutoModelForCausalLM.from_pretrained(student_path), AutoTokenizer.from_pretrained(student_path)


def fake_generation(pattern):
    """A stand-in for the sampling step: per problem, completions that box the reference where `pattern` says 1."""

    def generate(model, tokenizer, texts, k, *args, **kwargs):
        assert all("<|im_start|>assistant" in text for text in texts)  # the chat template was applied
        completions = []
        for index, _ in enumerate(texts):
            row = pattern(index, k)
            completions.append(
                [
                    f"So the answer is \\boxed{{{generate.solutions[index]}}}." if ok else "\\boxed{-987654}"
                    for ok in row
                ]
            )
        return completions

    return generate


@needs_math_eval
def test_evaluator_grades_known_right_and_wrong_completions_on_every_benchmark(student, monkeypatch):
    model, tokenizer = student
    benchmarks = load_benchmarks(list(BENCHMARKS), MATH_EVAL_DIR, limit=3)
    assert list(benchmarks) == list(BENCHMARKS) and all(len(d) == 3 for d in benchmarks.values())
    # Problem 0: all k right, problem 1: one right, problem 2: none.
    generate = fake_generation(lambda index, k: [index == 0 or (index == 1 and j == 0) for j in range(k)])
    results = {}
    for name, dataset in benchmarks.items():
        generate.solutions = dataset["solution"]
        monkeypatch.setattr(ev, "_generate_transformers", generate)
        results[name] = evaluate(model, tokenizer, {name: dataset}, k=4, progress=False).benchmarks[name]
    for name, result in results.items():
        assert result.num_excluded == 0, name
        assert result.num_correct == [4, 1, 0], name
        assert result.avg_at_k == pytest.approx((1 + 0.25 + 0) / 3), name
        assert result.pass_at_k == pytest.approx(2 / 3), name
        assert result.bootstrap_best_at_k < result.pass_at_k


def test_evaluator_on_the_tiny_model_and_generated_data(student, tmp_path):
    model, tokenizer = student
    benchmarks = {"arith_a": make_arithmetic_dataset(3, seed=0), "arith_b": make_arithmetic_dataset(2, seed=1)}
    was_training = model.training
    run = {"k": 2, "batch_size": 3, "max_new_tokens": 6, "seed": 3, "progress": False}
    rng_state = torch.get_rng_state()
    result = evaluate(model, tokenizer, benchmarks, **run)
    assert model.training == was_training
    assert torch.equal(torch.get_rng_state(), rng_state)  # sampling used a forked generator
    assert [r.num_problems for r in result.benchmarks.values()] == [3, 2]
    for r in result.benchmarks.values():
        assert 0.0 <= r.avg_at_k <= r.pass_at_k <= 1.0  # an untrained model: almost surely 0.0
    again = evaluate(model, tokenizer, benchmarks, **run)
    assert again.to_dict() == result.to_dict()  # seeded

    data = json.loads(result.to_json(tmp_path / "out" / "r.json").read_text())
    assert set(data["benchmarks"]) == {"arith_a", "arith_b"} and "pass@k" in data["estimators"]
    assert data["settings"]["temperature"] == 0.6 and data["settings"]["top_k"] == 20
    markdown = result.to_markdown(tmp_path / "r.md")
    assert (tmp_path / "r.md").read_text() == markdown
    assert "| benchmark | Avg@2 | Pass@2 | problems | excluded |" in markdown and "| average |" in markdown
    table = result.table()
    assert "arith_a" in table and "average" in table
    assert set(result.metrics()) == {
        f"eval/{b}/{m}@2" for b in ("arith_a", "arith_b", "average") for m in ("avg", "pass")
    }


def test_evaluator_counts_ungradable_references_and_rejects_bad_options(student, monkeypatch):
    model, tokenizer = student
    dataset = Dataset.from_dict(
        {"prompt": [[{"role": "user", "content": "1+1?"}]] * 2, "solution": ["2", ""]}  # "" cannot be graded
    )
    generate = fake_generation(lambda index, k: [True] * k)
    generate.solutions = ["2", "2"]
    monkeypatch.setattr(ev, "_generate_transformers", generate)
    result = evaluate(model, tokenizer, {"toy": dataset}, k=2, progress=False).benchmarks["toy"]
    assert (result.num_problems, result.num_excluded, result.avg_at_k) == (1, 1, 1.0)
    with pytest.raises(ValueError, match="backend"):
        evaluate(model, tokenizer, {"toy": dataset}, backend="sglang")


def test_vllm_backend_says_when_vllm_is_missing(student, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails as if it were not installed
    with pytest.raises(ImportError, match="pip install vllm"):
        evaluate("some/model", student[1], {"toy": make_arithmetic_dataset(1)}, k=1, backend="vllm")


@pytest.mark.vllm
def test_vllm_backend_samples_every_benchmark_with_one_engine(vllm_toy_paths, monkeypatch):
    """`backend="vllm"` against vLLM itself (its CPU build): k completions per problem come from one engine, built
    once for all the benchmarks of the call (not once per benchmark), and are graded."""
    import vllm

    engines = []

    class CountedLLM(vllm.LLM):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, max_model_len=512, **kwargs)
            engines.append(self)

    monkeypatch.setattr(vllm, "LLM", CountedLLM)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the CPU build would otherwise reserve a share of RAM
    path = vllm_toy_paths["student"]
    benchmarks = {"a": make_arithmetic_dataset(3, seed=0), "b": make_arithmetic_dataset(2, seed=1)}
    try:
        result = evaluate(
            path,
            AutoTokenizer.from_pretrained(path),
            benchmarks,
            k=2,
            max_new_tokens=8,
            progress=False,
            backend="vllm",
        )
    finally:
        for engine in engines:
            engine.llm_engine.engine_core.shutdown()
    assert len(engines) == 1
    assert {name: r.num_problems + r.num_excluded for name, r in result.benchmarks.items()} == {"a": 3, "b": 2}
    assert result.settings["backend"] == "vllm" and result.settings["model"] == path


def test_load_benchmarks_rejects_unknown_names_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="Unknown benchmark"):
        load_benchmarks("aime24,aime2030", tmp_path)
    with pytest.raises(FileNotFoundError, match="aime24.jsonl"):
        load_benchmarks("aime24", tmp_path)


# ------------------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path):
    """The real benchmark files when present, else generated arithmetic files with the same layout."""
    if MATH_EVAL_DIR.is_dir():
        return MATH_EVAL_DIR
    folder = tmp_path / "math_eval"
    folder.mkdir()
    for name in ("aime24", "math500"):
        rows = make_arithmetic_dataset(3, seed=len(name), instruction=None)
        with open(folder / f"{name}.jsonl", "w") as handle:
            for i, row in enumerate(rows):
                problem = {"id": str(i), "problem": row["prompt"][0]["content"], "answer": row["solution"]}
                handle.write(json.dumps(problem) + "\n")
    return folder


def test_cli_eval_on_the_tiny_model(student_path, data_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--model", student_path, "--benchmarks", "aime24,math500", "--data-dir", str(data_dir)]
    argv += ["--limit", "2", "-k", "2", "--max-new-tokens", "8", "--batch-size", "4", "--output-dir", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Avg@2" in printed and "Pass@2" in printed and "aime24" in printed
    data = json.loads((out / "eval_results.json").read_text())
    assert [data["benchmarks"][b]["num_problems"] for b in ("aime24", "math500")] == [2, 2]
    assert data["settings"]["k"] == 2 and data["settings"]["max_new_tokens"] == 8
    assert "| math500 |" in (out / "eval_results.md").read_text()


# ------------------------------------------------------------------------------------------------------------------
# Periodic evaluation during training
# ------------------------------------------------------------------------------------------------------------------


def test_callback_logs_eval_metrics_during_dgpo_training(student_path, toy_dataset, tmp_path):
    benchmarks = {"arith": make_arithmetic_dataset(2, seed=5)}
    callback = PeriodicEvaluationCallback(benchmarks, every_n_steps=1, k=2, max_new_tokens=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DGPOTrainer(
            model=student_path,
            reward_funcs=digit_fraction_reward,
            args=tiny_args(tmp_path, DGPOConfig, max_steps=2, steps_per_generation=2),
            train_dataset=toy_dataset,
        )
    trainer.add_callback(callback.attach(trainer))
    trainer.train()
    entries = [e for e in trainer.state.log_history if "eval/arith/avg@2" in e]
    assert [e["step"] for e in entries] == [1, 2]
    assert all(0.0 <= e["eval/arith/pass@2"] <= 1.0 for e in entries)
    # The regular training entries still carry TRL's metrics (the callback did not swallow them).
    assert sum("clip_ratio/region_mean" in e for e in trainer.state.log_history) == 2
    assert [step for step, _ in callback.results] == [1, 2]


def test_callback_needs_the_trainer_and_a_positive_period():
    with pytest.raises(ValueError, match="every_n_steps"):
        PeriodicEvaluationCallback({}, every_n_steps=0)
    with pytest.raises(ValueError, match="attach"):
        PeriodicEvaluationCallback({}, every_n_steps=1).on_train_begin(None, None, None)


def test_a_benchmark_without_hub_source_is_refused_before_any_download(monkeypatch):
    import scope_trl.data

    monkeypatch.setattr(scope_trl.data, "load_math_dataset", mock.Mock(side_effect=AssertionError("downloaded")))
    with pytest.raises(
        ValueError,
        match=r"olympiadbench have no Hub source: pass data_dir .*--data-dir FOLDER.*"
        r"NAME\.jsonl files \(one JSON object per line",
    ):
        load_benchmarks("aime24,olympiadbench")


def test_offline_without_data_dir_names_the_benchmark_and_the_option(monkeypatch):
    """Offline, `scope-trl eval` without `--data-dir` ended in datasets' raw ConnectionError."""
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        OSError,
        match=r"Could not load benchmark 'amc23' from the Hub dataset math-ai/amc23 "
        r"\(ConnectionError: .*\)\. Offline, pass data_dir .*--data-dir FOLDER",
    ):
        load_benchmarks("amc23")
