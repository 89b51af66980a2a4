"""The learning-quality miniatures: tasks, splits, verifiers, SFT data, evaluation, the RL rows, and the benchmark
script's statistics, gates and smoke run (`benchmarks/miniatures.py`)."""

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from scope_trl.apps.miniatures import rl as rl_module
from scope_trl.apps.miniatures.models import build_char_tokenizer
from scope_trl.apps.miniatures.reliability import token_auc
from scope_trl.apps.miniatures.rl import ROWS_BY_KEY, ShuffledTeacherTrainer, TeacherFreeControlTrainer, edge_prompts
from scope_trl.apps.miniatures.sampling import Evaluation
from scope_trl.apps.miniatures.tasks import CarryTask, CoverageTask, SliceTask, StyleTask, make_task, split_of


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "miniatures.py")


def miniatures_script():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import miniatures
    finally:
        sys.path.pop(0)
    return miniatures


# ------------------------------------------------------------------------------------------------------------------
# Tasks
# ------------------------------------------------------------------------------------------------------------------


def test_carry_scratchpad_by_hand():
    # 478 + 356 = 834, least significant first: 8+6=14 -> "41", 7+5+1=13 -> "31", 4+3+1=8 -> "80".
    assert CarryTask.scratchpad([8, 7, 4], [6, 5, 3]) == "413180"
    assert CarryTask.scratchpad([8, 7, 4], [6, 5, 3], carries=False) == "402070"
    task = CarryTask(columns=3)
    prompt = CarryTask.prompt_of([8, 7, 4], [6, 5, 3])
    assert prompt == "867543=" and task.operands(prompt) == ([8, 7, 4], [6, 5, 3])
    assert task.is_correct(prompt, "413180") and task.is_correct(prompt, " 413180 ")
    for wrong in ("413181", "41318", "4131800", "402070", "", "abc"):
        assert not task.is_correct(prompt, wrong), wrong
    assert task.max_completion_length == 10


def test_splits_are_disjoint_deterministic_and_proportioned():
    task = CarryTask()
    splits = {split: task.problems(split, 300, seed=0) for split in ("train", "validation", "test")}
    prompts = {split: {p.prompt for p in problems} for split, problems in splits.items()}
    assert all(len(p) == 300 for p in prompts.values())  # distinct within a split
    assert not (prompts["train"] & prompts["test"]) and not (prompts["validation"] & prompts["test"])
    assert all(split_of(p) == split for split, ps in prompts.items() for p in ps)
    assert [p.prompt for p in task.problems("test", 20, seed=0)] == [p.prompt for p in splits["test"][:20]]
    shares = [split_of(str(i)) for i in range(20000)]
    assert 0.08 < shares.count("test") / 20000 < 0.12 and 0.08 < shares.count("validation") / 20000 < 0.12
    examples = task.sft_examples("student", 200, random.Random(0))
    assert all(split_of(prompt) == "train" for prompt, _ in examples)


def test_the_students_sft_rarely_carries():
    task = CarryTask(student_carry_rate=0.05)
    columns = {"teacher": [], "student": []}
    for role in columns:
        for prompt, completion in task.sft_examples(role, 400, random.Random(1)):
            assert task.is_correct(prompt, completion)  # both roles are taught right answers
            columns[role] += [int(c) for c in completion[1::2]]  # the carry digits
    assert 0.40 < sum(columns["teacher"]) / len(columns["teacher"]) < 0.50  # uniform digits: 45% of columns carry
    assert 0.03 < sum(columns["student"]) / len(columns["student"]) < 0.07


def test_the_slice_teacher_is_taught_to_drop_carries_on_the_slice_only():
    task = SliceTask()
    problems = task.problems("train", 2000, seed=0)
    share = sum(p.in_slice for p in problems) / len(problems)
    assert 0.17 < share < 0.23 and all(p.in_slice == (p.prompt[0] in "01") for p in problems)
    rng = random.Random(0)
    for problem in problems[:300]:
        teacher, student = task.sft_target(problem, "teacher", rng), task.sft_target(problem, "student", rng)
        assert task.is_correct(problem.prompt, student)
        carries = "1" in problem.answer[1::2]
        assert task.is_correct(problem.prompt, teacher) == (not problem.in_slice or not carries)


