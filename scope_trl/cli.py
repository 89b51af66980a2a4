"""The `scope-trl` command line.

Sub-commands:

- `scope-trl scope ...` / `scope-trl dgpo ...`: the training scripts, mirroring `trl grpo`: every config field is a
  flag, `--config FILE.yaml` reads them from YAML, and `--accelerate_config NAME_OR_PATH` (one of
  `scope_trl/accelerate_configs/`, e.g. `zero3`, or a file) launches the script through `accelerate launch`, with
  `--num_processes`, `--num_machines`, `--machine_rank`, `--main_process_ip` and `--main_process_port` passed on to it
  (on a multi-node run, each node runs the same command with its own `--machine_rank`);
- `scope-trl eval`: Avg@k / Pass@k of a model on the maths benchmarks;
- `scope-trl demo`: the embedded-default job: a tiny teacher and student trained offline on CPU on a built-in
  arithmetic task, then SCOPE (or OPD, GRPO, DGPO) on the student, with before/after Avg@k / Pass@k;
- `scope-trl env`: the versions of the packages scope-trl depends on, for bug reports.

An error ends the command with one line naming it (and, for our own checks, the fix); `scope-trl --debug COMMAND ...`
(or `SCOPE_TRL_DEBUG=1`) shows the traceback instead. This module imports nothing heavy at the top, so that
`scope-trl --help` answers at once; TRL, transformers and torch load only for the sub-command that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


TRAINING_SCRIPTS = {"scope": "scope_trl.scripts.scope", "dgpo": "scope_trl.scripts.dgpo"}
DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "SCOPE_TRL_DEBUG"  # also set for the processes `accelerate launch` starts
ACCELERATE_CONFIG_DIR = Path(__file__).parent / "accelerate_configs"
# Options of `scope-trl scope|dgpo` that belong to `accelerate launch`, not to the training script.
LAUNCH_OPTIONS = (
    "--accelerate_config",
    "--num_processes",
    "--num_machines",
    "--machine_rank",
    "--main_process_ip",
    "--main_process_port",
)


def accelerate_config_path(name_or_path: str) -> Path:
    """A file path as is, or the name of one of the packaged accelerate configurations (`zero3`, `cpu_multi`, ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = ACCELERATE_CONFIG_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if packaged.is_file():
        return packaged
    names = sorted(p.stem for p in ACCELERATE_CONFIG_DIR.glob("*.yaml"))
    raise ValueError(f"No accelerate config {name_or_path!r}: pass a file path or one of {', '.join(names)}.")


def split_launch_options(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Separate the `accelerate launch` options (`--opt value` or `--opt=value`) from the training script's."""
    launch, rest, index = {}, [], 0
    while index < len(argv):
        arg = argv[index]
        option = arg.split("=", 1)[0]
        if option in LAUNCH_OPTIONS:
            if "=" in arg:
                launch[option] = arg.split("=", 1)[1]
            elif index + 1 < len(argv):
                launch[option] = argv[index + 1]
                index += 1
            else:
                raise ValueError(f"{option} needs a value.")
        else:
            rest.append(arg)
        index += 1
    return launch, rest


def run_training(command: str, argv: list[str], debug: bool = False) -> int:
    """`scope-trl scope|dgpo ARGS`: run the training script here, or through `accelerate launch`."""
    module_name = TRAINING_SCRIPTS[command]
    launch, script_argv = split_launch_options(argv)
    if "--accelerate_config" not in launch:
        if set(launch):
            raise ValueError(f"{', '.join(sorted(launch))} only apply with --accelerate_config.")
        module = importlib.import_module(module_name)
        parser = module.make_parser(prog=f"scope-trl {command}")
        parser.epilog = (
            "Launch through `accelerate launch` with --accelerate_config NAME_OR_PATH (packaged: "
            f"{', '.join(sorted(p.stem for p in ACCELERATE_CONFIG_DIR.glob('*.yaml')))}), optionally --num_processes, "
            "--num_machines, --machine_rank, --main_process_ip and --main_process_port."
        )
        from .scripts.common import parse_script_arguments

        script_args, training_args, model_args = parse_script_arguments(parser, script_argv)
        module.main(script_args, training_args, model_args)
        return 0
    # Checked once here rather than in every launched process: the config file's keys and the flags.
    from .scripts.common import check_arguments

    check_arguments(importlib.import_module(module_name).make_parser(prog=f"scope-trl {command}"), script_argv)
    config = accelerate_config_path(launch["--accelerate_config"])
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    for option in LAUNCH_OPTIONS[1:]:
        if option in launch:
            launcher += [option, launch[option]]
    script = importlib.util.find_spec(module_name).origin
    environment = {**os.environ, DEBUG_VARIABLE: "1"} if debug else None  # the launched processes' tracebacks
    return subprocess.call([*launcher, script, *script_argv], env=environment)


def _demo(args: argparse.Namespace) -> int:
    # The demo runs on CPU: tell DeepSpeed (imported by TRL when installed) so it does not probe for a GPU and warn.
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from .apps.demo import DemoSettings, run_demo

    settings = DemoSettings(method=args.method, seed=args.seed)
    if args.smoke:
        settings.smoke()  # tiny budgets first; explicit flags below still override them
    for field in (
        "max_steps",
        "teacher_sft_steps",
        "student_sft_steps",
        "eval_problems",
        "k",
        "learning_rate",
        "num_generations",
        "prompts_per_step",
        "distillation_advantage_clip",
    ):
        if getattr(args, field) is not None:
            setattr(settings, field, getattr(args, field))
    run_demo(settings, output_dir=args.output_dir)
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


def _eval(args: argparse.Namespace) -> int:
    """`scope-trl eval`: Avg@k / Pass@k of a model on the maths benchmarks; prints a table, writes JSON and Markdown."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .checks import check_model_reference, explain_load_failure
    from .evaluation import evaluate, load_benchmarks

    check_model_reference(args.model, "model", "--model")
    benchmarks = load_benchmarks(args.benchmarks, data_dir=args.data_dir, limit=args.limit)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.backend == "vllm":
        model = args.model  # vLLM loads the weights itself
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        try:  # safetensors only: a pickled checkpoint could run code on load
            model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto", use_safetensors=True).to(device)
        except OSError as error:
            raise explain_load_failure(error, args.model, "model", "--model", None) from error
    result = evaluate(
        model,
        tokenizer,
        benchmarks,
        k=args.k,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        backend=args.backend,
        model_name=args.model,
    )
    print(result.table())
    output_dir = Path(args.output_dir)
    json_path = result.to_json(output_dir / "eval_results.json")
    markdown_path = output_dir / "eval_results.md"
    result.to_markdown(markdown_path)
    print(f"Wrote {json_path} and {markdown_path}.")
    return 0


def _add_demo_parser(subparsers) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="train a teacher and a student on a built-in task, then SCOPE on the student, offline, on CPU",
        description="Offline, on CPU, in about 4 minutes on 2 cores: on miniature task A (8-digit addition with a "
        "carry scratchpad), trains a teacher on every problem and a same-size student that rarely saw a carry by SFT, "
        "evaluates both (Avg@k and Pass@k at temperature 1 on test problems), trains the student with the chosen "
        "method on prompts at its edge of competence, evaluates it again, and writes a JSON report and a PNG of the "
        "training curves (reward, scope/teacher_kl, route shares).",
    )
    demo.add_argument(
        "--method",
        choices=["scope", "opd", "grpo", "dgpo"],
        default="scope",
        help="scope: SCOPE with the teacher; opd: plain on-policy distillation (SCOPE with routing=False); grpo: TRL's "
        "GRPOTrainer; dgpo: DGPOTrainer with 4 optimizer steps per generation batch (default: scope)",
    )
    demo.add_argument(
        "--output-dir", default=None, help="where to write the models, the plot and the report (default: a temp dir)"
    )
    demo.add_argument("--max-steps", type=int, default=None, help="RL optimizer steps (default: 200)")
    demo.add_argument("--teacher-sft-steps", type=int, default=None, help="teacher SFT steps (default: 1500)")
    demo.add_argument("--student-sft-steps", type=int, default=None, help="student SFT steps (default: 1000)")
    demo.add_argument("--eval-problems", type=int, default=None, help="test problems (default: 500)")
    demo.add_argument("-k", type=int, default=None, help="samples per problem for Avg@k / Pass@k (default: 8)")
    demo.add_argument("--learning-rate", type=float, default=None, help="RL peak learning rate (default: 3e-3)")
    demo.add_argument("--num-generations", type=int, default=None, help="completions per prompt (default: 8)")
    demo.add_argument("--prompts-per-step", type=int, default=None, help="prompts per RL step (default: 16)")
    demo.add_argument(
        "--distillation-advantage-clip",
        type=float,
        default=None,
        help="scope / opd: bound |per-token distillation advantage| by this value; off unless given (the paper's "
        "method)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--smoke", action="store_true", help="tiny budgets, end to end in well under a minute (for tests)"
    )
    demo.set_defaults(func=_demo)


def _add_eval_parser(subparsers) -> None:
    evaluation = subparsers.add_parser(
        "eval",
        help="Avg@k / Pass@k of a model on the maths benchmarks, graded with math-verify",
        description="Samples k completions per problem (temperature 0.6, top-p 0.95, top-k 20 by default, as in the "
        "papers), grades them with math-verify and reports Avg@k (mean accuracy) and Pass@k (unbiased estimator with "
        "n = k: at least one correct sample) per benchmark and on average, as a table, eval_results.json and "
        "eval_results.md.",
    )
    evaluation.add_argument("--model", required=True, help="model path or Hub name")
    evaluation.add_argument(
        "--benchmarks",
        default="aime24,aime25,amc23,math500,minerva_math,olympiadbench",
        help="comma-separated names among aime24, aime25, amc23, math500, minerva_math, olympiadbench, gsm8k",
    )
    evaluation.add_argument(
        "--data-dir", default=None, help="folder with NAME.jsonl files (e.g. shared/data/math_eval); default: the Hub"
    )
    evaluation.add_argument("-k", type=int, default=32, help="samples per problem (default: 32)")
    evaluation.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    evaluation.add_argument("--batch-size", type=int, default=64, help="sequences per generate call (default: 64)")
    evaluation.add_argument("--max-new-tokens", type=int, default=4096, help="default: 4096")
    evaluation.add_argument("--temperature", type=float, default=0.6, help="default: 0.6 (0: greedy)")
    evaluation.add_argument("--top-p", type=float, default=0.95, help="default: 0.95")
    evaluation.add_argument("--top-k", type=int, default=20, help="default: 20 (<= 0: off)")
    evaluation.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    evaluation.add_argument("--output-dir", default=".", help="where to write eval_results.json / .md (default: .)")
    evaluation.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    evaluation.set_defaults(func=_eval)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scope-trl",
        description="SCOPE and DGPO trainers for Hugging Face TRL. Run `scope-trl demo` for an offline, few-minute "
        "SCOPE run of a tiny teacher and student on CPU; `scope-trl scope --help` and `scope-trl dgpo --help` for "
        "training; `scope-trl eval --help` for evaluation.",
        epilog="Example: scope-trl scope --config examples/configs/scope_qwen3_1.7b_deepmath.yaml "
        "--accelerate_config zero3",
    )
    parser.add_argument(
        DEBUG_FLAG,
        action="store_true",
        help="show the full traceback of an error (before the sub-command; or set SCOPE_TRL_DEBUG=1)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, method in (("scope", "SCOPE (needs a teacher)"), ("dgpo", "DGPO")):
        subparsers.add_parser(
            command,
            add_help=False,  # `scope-trl scope --help` is the training script's own help, with every config field
            help=f"train with {method}; every config field is a flag, plus --config FILE.yaml and "
            f"--accelerate_config NAME (see `scope-trl {command} --help`)",
        )

    _add_demo_parser(subparsers)
    _add_eval_parser(subparsers)
    env = subparsers.add_parser("env", help="print the versions of the packages scope-trl uses")
    env.set_defaults(func=_env)
    return parser


def debugging() -> bool:
    """Whether tracebacks are asked for: `SCOPE_TRL_DEBUG=1` (what `--debug` sets for launched processes)."""
    return os.environ.get(DEBUG_VARIABLE, "").lower() not in ("", "0", "false", "no")


def one_line_error(error: BaseException, prog: str) -> str:
    """`prog: error: message`, on one line: our checks' messages name the problem and the fix, so they come alone;
    another error keeps its type, which is half of what it says (`FileNotFoundError`, `RuntimeError`, ...)."""
    message = " ".join(str(error).split()) or repr(error)
    if not isinstance(error, ValueError):
        message = f"{type(error).__name__}: {message}"
    return f"{prog}: error: {message} (`scope-trl {DEBUG_FLAG} ...` shows the traceback)"


def report_errors(run, prog: str, debug: bool = False) -> int:
    """`run()`'s exit status; an exception becomes one line on stderr and status 1, unless debugging."""
    if debug or debugging():
        return run()
    try:
        return run()
    except Exception as error:  # noqa: BLE001 - every error gets its one line; --debug shows the rest
        print(one_line_error(error, prog), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = False
    while argv and argv[0] == DEBUG_FLAG:  # before the sub-command: the training configs have a `--debug` of their own
        debug = True
        argv.pop(0)
    if argv and argv[0] in TRAINING_SCRIPTS:
        return report_errors(lambda: run_training(argv[0], argv[1:], debug), f"scope-trl {argv[0]}", debug)
    if DEBUG_FLAG in argv:  # `scope-trl demo --debug`: no ambiguity outside the training commands
        debug = True
        argv.remove(DEBUG_FLAG)
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return report_errors(lambda: args.func(args), f"scope-trl {args.command}", debug)


if __name__ == "__main__":
    sys.exit(main())
