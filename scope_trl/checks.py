"""Construction-time checks of what a user hands a trainer: model references, weight formats, dataset columns, reward
function arguments, the trackers of `report_to`.

TRL reports most of these mistakes late and obliquely: a dataset without a `prompt` column is a `KeyError: 'prompt'`
at the first step, after the models have loaded; a mistyped local path is a Hub error about repo-id syntax; a reward
function that needs a column the dataset lacks fails inside the first reward call. Each check here runs before
training and raises an error that says what is wrong, what is allowed and how to fix it (the bad-input table of
docs/reliability.md lists them with their tests).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping

from transformers import ProcessorMixin


# Keyword arguments GRPOTrainer passes to every reward function besides the dataset's own columns (TRL 1.16).
TRL_REWARD_ARGUMENTS = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)
# Trackers `report_to` may name, the package each needs and how to install it. transformers refuses a missing one only
# when the Trainer builds its callbacks, after the student has loaded.
TRACKER_PACKAGES = {
    "trackio": (("trackio",), 'pip install -e ".[trackio]" (or pip install trackio)'),
    "wandb": (("wandb",), "pip install wandb"),
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
    "mlflow": (("mlflow",), "pip install mlflow"),
    "comet_ml": (("comet_ml",), "pip install comet_ml"),
    "clearml": (("clearml",), "pip install clearml"),
    "swanlab": (("swanlab",), "pip install swanlab"),
}
# Dataset columns GRPOTrainer does not pass on under their own name (the prompt arrives as `prompts`).
WITHHELD_COLUMNS = frozenset({"prompt", "completion", "completion_ids"})


def looks_like_local_path(name: str) -> bool:
    """True for names that can only be local paths: absolute, `./`, `../`, `~`, or more than one `/` (a Hub id is
    `name` or `namespace/name`)."""
    return (
        os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name
    )


def check_trackers(report_to) -> None:
    """Refuse a tracker in `report_to` whose package is not installed, naming the install and the alternative."""
    for tracker in report_to or ():
        packages, install = TRACKER_PACKAGES.get(tracker, ((), None))
        if packages and all(importlib.util.find_spec(package) is None for package in packages):
            raise ValueError(
                f"report_to includes {tracker!r}, but the {packages[0]} package is not installed: {install}, or log "
                "elsewhere (report_to='tensorboard', 'wandb', ...) or nowhere (report_to='none')."
            )


def check_model_reference(name: str, role: str, field: str) -> None:
    """Refuse a local-looking model path that is not a directory, before `from_pretrained` turns it into a Hub error.

    Args:
        name: the model's name or path, as the user gave it.
        role: what the model is, for the message ("student", "teacher").
        field: the argument or config field that holds it, for the message.
    """
    path = os.path.expanduser(name)
    if os.path.isdir(path) or not looks_like_local_path(name):
        return
    if os.path.isfile(path):
        raise ValueError(
            f"The {role} {name!r} ({field}) is a file; pass the directory that holds its config.json and weights."
        )
    raise FileNotFoundError(
        f"The {role} {name!r} ({field}) does not exist on this machine. Pass an existing directory (one written by "
        "`save_pretrained`) or a Hub id of the form 'name' or 'namespace/name'."
    )


def prefer_safetensors(init_kwargs: Mapping | str | None) -> dict:
    """`from_pretrained` keyword arguments that load weights from safetensors only, unless the user chose otherwise.

    A pickled checkpoint (`pytorch_model.bin`) can run code when it is unpickled; safetensors cannot. A user who
    trusts such a checkpoint opts in with `use_safetensors=False` in the init kwargs.
    """
    kwargs = dict(json.loads(init_kwargs) if isinstance(init_kwargs, str) else init_kwargs or {})
    kwargs.setdefault("use_safetensors", True)
    return kwargs


def raised_while_loading(error: BaseException) -> bool:
    """Whether `error` was raised inside a `from_pretrained` call (a model or tokenizer load), rather than by the rest
    of a trainer's construction (creating `output_dir`, the Hub repository of `push_to_hub`, ...)."""
    return any(frame.f_code.co_name == "from_pretrained" for frame, _ in traceback.walk_tb(error.__traceback__))


def explain_load_failure(error: OSError, name: str, role: str, field: str, kwargs_field: str | None) -> OSError:
    """A load error with what went wrong and the fix: pickled weights refused, or the model not found offline.

    `kwargs_field` names the init-kwargs field through which a user may accept pickled weights; None where there is
    no such opt-in (the evaluator), so the fix offered is to convert the checkpoint.
    """
    path = os.path.expanduser(name)
    entries = os.listdir(path) if os.path.isdir(path) else []
    pickled = any(entry.endswith((".bin", ".pt", ".pth")) for entry in entries)
    if pickled and not any(entry.endswith(".safetensors") for entry in entries):
        hint = (
            "it holds pickled weights only, and scope-trl loads safetensors only (unpickling can run code). Convert "
            "the checkpoint: load it with `from_pretrained` and `save_pretrained` it again"
            + (f"; or, if you trust it, set {kwargs_field}={{'use_safetensors': False}}." if kwargs_field else ".")
        )
    elif os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        hint = (
            "HF_HUB_OFFLINE is set: a Hub id loads only from the local cache. Download it first or pass a local path."
        )
    else:
        hint = "check the name (or path), your network and your Hub token."
    return OSError(f"Could not load the {role} {name!r} ({field}): {hint} ({type(error).__name__}: {error})")


