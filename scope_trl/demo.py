"""The embedded-default job: a short, offline DGPO run of the tiny student on the built-in arithmetic task.

`scope-trl demo` builds the test bed (a tiny tokenizer and a ~20k-parameter Qwen3 student), trains it with DGPO for a
few dozen optimizer steps on CPU, with several optimizer steps per generation batch so that the soft clip acts, and
prints the metrics of every step. It needs no network and finishes in about a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

from transformers import TrainerCallback


def disable_progress_bars() -> None:
    """Silence per-file progress bars (weights loading, shard writing) that would drown the metrics table."""
    from huggingface_hub.utils import disable_progress_bars as disable_hub_bars
    from transformers.utils import logging as transformers_logging

    disable_hub_bars()
    transformers_logging.disable_progress_bar()


# (header, metric key, format): one column of the per-step table.
COLUMNS = [
    ("step", "step", "d"),
    ("reward", "reward", ".3f"),
    ("correct", "rewards/boxed_answer_reward/mean", ".3f"),
    ("digits", "rewards/digit_fraction_reward/mean", ".3f"),
    ("clip_low", "clip_ratio/low_mean", ".4f"),
    ("clip_high", "clip_ratio/high_mean", ".4f"),
    ("w_low", "dgpo/low_weight_mean", ".3f"),
    ("w_high", "dgpo/high_weight_mean", ".3f"),
    ("policy_loss", "policy_loss", ".4f"),
    ("entropy", "entropy", ".3f"),
]
COLUMN_WIDTH = 11


class MetricsPrinter(TrainerCallback):
    """Prints one aligned line of the main DGPO metrics per logged step ("-" where a region was empty)."""

    def __init__(self, print_fn=print):
        self.print = print_fn
        self.header_printed = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "reward" not in logs:
            return
        if not self.header_printed:
            self.print(" ".join(header.rjust(COLUMN_WIDTH) for header, _, _ in COLUMNS))
            self.header_printed = True
        values = {**logs, "step": state.global_step}
        cells = []
        for _, key, spec in COLUMNS:
            value = values.get(key)
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            cells.append(("-" if missing else format(value, spec)).rjust(COLUMN_WIDTH))
        self.print(" ".join(cells))


def run_demo(
    output_dir: str | os.PathLike | None = None,
    max_steps: int = 64,
    steps_per_generation: int = 4,
    num_generations: int = 8,
    learning_rate: float = 3e-2,
    seed: int = 0,
    print_fn=print,
) -> dict:
    """Train the tiny student with DGPO on the arithmetic task and return a summary (also written as JSON)."""
    from . import DGPOConfig, DGPOTrainer
    from .toy import boxed_answer_reward, build_toy_testbed, digit_fraction_reward, make_arithmetic_dataset

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    disable_progress_bars()
    output_dir = Path(output_dir or tempfile.mkdtemp(prefix="scope-trl-demo-"))
    start = time.time()
    print_fn(f"scope-trl demo: DGPO on the built-in arithmetic task, offline, on CPU -> {output_dir}")
    paths = build_toy_testbed(output_dir / "testbed")
    print_fn(f"built the tiny tokenizer and student model in {time.time() - start:.1f}s")

    warnings.filterwarnings("ignore", category=FutureWarning)  # TRL's own deprecation notices, not the user's
    args = DGPOConfig(
        output_dir=str(output_dir / "dgpo"),
        use_cpu=True,
        bf16=False,
        report_to="none",
        disable_tqdm=True,
        per_device_train_batch_size=num_generations,
        num_generations=num_generations,
        steps_per_generation=steps_per_generation,  # several optimizer steps per generation batch: r departs from 1
        max_completion_length=12,
        max_steps=max_steps,
        learning_rate=learning_rate,
        logging_steps=steps_per_generation,  # one line per generation batch, averaged over its optimizer steps
        save_strategy="no",
        seed=seed,
        reward_weights=[1.0, 1.0],
    )
    dataset = make_arithmetic_dataset(4 * max_steps, seed=seed, conversational=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DGPOTrainer(
            model=paths["student"],
            reward_funcs=[boxed_answer_reward, digit_fraction_reward],
            args=args,
            train_dataset=dataset,
            callbacks=[MetricsPrinter(print_fn)],
        )
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.train()

    history = [entry for entry in trainer.state.log_history if "reward" in entry]
    window = max(1, len(history) // 4)
    first = sum(e["reward"] for e in history[:window]) / window
    last = sum(e["reward"] for e in history[-window:]) / window
    summary = {
        "method": "dgpo",
        "steps": trainer.state.global_step,
        "reward_first_quarter": first,
        "reward_last_quarter": last,
        "max_clip_ratio_region": max(e.get("clip_ratio/region_mean", 0.0) for e in history),
        "seconds": time.time() - start,
        "log_history": trainer.state.log_history,
    }
    (output_dir / "demo_report.json").write_text(json.dumps(summary, indent=2))
    print_fn(
        f"mean reward: {first:.3f} over the first quarter of steps -> {last:.3f} over the last; largest share of "
        f"tokens outside the trust region: {summary['max_clip_ratio_region']:.3f}; {summary['seconds']:.0f}s in all."
    )
    print_fn(
        "'correct' is the exact-answer reward: a randomly initialised ~20k-parameter model cannot do arithmetic, so "
        "what it learns here is the dense 'digits' reward. `scope-trl demo --steps-per-generation 1` runs on-policy, "
        "where DGPO equals GRPO and no token leaves the trust region."
    )
    print_fn(f"report: {output_dir / 'demo_report.json'}")
    return summary
