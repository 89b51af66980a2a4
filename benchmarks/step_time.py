"""Step time and peak memory of DGPOTrainer and SCOPETrainer relative to TRL's GRPOTrainer, measured in one run.

Every trainer runs the same number of optimizer steps on the same generated task, with the same student (and, for
SCOPE, a teacher twice as wide), the same batch shape and the same seed. The first `--warmup` steps are excluded from
the timing. Printed ratios are trainer / GRPO; a ratio above 1 is slower (or larger).

    python benchmarks/step_time.py                       # CPU, small models (about a minute on 2 cores)
    python benchmarks/step_time.py --hidden 1024 --layers 8 --device cuda --bf16 --steps 20 --completion 256
    python benchmarks/step_time.py --hidden 1024 --layers 28 --vocab 151936 --device cuda --bf16   # Qwen3-0.6B-like

SCOPE does more work than GRPO by design (a teacher forward per generation batch, and a student forward when TRL
computes no old log-probs); DGPO's loss should cost the same as GRPO's.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import tempfile
import time
import warnings
from pathlib import Path

from transformers import TrainerCallback


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128, help="student hidden size (teacher: 2x)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument(
        "--vocab", type=int, default=None, help="embedding rows (default: the toy tokenizer's; 151936 is Qwen3's)"
    )
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="per-device train batch size")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--completion", type=int, default=32, help="max completion length")
    parser.add_argument("--steps-per-generation", type=int, default=4)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--trainers", default="grpo,dgpo,scope")
    return parser.parse_args()


class StepTimer(TrainerCallback):
    """Records the wall time of every optimizer step (generation, scoring, forward, backward, optimizer)."""

    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark (Linux: KiB)


def run(name: str, paths: dict, args, root: Path) -> dict:
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from scope_trl import DGPOConfig, DGPOTrainer, SCOPEConfig, SCOPETrainer
    from scope_trl.toy import contains_digit_reward, make_arithmetic_dataset

    config_class, trainer_class, extra = {
        "grpo": (GRPOConfig, GRPOTrainer, {}),
        "dgpo": (DGPOConfig, DGPOTrainer, {}),
        "scope": (SCOPEConfig, SCOPETrainer, {"teacher_model_name_or_path": paths["teacher"]}),
    }[name]
    config = config_class(
        output_dir=str(root / name),
        use_cpu=args.device == "cpu",
        bf16=args.bf16,
        report_to="none",
        disable_tqdm=True,
        per_device_train_batch_size=args.batch,
        num_generations=args.generations,
        max_completion_length=args.completion,
        steps_per_generation=args.steps_per_generation,
        max_steps=args.steps,
        logging_steps=args.steps,
        save_strategy="no",
        learning_rate=1e-5,
        seed=0,
        gradient_checkpointing=False,
        **extra,
    )
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    timer = StepTimer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = trainer_class(
            model=paths["student"],
            reward_funcs=contains_digit_reward,
            args=config,
            train_dataset=make_arithmetic_dataset(args.batch * args.steps, seed=0, conversational=False),
            callbacks=[timer],
        )
        trainer.train()
    measured = timer.times[args.warmup :]
    result = {"step_s": sum(measured) / len(measured), "peak_mb": peak_memory_mb(args.device)}
    del trainer
    gc.collect()
    return result


def main():
    args = parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from scope_trl.toy import build_tokenizer, save_tiny_model

    root = Path(tempfile.mkdtemp(prefix="scope-trl-bench-"))
    tokenizer = build_tokenizer()
    heads = max(4, args.hidden // 64)
    paths = {
        "student": save_tiny_model(root / "student", tokenizer, hidden_size=args.hidden, num_hidden_layers=args.layers,
                                   num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                                   vocab_size=args.vocab),
        "teacher": save_tiny_model(root / "teacher", tokenizer, hidden_size=2 * args.hidden,
                                   num_hidden_layers=args.layers, num_attention_heads=heads,
                                   num_key_value_heads=max(1, heads // 2), seed=1, vocab_size=args.vocab),
    }  # fmt: skip
    results = {name: run(name, paths, args, root) for name in args.trainers.split(",")}
    baseline = results.get("grpo")
    print(f"\n{'trainer':<8} {'step (s)':>10} {'vs GRPO':>8} {'peak MB':>10} {'vs GRPO':>8}")
    for name, r in results.items():
        time_ratio = r["step_s"] / baseline["step_s"] if baseline else float("nan")
        memory_ratio = r["peak_mb"] / baseline["peak_mb"] if baseline else float("nan")
        print(f"{name:<8} {r['step_s']:>10.4f} {time_ratio:>8.2f} {r['peak_mb']:>10.1f} {memory_ratio:>8.2f}")
    if args.device == "cpu":
        print("(CPU peak memory is the process high-water mark, so it can only grow from one trainer to the next.)")


if __name__ == "__main__":
    main()
