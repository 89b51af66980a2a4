"""What the SCOPE and DGPO training scripts share: script arguments, reward resolution, dataset loading, the epilogue."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

from trl import ScriptArguments

from ..data import BOXED_INSTRUCTION


@dataclass
class MathScriptArguments(ScriptArguments):
    """
    Script arguments of the SCOPE and DGPO training scripts: TRL's `ScriptArguments` (`dataset_name`,
    `dataset_config`, `dataset_train_split`, `dataset_test_split`, ...) plus how to turn a math dataset into prompts and
    which rewards to use.

    Args:
        dataset_layout (`str`, *optional*):
            Layout of `dataset_name` (`deepmath`, `math`, `gsm8k`, `dapo`, `math_eval`); detected from its columns when
            not given. See `scope_trl.data`.
        problem_column (`str`, *optional*):
            Column holding the question, for datasets of another layout.
        answer_column (`str`, *optional*):
            Column holding the reference answer, for datasets of another layout.
        instruction (`str`, *optional*, defaults to `"Put your final answer within \\boxed{}."`):
            Appended to every question (SCOPE's prompt convention). Empty string for none.
        system_prompt (`str`, *optional*):
            System message prepended to every prompt.
        reward_funcs (`list[str]`, *optional*, defaults to `["accuracy_reward"]`):
            Reward functions, by name (`accuracy_reward`, `format_reward`) or dotted import path
            (`my_lib.rewards.custom_reward`). For SCOPE the first one is the verifier that routes rollouts unless
            `correctness_reward` says otherwise.
    """

    dataset_layout: str | None = field(
        default=None,
        metadata={"help": "Layout of the dataset: deepmath, math, gsm8k, dapo or math_eval (default: detected)."},
    )
    problem_column: str | None = field(default=None, metadata={"help": "Column holding the question."})
    answer_column: str | None = field(default=None, metadata={"help": "Column holding the reference answer."})
    instruction: str = field(
        default=BOXED_INSTRUCTION,
        metadata={"help": "Appended to every question (SCOPE's convention by default); empty string for none."},
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System message prepended to every prompt."})
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy_reward"],
        metadata={
            "help": "Reward functions: accuracy_reward, format_reward, or a dotted import path "
            "(e.g. my_lib.rewards.custom_reward). For SCOPE the first one routes rollouts by default."
        },
    )


def import_from_launch_directory(dotted: str):
    """The object `module.path.name` names, where the module may also sit in the launch directory.

    The working directory is put on `sys.path` only while the import runs, so it cannot shadow other imports for the
    rest of the process.
    """
    module_path, attribute = dotted.rsplit(".", 1)
    directory = os.getcwd()
    added = directory not in sys.path
    if added:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_path)
    finally:
        if added:
            sys.path.remove(directory)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(
            f"Reward function {dotted!r}: module {module_path!r} has no attribute {attribute!r}."
        ) from None


def reward_funcs_from_names(names: list[str]) -> list:
    """Resolve reward function names (ours) or dotted import paths (the user's) to callables."""
    from .. import rewards

    registry = {"accuracy_reward": rewards.accuracy_reward, "format_reward": rewards.format_reward}
    funcs = []
    for name in names:
        if name in registry:
            funcs.append(registry[name])
        elif "." in name:
            funcs.append(import_from_launch_directory(name))
        else:
            raise ValueError(
                f"Unknown reward function {name!r}: use one of {sorted(registry)} or a dotted import path such as "
                "'my_lib.rewards.custom_reward'."
            )
    return funcs


def load_splits(script_args: MathScriptArguments, training_args):
    """The train split and, when evaluation is on, the test split, in conversational format with `solution`."""
    from ..data import load_math_dataset

    if not script_args.dataset_name:
        raise ValueError("Pass --dataset_name: a Hub dataset name or a local .json / .jsonl / .parquet file.")

    def load(split):
        return load_math_dataset(
            script_args.dataset_name,
            split=split,
            layout=script_args.dataset_layout,
            problem_column=script_args.problem_column,
            answer_column=script_args.answer_column,
            instruction=script_args.instruction or None,
            system_prompt=script_args.system_prompt,
            name=script_args.dataset_config,
        )

    train = load(script_args.dataset_train_split)
    evaluation = load(script_args.dataset_test_split) if training_args.eval_strategy != "no" else None
    return train, evaluation


def model_init_kwargs(model_args, training_args) -> dict:
    """`from_pretrained` arguments from TRL's `ModelConfig` (dtype, attention, revision), as TRL's scripts build them."""
    kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    kwargs.update(training_args.model_init_kwargs or {})
    return kwargs


def train_save_push(trainer, script_args, training_args) -> None:
    """Train (resuming if asked), save, push with a model card when `--push_to_hub`, and close trackers."""
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    # A local data file is no Hub dataset: the card would link to a page that does not exist.
    dataset_name = None if Path(script_args.dataset_name).exists() else script_args.dataset_name
    model_name = (training_args.hub_model_id or training_args.output_dir).rstrip("/").split("/")[-1]
    trainer.create_model_card(model_name=model_name, dataset_name=dataset_name)  # README.md citing the paper and TRL
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_name)
        trainer.accelerator.print(f"Model pushed to the Hub as {trainer.hub_model_id}.")
    # The main process writes the card and pushes alone: let the others wait, so that no process tears down its
    # process group while a peer still holds a connection to it (gloo aborts at exit otherwise).
    trainer.accelerator.wait_for_everyone()
    # Finishes the trackers and destroys the process group: what `Trainer.end()` does from transformers 5.18 on, called
    # directly so that the scripts also end cleanly on transformers 5.17 (what vLLM 0.31 needs).
    trainer.accelerator.end_training()


def run_as_script(make_parser, main, prog: str) -> None:
    """A training script run as a program (`python scope_trl/scripts/scope.py ...`, and each process `accelerate
    launch` starts for `scope-trl scope --accelerate_config ...`): unknown flags and YAML keys fail loudly (a typo
    must not silently train with a default), and an error is one line, as from `scope-trl` itself."""
    from ..cli import report_errors

    def run() -> int:
        main(*parse_script_arguments(make_parser(prog=prog)))
        return 0

    sys.exit(report_errors(run, prog))


def parse_script_arguments(parser, args: list[str] | None = None):
    """`(script_args, training_args, model_args)` from the command line and a `--config` YAML file, parsed by TRL's
    `TrlParser` after `check_arguments`; `--resume_from_checkpoint true` means the last checkpoint of `output_dir`."""
    argv = check_arguments(parser, list(sys.argv[1:] if args is None else args))
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)[:3]
    training_args.resume_from_checkpoint = resume_target(training_args.resume_from_checkpoint)
    return script_args, training_args, model_args