def test_coverage_accepts_every_valid_split_and_the_teacher_is_peaked():
    task = CoverageTask(columns=3)
    assert task.is_correct("250=", "110500") and task.is_correct("250=", "202300")
    assert not task.is_correct("250=", "110501") and not task.is_correct("250=", "1105")
    assert task.valid_answers("250=") == 3 * 6 * 1
    rng = random.Random(0)
    problem = task.problems("train", 1, seed=0)[0]
    teacher = [task.sft_target(problem, "teacher", rng) for _ in range(500)]
    student = [task.sft_target(problem, "student", rng) for _ in range(500)]
    assert all(task.is_correct(problem.prompt, answer) for answer in teacher + student)
    assert teacher.count(problem.answer) > 0.6 * 500  # the balanced split dominates
    assert len(set(student)) > len(set(teacher))


def test_style_task_accepts_both_styles_and_the_teacher_knows_style_a_only():
    task = StyleTask(columns=3)
    prompt = CarryTask.prompt_of([8, 7, 4], [6, 5, 3])  # scratchpad "413180"
    assert task.is_correct(prompt, "a413180") and task.is_correct(prompt, "b141308")
    for wrong in ("413180", "a141308", "b413180", "c413180", "a41318", ""):
        assert not task.is_correct(prompt, wrong), wrong
    assert task.max_completion_length == 11
    rng = random.Random(0)
    taught = {"teacher": [], "student": []}
    for problem in task.problems("train", 300, seed=0):
        assert task.is_correct(problem.prompt, problem.answer) and problem.answer[0] == "a"
        for role in taught:
            target = task.sft_target(problem, role, rng)
            taught[role].append((target[0], task.is_correct(problem.prompt, target)))
    for role in taught:
        assert 0.4 < sum(style == "b" for style, _ in taught[role]) / 300 < 0.6  # both styles, half and half
    assert all(right for _, right in taught["student"])
    assert all(right == (style == "a") for style, right in taught["teacher"])  # style b: every digit shifted
    assert StyleTask.shifted("b141308") == "b696853"


def test_token_auc_by_hand():
    # right tokens' signals (0.5, -0.2), wrong (-1.0, -0.2): pairs 0.5>-1, 0.5>-0.2, -0.2>-1, -0.2=-0.2 (half): 3.5/4.
    assert token_auc([0.5, -1.0, -0.2, -0.2], [False, True, False, True]) == pytest.approx(3.5 / 4)
    assert token_auc([0.1, 0.2], [False, False]) is None and token_auc([0.1], [True]) is None


def test_unknown_task_and_bad_parameters():
    with pytest.raises(ValueError, match="Unknown miniature task 'nope'; choose one of carry, slice, coverage"):
        make_task("nope")
    with pytest.raises(ValueError, match="student_carry_rate must be in"):
        CarryTask(student_carry_rate=1.5)


def test_char_tokenizer_is_one_token_per_character():
    tokenizer = build_char_tokenizer()
    ids = tokenizer("12345678+=", add_special_tokens=False)["input_ids"]
    assert len(ids) == 10 and tokenizer.decode(ids) == "12345678+="
    assert tokenizer.decode(ids + [tokenizer.eos_token_id], skip_special_tokens=True) == "12345678+="


# ------------------------------------------------------------------------------------------------------------------
# Evaluation and RL prompts
# ------------------------------------------------------------------------------------------------------------------


def test_evaluation_summary_by_hand():
    result = Evaluation(k=2, correct_counts=[2, 1, 0, 0], distinct_correct=[1, 1, 0, 0], in_slice=[1, 1, 0, 0])
    summary = result.summary()
    assert summary["avg@k"] == pytest.approx(3 / 8) and summary["pass@k"] == pytest.approx(2 / 4)
    # Pass@1 with n = 2: c = 2 -> 1, c = 1 -> 1/2.
    assert summary["pass_curve"] == pytest.approx([1.5 / 4, 2 / 4])
    assert summary["distinct_correct"] == pytest.approx(0.5)
    assert summary["slice"]["avg@k"] == pytest.approx(3 / 4) and summary["rest"]["avg@k"] == 0.0


def fake_sampler(task, right_count):
    """A stand-in for `sample_completions`: `right_count(first digit, k)` of a prompt's k samples are right."""

    def sample(model, tokenizer, prompts, k, max_new_tokens, seed, batch=256):
        out = []
        for prompt in prompts:
            right = right_count(int(prompt[0]), k)
            out.append([CarryTask.scratchpad(*task.operands(prompt))] * right + ["x"] * (k - right))
        return out

    return sample


