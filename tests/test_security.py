"""Security: models load without remote code and from safetensors only; grading is bounded in time and
memory (the adversarial completions themselves are in tests/test_rewards.py); the trainers, scripts and evaluator
write nothing outside the output directories the user names."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from scope_trl import DGPOTrainer, SCOPETrainer

from .helpers import build_trainer, console_script


build = build_trainer


def pickled_copy(model_path: str, destination: Path) -> str:
    """The checkpoint with its weights as a pickle (`pytorch_model.bin`) instead of safetensors."""
    shutil.copytree(model_path, destination)
    state = AutoModelForCausalLM.from_pretrained(model_path).state_dict()
    for weights in destination.glob("*.safetensors"):
        weights.unlink()
    torch.save(state, destination / "pytorch_model.bin")
    return str(destination)


def test_models_load_from_safetensors_without_remote_code(
    student_path, teacher_path, toy_dataset, tmp_path, monkeypatch
):
    import trl.trainer.grpo_trainer

    import scope_trl.teacher

    calls = []
    for module in (trl.trainer.grpo_trainer, scope_trl.teacher):
        original = module.create_model_from_path

        def spy(model_id, *args, _original=original, **kwargs):
            calls.append((model_id, kwargs))
            return _original(model_id, *args, **kwargs)

        monkeypatch.setattr(module, "create_model_from_path", spy)
    build(SCOPETrainer, student_path, toy_dataset, tmp_path, teacher=teacher_path)
    assert [model_id for model_id, _ in calls] == [student_path, teacher_path]
    for _, kwargs in calls:
        assert kwargs["use_safetensors"] is True and kwargs["trust_remote_code"] is False


def test_pickled_checkpoints_are_refused_with_the_fix(student_path, teacher_path, toy_dataset, tmp_path):
    student = pickled_copy(student_path, tmp_path / "student-pickled")
    teacher = pickled_copy(teacher_path, tmp_path / "teacher-pickled")
    with pytest.raises(
        OSError,
        match=r"Could not load the student .*student-pickled' \(model\): it holds pickled "
        r"weights only.*model_init_kwargs=\{'use_safetensors': False\}",
    ):
        build(DGPOTrainer, student, toy_dataset, tmp_path)
    with pytest.raises(
        OSError,
        match=r"Could not load the teacher .*teacher-pickled' .*pickled weights only.*"
        r"teacher_model_init_kwargs=\{'use_safetensors': False\}",
    ):
        build(SCOPETrainer, student_path, toy_dataset, tmp_path, teacher=teacher)
    # A user who trusts the checkpoint opts in explicitly.
    trainer = build(
        SCOPETrainer,
        student,
        toy_dataset,
        tmp_path,
        teacher=teacher,
        model_init_kwargs={"use_safetensors": False},
        teacher_model_init_kwargs={"use_safetensors": False},
    )
    assert trainer.teacher_model is not None


def test_the_evaluator_refuses_pickled_and_missing_models(student_path, tmp_path):
    from scope_trl.cli import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "amc23.jsonl").write_text(json.dumps({"id": "0", "problem": "1 + 1?", "answer": "2"}) + "\n")
    common = ["--benchmarks", "amc23", "--data-dir", str(data), "-k", "1", "--output-dir", str(tmp_path / "eval")]
    with pytest.raises(
        OSError,
        match=r"Could not load the model .*pickled' \(--model\): it holds pickled weights.*"
        r"save_pretrained` it again\. \(OSError",
    ):
        main(["--debug", "eval", "--model", pickled_copy(student_path, tmp_path / "pickled"), *common])
    with pytest.raises(FileNotFoundError, match=r"The model '.*nowhere' \(--model\) does not exist"):
        main(["eval", "--debug", "--model", str(tmp_path / "nowhere"), *common])


def test_grading_workers_cap_their_address_space():
    """A worker that tries to allocate gigabytes fails with MemoryError (a wrong answer) instead of swapping."""
    from scope_trl.rewards import WORKER_MEMORY_BYTES, GraderPool

    pool = GraderPool(num_workers=1, timeout_seconds=5)
    try:
        assert [verdict.reward for verdict in pool.grade([("2", "2")])] == [1.0]
        (worker,) = pool._workers
        limits = Path(f"/proc/{worker.process.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max address space"))
        assert int(line.split()[3]) == WORKER_MEMORY_BYTES, line
    finally:
        pool.close()


@pytest.mark.distributed
def test_nothing_is_written_outside_the_named_output_directories(toy_paths, tmp_path):
    """SCOPE training with checkpoints (`scope-trl scope`) and evaluation (`scope-trl eval`), each in a fresh process
    started in an empty working directory with its own HOME and TMPDIR: every file they leave is under the output
    directories named on their command lines, or under HF_HOME (the datasets cache of the local JSONL file)."""
    from scope_trl.apps.toy import make_arithmetic_problems

    from .test_scripts import training_args

    sandbox = tmp_path / "sandbox"
    for name in ("cwd", "home", "tmp", "hf", "data"):
        (sandbox / name).mkdir(parents=True)
    dataset = sandbox / "data" / "amc23.jsonl"
    with dataset.open("w") as f:
        for index, problem in enumerate(make_arithmetic_problems(8, seed=0)):
            f.write(json.dumps({"id": str(index), "problem": problem.question, "answer": problem.answer}) + "\n")
    before = set(sandbox.rglob("*"))
    env = {
        **os.environ,
        "HOME": str(sandbox / "home"),
        "TMPDIR": str(sandbox / "tmp"),
        "HF_HOME": str(sandbox / "hf"),
        "HF_HUB_OFFLINE": "1",
        "DS_ACCELERATOR": "cpu",
        "MPLCONFIGDIR": str(sandbox / "hf" / "matplotlib"),
    }
    env.pop("HF_DATASETS_CACHE", None)
    train_dir = sandbox / "out" / "train"
    train = [console_script(), "scope", *training_args("scope", toy_paths, str(dataset), train_dir)]
    train = [arg if arg != "no" else "steps" for arg in train] + ["--save_steps", "1"]  # --save_strategy steps
    evaluate = [
        console_script(),
        "eval",
        "--model",
        str(train_dir),
        "--benchmarks",
        "amc23",
        "--data-dir",
        str(sandbox / "data"),
        "--limit",
        "2",
        "-k",
        "2",
        "--max-new-tokens",
        "4",
        "--output-dir",
        str(sandbox / "out" / "eval"),
    ]
    for command in (train, evaluate):
        result = subprocess.run(command, cwd=sandbox / "cwd", env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    assert (train_dir / "checkpoint-1").is_dir() and (train_dir / "scope_teacher.json").is_file()
    assert (sandbox / "out" / "eval" / "eval_results.json").is_file()
    allowed = (sandbox / "out", sandbox / "hf")
    stray = sorted(
        str(path.relative_to(sandbox))
        for path in set(sandbox.rglob("*")) - before
        if path.is_file() and not any(path.is_relative_to(root) for root in allowed)
    )
    assert stray == [], stray