def check_arguments(parser, argv: list[str]) -> list[str]:
    """`argv` with `--config=FILE` spelled `--config FILE` (the only spelling TRL's parser reads: the other was an
    unknown argument), after checking the config file's keys and the flags: an unknown one (a typo would otherwise
    train with a default, or get TRL's generic message) is an error that names it, suggests the nearest and points to
    `--help`."""
    argv = [part for arg in argv for part in (arg.split("=", 1) if arg.startswith("--config=") else [arg])]
    flags = argv
    if "--config" in argv[:-1]:
        index = argv.index("--config")
        check_config_keys(argv[index + 1], parser)
        flags = argv[:index] + argv[index + 2 :]
    help_line = f"`{parser.prog} --help` lists them"

    def refuse(message):  # argparse's own errors (a bad value, an ambiguous prefix) without its 200-line usage
        raise ValueError(f"{message[0].upper()}{message[1:]}. Every config field is a flag; {help_line}.")

    with mock.patch.object(parser, "error", refuse):
        _, unknown = parser.parse_known_args(flags)
    if unknown:
        options = [option for option in parser._option_string_actions if option.startswith("--")]
        hints = []
        for index, arg in enumerate(unknown):
            if not arg.startswith("-"):
                if index and unknown[index - 1].startswith("-") and "=" not in unknown[index - 1]:
                    continue  # the value of the unknown flag before it
                hints.append(repr(arg))
                continue
            close = difflib.get_close_matches(arg.split("=", 1)[0], options, n=1)
            hints.append(arg.split("=", 1)[0] + (f" (did you mean {close[0]}?)" if close else ""))
        raise ValueError(
            f"Unknown argument(s): {', '.join(hints)}. Every field of the training config, of TRL's ModelConfig and "
            f"of the script arguments is a flag; {help_line}."
        )
    return argv


def resume_target(value):
    """What `--resume_from_checkpoint` asks `Trainer.train` for: `true` the last checkpoint of `output_dir` (as
    `train(resume_from_checkpoint=True)` means), `false` none, anything else the checkpoint at that path."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return True if value.lower() == "true" else None
    return value


def check_config_keys(path: str, parser) -> None:
    """Raise a `ValueError` naming each key of the YAML file at `path` that no argument of `parser` takes."""
    import yaml

    with open(path) as file:
        config = yaml.safe_load(file)
    if not isinstance(config, dict):
        return  # TRL's parser reports a file that is not a mapping
    known = {action.dest for action in parser._actions} | {"env"}
    unknown = [key for key in config if key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), known, n=1)
            hints.append(repr(key) + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"Unknown key(s) in the config file {path}: {', '.join(hints)}. A config file may set the fields of the "
            f"training config, of TRL's ModelConfig and of the script arguments; `{parser.prog} --help` lists them."
        )