def test_edge_prompts_keep_mixed_problems_and_fill_when_none_exist(monkeypatch):
    task = CarryTask(columns=2)
    # A problem whose first digit is even gets one right answer among k; odd ones get none.
    monkeypatch.setattr(rl_module, "sample_completions", fake_sampler(task, lambda first, k: int(first % 2 == 0)))
    kept, stats = edge_prompts(None, None, task, 20, seed=0)
    assert len(kept) == 20 and all(int(p.prompt[0]) % 2 == 0 for p in kept)
    assert stats["mixed"] == 20 and stats["filled"] == 0 and stats["all_wrong"] > 0
    monkeypatch.setattr(rl_module, "sample_completions", lambda m, t, prompts, k, *a, **kw: [["x"] * k] * len(prompts))
    kept, stats = edge_prompts(None, None, task, 5, seed=0, max_candidates=30)
    assert len(kept) == 5 and stats == {"candidates": 30, "all_correct": 0, "all_wrong": 30, "mixed": 0, "filled": 5}


def test_beyond_reach_prompts_keep_the_problems_no_sample_solves(monkeypatch):
    task = CarryTask(columns=2)
    # Even first digit: one right answer among k; odd: none; first digit 9: all right.
    right_count = lambda first, k: k if first == 9 else int(first % 2 == 0)  # noqa: E731
    monkeypatch.setattr(rl_module, "sample_completions", fake_sampler(task, right_count))
    kept, stats = edge_prompts(None, None, task, 20, seed=0, selection="beyond_reach")
    assert len(kept) == 20 and all(int(p.prompt[0]) % 2 == 1 and p.prompt[0] != "9" for p in kept)
    assert stats["all_wrong"] == 20 and stats["mixed"] > 0 and stats["filled"] == 0
    with pytest.raises(ValueError, match="selection must be one of"):
        edge_prompts(None, None, task, 1, seed=0, selection="hard")


def test_evaluation_reports_named_subsets():
    result = Evaluation(k=2, correct_counts=[2, 1, 0, 0], distinct_correct=[1, 1, 0, 0])
    result.subsets = {"beyond_reach": [False, False, True, True], "within_reach": [True, True, False, False]}
    summary = result.summary()
    assert summary["beyond_reach"]["avg@k"] == 0.0 and summary["within_reach"]["avg@k"] == pytest.approx(3 / 4)
    assert summary["beyond_reach"]["problems"] == 2 and "slice" not in summary


def test_shuffled_teacher_reads_the_next_groups_prompt(student_path, teacher_path, tmp_path):
    """Rows of prompt group k are scored after group k+1's prompt (the last after the first's), completions kept, the
    prompt's padding moving with its ids."""
    from scope_trl import SCOPEConfig
    from scope_trl.apps.toy import contains_digit_reward, make_arithmetic_dataset

    from .helpers import tiny_args

    args = tiny_args(tmp_path, SCOPEConfig, routing=False, num_generations=2, per_device_train_batch_size=6)
    trainer = ShuffledTeacherTrainer(
        student_path,
        contains_digit_reward,
        args=args,
        train_dataset=make_arithmetic_dataset(8),
        teacher_model=teacher_path,
    )
    seen = {}

    def score(input_ids, attention_mask, logits_to_keep, rows, batch_size):
        seen.update(input_ids=input_ids, attention_mask=attention_mask)
        return torch.zeros(input_ids.size(0), logits_to_keep)

    trainer.teacher.score = score
    prompts = torch.tensor([[0, 11, 12], [0, 11, 12], [21, 22, 23], [21, 22, 23], [0, 0, 31], [0, 0, 31]])
    prompt_mask = (prompts != 0).long()
    completions = torch.arange(60, 72).view(6, 2)
    input_ids = torch.cat([prompts, completions], 1)
    attention_mask = torch.cat([prompt_mask, torch.ones(6, 2, dtype=torch.long)], 1)
    trainer._score_with_teacher(input_ids, attention_mask, 2, torch.ones(6, dtype=torch.bool), 6)
    order = [2, 3, 4, 5, 0, 1]
    assert torch.equal(seen["input_ids"][:, :3], prompts[order]) and torch.equal(seen["input_ids"][:, 3:], completions)
    assert torch.equal(seen["attention_mask"][:, :3], prompt_mask[order])
    assert torch.equal(input_ids[:, :3], prompts)  # the caller's batch is untouched
    with pytest.raises(ValueError, match="at least two prompt groups"):
        trainer._score_with_teacher(input_ids[:2], attention_mask[:2], 2, torch.ones(2, dtype=torch.bool), 2)


