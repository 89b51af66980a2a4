"""Helpers shared by the trainer tests: tiny configs, parameter snapshots, hand-made batches, per-token gradients."""

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import torch
from transformers import AutoTokenizer


def console_script(name: str = "scope-trl") -> str:
    """The console script installed with the interpreter running the tests (a virtual environment's own `bin/`),
    else the one on the PATH."""
    beside = Path(sys.executable).parent / name
    executable = str(beside) if beside.exists() else shutil.which(name)
    assert executable, f"the `{name}` console script is missing: install the package with `pip install -e .`"
    return executable


def run_offline(relative_path: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """Run a script of the repository (`benchmarks/step_time.py`, ...) with this interpreter, Hub access off, and
    capture its output."""
    script = Path(__file__).resolve().parent.parent / relative_path
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def tiny_args(tmp_path, config_class, **overrides):
    """A CPU config for the tiny test bed: 4 prompts x 4 generations, 8-token completions, 4 steps per generation."""
    kwargs = {
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "max_completion_length": 8,
        "max_steps": 4,
        "logging_steps": 1,
        "save_strategy": "no",
        "learning_rate": 5e-2,
        "seed": 0,
        "steps_per_generation": 4,
    }
    kwargs.update(overrides)
    return config_class(**kwargs)


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before, model):
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())}


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if entry.get(key) is not None]


def make_trainer(
    trainer_class, config_class, student_path, dataset, tmp_path, reward_funcs, trainer_kwargs=None, **overrides
):
    """A trainer in train mode, ready for direct `_compute_loss` calls on hand-made batches."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = trainer_class(
            model=student_path,
            reward_funcs=reward_funcs,
            train_dataset=dataset,
            args=tiny_args(tmp_path, config_class, **overrides),
            **(trainer_kwargs or {}),
        )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps
    return trainer


def hand_batch(trainer, student_path, advantages, log_ratio_offsets, seed=0):
    """A generation batch whose old log-probs put each token at log r = offset from the current policy."""
    tokenizer = AutoTokenizer.from_pretrained(student_path)
    rows, length = log_ratio_offsets.shape
    prompt = tokenizer(["What is 1 + 2?"] * rows, return_tensors="pt")
    generator = torch.Generator().manual_seed(seed)
    completion_ids = torch.randint(5, len(tokenizer) - 10, (rows, length), generator=generator)
    completion_mask = torch.ones(rows, length, dtype=torch.long)
    completion_mask[0, -2:] = 0  # some padding, which must never contribute
    ids = torch.cat([prompt["input_ids"], completion_ids], 1)
    attention = torch.cat([prompt["attention_mask"], completion_mask], 1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, length)
    return {
        "prompt_ids": prompt["input_ids"],
        "prompt_mask": prompt["attention_mask"],
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": advantages,
        "old_per_token_logps": logps - log_ratio_offsets,
        "num_items_in_batch": completion_mask.sum().float(),
    }


def per_token_logps_grad(trainer, inputs):
    """Run the trainer's loss and return (loss, d loss / d per-token log pi_theta)."""
    captured = {}
    original = trainer._get_per_token_logps_and_entropies

    def capture(*args, **kwargs):
        logps, entropies, aux = original(*args, **kwargs)
        logps.retain_grad()
        captured["logps"] = logps
        return logps, entropies, aux

    trainer._get_per_token_logps_and_entropies = capture
    try:
        trainer.model.zero_grad()
        loss = trainer._compute_loss(trainer.model, inputs)
        loss.backward()
    finally:
        trainer._get_per_token_logps_and_entropies = original
    return loss.detach(), captured["logps"].grad


def build_trainer(trainer_class, model, dataset, tmp_path, reward_funcs=None, teacher=None, **overrides):
    """A DGPOTrainer or SCOPETrainer (with `teacher`) on the tiny config, construction warnings silenced."""
    from scope_trl import DGPOConfig, DGPOTrainer, SCOPEConfig, SCOPETrainer
    from scope_trl.apps.toy import contains_digit_reward

    assert trainer_class in (DGPOTrainer, SCOPETrainer), trainer_class
    config_class = SCOPEConfig if trainer_class is SCOPETrainer else DGPOConfig
    extra = {"teacher_model": teacher} if trainer_class is SCOPETrainer else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer_class(
            model=model,
            reward_funcs=reward_funcs or contains_digit_reward,
            args=tiny_args(tmp_path, config_class, **overrides),
            train_dataset=dataset,
            **extra,
        )
