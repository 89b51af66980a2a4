"""The `scope-trl` command line.

Sub-commands:

- `scope-trl demo`: the embedded-default job, a short offline DGPO run of a tiny model on a built-in task (CPU);
- `scope-trl env`: the versions of the packages scope-trl depends on, for bug reports.
"""

from __future__ import annotations

import argparse
import platform
import sys
from importlib.metadata import PackageNotFoundError, version


def _demo(args: argparse.Namespace) -> int:
    import os

    # The demo runs on CPU: tell DeepSpeed (imported by TRL when installed) so it does not probe for a GPU and warn.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from .demo import run_demo

    run_demo(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        steps_per_generation=args.steps_per_generation,
        num_generations=args.num_generations,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    return 0


def _env(args: argparse.Namespace) -> int:
    print(f"- Platform: {platform.platform()}")
    print(f"- Python version: {platform.python_version()}")
    for package in (
        "scope-trl",
        "trl",
        "transformers",
        "torch",
        "accelerate",
        "peft",
        "datasets",
        "deepspeed",
        "vllm",
        "math-verify",
    ):
        try:
            print(f"- {package} version: {version(package)}")
        except PackageNotFoundError:
            print(f"- {package} version: not installed")
    try:
        import torch

        print(f"- CUDA available: {torch.cuda.is_available()}")
    except ImportError:
        pass
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scope-trl",
        description="SCOPE and DGPO trainers for Hugging Face TRL. Run `scope-trl demo` for a one-minute offline "
        "DGPO training of a tiny model on CPU.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = subparsers.add_parser(
        "demo",
        help="train a tiny model with DGPO on a built-in arithmetic task, offline, on CPU, and print its metrics",
        description="Builds a tiny tokenizer and Qwen3-architecture student offline, trains it with DGPO on a "
        "built-in arithmetic task with several optimizer steps per generation batch, and prints one line of metrics "
        "per step: rewards, the share of tokens beyond the trust region (clip_low / clip_high) and their mean DGPO "
        "decay weights (w_low / w_high). Takes about a minute on 2 CPU cores.",
    )
    demo.add_argument(
        "--output-dir", default=None, help="where to write the models and the report (default: a temp dir)"
    )
    demo.add_argument("--max-steps", type=int, default=64, help="optimizer steps (default: 64)")
    demo.add_argument(
        "--steps-per-generation",
        type=int,
        default=4,
        help="optimizer steps per generation batch; 1 makes DGPO identical to GRPO (default: 4)",
    )
    demo.add_argument("--num-generations", type=int, default=8, help="completions per prompt (default: 8)")
    demo.add_argument("--learning-rate", type=float, default=3e-2, help="learning rate (default: 3e-2)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(func=_demo)

    env = subparsers.add_parser("env", help="print the versions of the packages scope-trl uses")
    env.set_defaults(func=_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