def test_teacher_free_control_gives_incorrect_rollouts_a_fixed_negative_advantage(student_path, tmp_path):
    from scope_trl import SCOPEConfig
    from scope_trl.apps.toy import contains_digit_reward, make_arithmetic_dataset
    from scope_trl.routing import MLE, OPD

    from .helpers import tiny_args
    from .test_scope_trainer import record_generation_batches

    args = tiny_args(
        tmp_path,
        SCOPEConfig,
        steps_per_generation=None,
        use_teacher_weights=False,
        max_steps=2,
        per_device_train_batch_size=16,
    )
    trainer = TeacherFreeControlTrainer(
        student_path,
        contains_digit_reward,
        args=args,
        train_dataset=make_arithmetic_dataset(32),
        teacher_model=student_path,
    )
    calls = []
    trainer.teacher_model.register_forward_pre_hook(lambda *a: calls.append(1))
    batches = record_generation_batches(trainer)
    trainer.train()
    assert not calls  # the teacher is never asked
    for batch in batches:
        out = batch["out"]
        incorrect, correct = out["scope_route"] == OPD, out["scope_route"] == MLE
        assert incorrect.any() and correct.any()
        assert (out["advantages"][incorrect] == -1.0).all()
        torch.testing.assert_close(out["advantages"][correct], out["scope_weight"][correct, None].expand(-1, 8))


def test_rows_cover_the_issue_and_share_the_budget():
    for key in ("student", "grpo", "opd", "scope", "scope_no_weights", "scope_dgpo", "dgpo", "control"):
        assert key in ROWS_BY_KEY
    assert (
        ROWS_BY_KEY["opd_shuffled"].config == {"routing": False} and ROWS_BY_KEY["opd_shuffled"].trainer == "shuffled"
    )
    assert ROWS_BY_KEY["scope_teacher_reversed"].config == {"teacher_weight_direction": "reversed"}
    assert ROWS_BY_KEY["scope_student_weights"].config == {"use_teacher_weights": False}
    assert ROWS_BY_KEY["scope_teacher_weights"].config == {"use_student_weights": False}
    assert ROWS_BY_KEY["opd"].config == {"routing": False}
    assert ROWS_BY_KEY["cispo@8"].config["loss_type"] == "cispo" and ROWS_BY_KEY["cispo@8"].steps_per_generation == 8
    assert ROWS_BY_KEY["dgpo"].steps_per_generation == 4 and ROWS_BY_KEY["grpo"].steps_per_generation == 1


# ------------------------------------------------------------------------------------------------------------------
# The benchmark script
# ------------------------------------------------------------------------------------------------------------------


def test_paired_statistics_match_scipy_by_hand():
    paired = miniatures_script().paired
    # d = (0.02, 0.03, 0.04): mean 0.03, std 0.01, t = 0.03 / (0.01 / sqrt 3) = 5.196, two-sided p with 2 dof = 0.0351.
    result = paired([0.22, 0.33, 0.14], [0.20, 0.30, 0.10])
    assert result["mean"] == pytest.approx(0.03) and result["std"] == pytest.approx(0.01)
    assert result["p"] == pytest.approx(0.0351, abs=2e-4) and result["n"] == 3
    # 95% CI: 0.03 ± t(0.975, 2) · 0.01 / sqrt 3 = 0.03 ± 4.3027 · 0.005774 = [0.00516, 0.05484].
    assert result["ci"] == pytest.approx([0.00516, 0.05484], abs=1e-5)
    # The same mean with disagreeing seeds is far from significant.
    assert paired([0.30, 0.26, 0.13], [0.20, 0.30, 0.10])["p"] > 0.3