def _splits(dataset, split: str) -> Iterable[tuple[str, object]]:
    if isinstance(dataset, Mapping):  # an eval dataset may be a dict of datasets
        return [(f"{split}[{key!r}]", value) for key, value in dataset.items()]
    return [(split, dataset)]


def check_prompt_column(dataset, split: str) -> None:
    """GRPOTrainer reads every prompt from a `prompt` column; refuse a dataset without one before anything loads."""
    for name, data in _splits(dataset, split):
        columns = getattr(data, "column_names", None)
        if columns is None or "prompt" in columns:
            continue  # a torch Dataset or a streaming dataset without features: nothing to check up front
        others = [column for column in columns if column != "prompt"]
        guess = next(
            (c for c in others if c.lower() in ("question", "problem", "query", "instruction", "input")), None
        )
        fix = (
            f"`dataset.rename_column({guess!r}, 'prompt')`" if guess else "`dataset.rename_column(<column>, 'prompt')`"
        )
        raise ValueError(
            f"The {name} dataset has no 'prompt' column (its columns: {columns}). GRPO-style trainers read each prompt "
            f"from 'prompt' (a string, or a list of chat messages). Rename it, e.g. {fix}, or build the dataset with "
            "`scope_trl.data.load_math_dataset`, which writes 'prompt' and 'solution'."
        )


def required_reward_arguments(func: Callable) -> list[str]:
    """The parameters of `func` without a default that TRL fills from dataset columns (not TRL's own arguments)."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return []  # a builtin or C callable: nothing to inspect
    required = []
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            continue
        if parameter.default is parameter.empty and parameter.name not in TRL_REWARD_ARGUMENTS:
            required.append(parameter.name)
    return required


def check_reward_columns(reward_funcs: Iterable[Callable], names: Iterable[str], dataset, split: str) -> None:
    """Each reward function's required arguments must be columns of the dataset: TRL passes columns by name."""
    for func, func_name in zip(reward_funcs, names):
        if not callable(func) or hasattr(func, "parameters"):
            continue  # a reward model (an nn.Module) scores text and needs no column
        for name, data in _splits(dataset, split):
            columns = getattr(data, "column_names", None)
            if columns is None:
                continue
            passed = set(columns) - WITHHELD_COLUMNS
            missing = [arg for arg in required_reward_arguments(func) if arg not in passed]
            if missing:
                raise ValueError(
                    f"The reward function {func_name!r} needs the argument(s) {missing}, which GRPOTrainer fills from "
                    f"dataset columns of the same name, but the {name} dataset has only {columns}. Add or rename the "
                    "column(s), or give the function's parameter a default."
                )


# ---------------------------------------------------------------------------------------------------------------------
# SCOPE's verifier and inputs
# ---------------------------------------------------------------------------------------------------------------------


def refuse_multimodal(processing_class) -> None:
    """SCOPE's extra forwards see token ids only: refuse a vision-language processor."""
    if isinstance(processing_class, ProcessorMixin):
        raise ValueError(
            f"SCOPETrainer does not support vision-language models ({type(processing_class).__name__}): the "
            "old-log-prob and teacher forwards see token ids only, so π_old, the perplexity weights and the "
            "teacher's scores would ignore the images that the loss forward sees. Use a text-only student and "
            "teacher (and a tokenizer as processing_class)."
        )


def verifier_index(names: list[str], correctness_reward: str | None) -> int:
    """The position, among the reward functions `names`, of the one whose verdict routes (`correctness_reward`: a
    name or a position; the first by default)."""
    if correctness_reward is None:
        return 0
    if correctness_reward in names:
        return names.index(correctness_reward)
    if str(correctness_reward).isdigit() and int(correctness_reward) < len(names):
        return int(correctness_reward)
    raise ValueError(
        f"correctness_reward={correctness_reward!r} names no reward function of this trainer. Use one of the names "
        f"{names} or a position from 0 to {len(names) - 1}."
    )


def warn_unused_rewards(names: list[str], verifier: int, args) -> None:
    """SCOPE trains on the verifier's routing; the other reward functions act only through the outcome term. Say so
    at construction rather than let a format reward, say, be computed, logged and silently never trained on."""
    if len(names) < 2 or args.outcome_advantage_coef > 0:
        return
    others = [name for index, name in enumerate(names) if index != verifier]
    if not args.routing:
        message = f"routing=False distils every rollout: none of the reward functions {names} trains"
    else:
        chosen = (
            "correctness_reward"
            if args.correctness_reward is not None
            else "the first reward function; correctness_reward chooses another"
        )
        message = (
            f"SCOPE routes rollouts on the verifier {names[verifier]!r} ({chosen}); the other reward functions {others} "
            "are computed and logged but train only through outcome_advantage_coef > 0 (GRPO's outcome advantage, "
            "weighted by reward_weights), which is 0"
        )
    warnings.warn(f"{message}.", UserWarning, stacklevel=3)