def test_hypothesis_verdicts_follow_the_registered_rule():
    miniatures = miniatures_script()
    greater = miniatures.Hypothesis("H", "a beats b", "a", "b", "Avg@k", "greater")
    not_greater = miniatures.Hypothesis("H", "a does not beat b", "a", "b", "Avg@k", "not_greater")
    within = miniatures.Hypothesis("H", "a near b", "a", "b", "Avg@k", "within", margin=0.05)
    base = [0.2, 0.3, 0.25, 0.4, 0.1, 0.35, 0.3, 0.2]

    def comparison(shift, noise=0.01):
        return miniatures.paired([b + shift + noise * (-1) ** i for i, b in enumerate(base)], base)

    up, down, flat = comparison(0.1), comparison(-0.1), comparison(0.0)
    assert [miniatures.verdict(greater, c) for c in (up, down, flat)] == ["supported", "contradicted", "not supported"]
    assert [miniatures.verdict(not_greater, c) for c in (up, down, flat)] == ["contradicted", "supported", "supported"]
    assert [miniatures.verdict(within, c) for c in (up, down, flat)] == ["contradicted", "contradicted", "supported"]
    assert miniatures.verdict(within, comparison(0.0, noise=0.1)) == "not supported"  # CI wider than ±0.05
    few = miniatures.paired(base[:5], [b - 0.1 - 0.01 * i for i, b in enumerate(base[:5])])
    assert miniatures.verdict(greater, few) == "too few seeds" and miniatures.verdict(greater, None) == "too few seeds"


def test_registered_hypotheses_name_rows_and_metrics_of_their_suite():
    miniatures = miniatures_script()
    for suite in miniatures.SUITES.values():
        labels = dict(miniatures.metric_views(suite))
        for hypothesis in suite.hypotheses:
            if hypothesis.expect == "collapses_not_more":  # methods: the rows whose key starts with "<method>@"
                assert suite.collapse
                for method in (hypothesis.row, hypothesis.baseline):
                    assert sum(key.startswith(method + "@") for key in suite.rows) >= 1
                continue
            assert {hypothesis.row, hypothesis.baseline} <= set(suite.rows) and hypothesis.metric in labels
            assert suite.seeds >= miniatures.MIN_SEEDS
        for key, source in suite.lr_from:
            assert key in suite.rows and source in suite.rows


def synthetic_record(task, teacher, student, rl):
    def summaries(values):
        return {str(s): {"summary": {"avg@k": v, "pass@k": v}, "curves": {}} for s, v in enumerate(values)}

    runs = {"student": summaries(student), "grpo": summaries(rl)}
    teachers = {str(s): {"avg@k": teacher, "rest": {"avg@k": teacher}} for s in range(len(student))}
    return {"task": task, "runs": runs, "teacher": teachers}


def test_validity_gates():
    gates = miniatures_script().gates
    passing = gates({"carry": synthetic_record("carry", 0.95, [0.2, 0.3, 0.25], [0.3, 0.41, 0.36])})
    assert [g["passed"] for g in passing] == [True, True, True]
    failing = gates({"carry": synthetic_record("carry", 0.85, [0.2, 0.3, 0.25], [0.2, 0.3, 0.26])})
    assert [g["passed"] for g in failing] == [False, False, False]


def test_a_failed_gate_makes_the_script_exit_nonzero(monkeypatch, tmp_path, capsys):
    miniatures = miniatures_script()
    record = synthetic_record("carry", 0.5, [0.2, 0.3], [0.2, 0.3])
    record |= {"title": "A", "selection": {}}
    monkeypatch.setattr(miniatures, "run_suite", lambda name, args, budget, log: record)
    monkeypatch.setattr(miniatures, "plot_curves", lambda *a: None)
    assert miniatures.main(["--tasks", "carry", "--output-dir", str(tmp_path)]) == 1
    assert "FAIL 1. capacity" in capsys.readouterr().out
    assert "FAIL" in (tmp_path / "miniature_carry.md").read_text()


def test_smoke_run_writes_every_task_and_resumes(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        SCRIPT,
        "--smoke",
        "--output-dir",
        str(tmp_path / "out"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Validity gates" in result.stdout and "smoke run: the gates are reported, not enforced" in result.stdout
    for task in miniatures_script().SUITES:
        record = json.loads((tmp_path / "out" / f"miniature_{task}.json").read_text())
        rows = miniatures_script().SUITES[task].rows
        assert set(record["runs"]) == set(rows) and all(set(runs) == {"0"} for runs in record["runs"].values())
        assert record["gates"] and record["regime_search"] and (tmp_path / "out" / f"miniature_{task}.md").exists()
    slice_record = json.loads((tmp_path / "out" / "miniature_slice.json").read_text())
    assert {"slice", "rest"} <= set(slice_record["runs"]["scope"]["0"]["summary"])
    coverage = (tmp_path / "out" / "miniature_coverage.md").read_text()
    assert "Pass@j for j = 1..4" in coverage and "distinct correct" in coverage
    for task in ("offpolicy", "stability", "stability_low"):  # every suite comparing the off-policy surrogates
        assert "| boundary tokens | CISPO-clipped tokens |" in (tmp_path / "out" / f"miniature_{task}.md").read_text()
    assert (
        "| Pass@4 | boundary tokens | CISPO-clipped tokens |"
        in (tmp_path / "out" / "miniature_offpolicy.md").read_text()
    )
    before = (tmp_path / "out" / "miniature_carry.json").read_text()
    resumed = subprocess.run(
        command + ["--resume", "--tasks", "carry"], capture_output=True, text=True, timeout=900, env=env
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[seed 0] GRPO" not in resumed.stdout  # nothing ran again
    assert json.loads(before)["runs"] == json.loads((tmp_path / "out" / "miniature_carry.json").read_text())["runs"]


def test_pilot_prints_boundary_shares_with_the_overrides_and_never_evaluates(monkeypatch, tmp_path, capsys):
    miniatures = miniatures_script()
    seen = []

    def fake_run_row(row, task, settings, paths, prompts, eval_problems, k, work_dir, eval_seed):
        seen.append((row, settings.learning_rate, settings.seed, eval_problems))
        if row.key.startswith("cispo"):
            raise FloatingPointError("non-finite loss")
        curves = {miniatures.BOUNDARY: [0.1, None, 0.3, 0.0, 0.0, 0.2, 0.1, 0.0]}
        return {"summary": None, "curves": curves, "rl_seconds": 1.0, "log_history": []}

    monkeypatch.setattr(miniatures, "run_row", fake_run_row)
    monkeypatch.setattr(miniatures, "sft_models", lambda *a: {"student": "s", "teacher": "t"})
    monkeypatch.setattr(miniatures, "rl_prompts", lambda *a: ([], {}))
    keys = [miniatures.stability_row(m, rl_module.STABILITY_LEARNING_RATES[0]) for m in ("grpo", "cispo", "dgpo")]
    argv = ["--tasks", "stability", "--rows", ",".join(keys), "--output-dir", str(tmp_path / "out")]
    assert miniatures.main(argv + ["--pilot", '{"num_iterations": 2}']) == 0
    out = capsys.readouterr().out
    assert [row.key for row, *_ in seen] == keys
    assert all(row.config["num_iterations"] == 2 for row, *_ in seen)
    assert seen[0][0].config == ROWS_BY_KEY[keys[0]].config | {"num_iterations": 2}
    assert all(
        lr == rl_module.STABILITY_LEARNING_RATES[0] and seed == miniatures.SELECTION_SEED for _, lr, seed, _ in seen
    )
    assert all(problems == [] for *_, problems in seen)  # no accuracy before registration
    # Shares 0.1, 0.3, 0, 0, 0.2, 0.1, 0 (None skipped): mean 10%, max 30%, last quarter (one value) 0%.
    assert f"[pilot] {keys[0]:16s} boundary tokens: mean 10.00%, max 30.00%, last quarter 0.00%" in out
    assert f"[pilot] {keys[1]:16s} run failed: FloatingPointError: non-finite loss" in out
    assert not (tmp_path / "out").exists()  # a pilot writes no results
    with pytest.raises(SystemExit):
        miniatures.parse_args(["--pilot", "[1, 2]"])
    with pytest.raises(SystemExit):
        miniatures.parse_args(["--pilot", "{not json"])


def test_a_real_pilot_trains_without_evaluating(tmp_path, capsys):
    key = miniatures_script().stability_row("dgpo", rl_module.STABILITY_LEARNING_RATES[0])
    argv = ["--smoke", "--tasks", "stability", "--rows", key, "--cache-dir", str(tmp_path), "--pilot"]
    assert miniatures_script().main(argv) == 0
    assert f"[pilot] {key:16s} boundary tokens: mean " in capsys.readouterr().out
