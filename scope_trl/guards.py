"""Guards against the faults that ruin long runs silently: non-finite updates and failing reward functions.

- **Non-finite updates.** transformers' `Trainer` hides a NaN loss from the logs (`logging_nan_inf_filter`) and
  applies whatever gradient it has. Our trainers check, once per optimizer step, that every micro-batch's loss and
  the gradient norm are finite. `nonfinite_updates="error"` (default) raises `NonFiniteUpdateError` before the
  optimizer step, naming the trainer, the step and the quantity, so the weights stay as they were;
  `nonfinite_updates="skip"` drops that step's update instead (the optimizer's state is untouched, the learning-rate
  schedule moves on), counts it in `nonfinite/skipped_steps` and keeps training. An fp16 loss scaler's overflow steps
  are the scaler's to drop (`nonfinite/scaler_skipped_steps`); under DeepSpeed the loss is checked before the engine
  steps. The trainer side is `SurrogateGRPOTrainer._check_update`; the semantics are in docs/reliability.md.
- **Reward functions.** A reward function that raises is reported with its name and one of the completions it was
  given; one that returns a value that is not a number (or None) is reported with the value, its position and its
  completion. TRL itself checks the number of values.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import wraps


NONFINITE_UPDATE_POLICIES = ("error", "skip")


@dataclass
class GuardConfigMixin:
    """What `DGPOConfig` and `SCOPEConfig` share beyond `GRPOConfig`: the guard's field and the conversion from a
    `GRPOConfig`. Listed before `GRPOConfig` among their bases, so that dataclass ordering puts its field after
    GRPOConfig's and `output_dir` stays the first positional argument (`SCOPEConfig("out")`), as in every TRL config."""

    nonfinite_updates: str = field(
        default="error",
        metadata={
            "help": "A NaN or infinite loss or gradient norm at an optimizer step: 'error' (default) raises before the "
            "update, naming the step and the quantity; 'skip' drops that update, counts it in "
            "nonfinite/skipped_steps and keeps training (not under DeepSpeed, whose engine steps inside backward). "
            "An fp16 loss scaler's overflow steps are its own to drop (nonfinite/scaler_skipped_steps), not errors."
        },
    )

    @classmethod
    def from_grpo_config(cls, config, **changes):
        """This config class with every setting of `config` (a `GRPOConfig`, or another of ours) and `changes` on top:
        `DGPOConfig.from_grpo_config(grpo_config)`, `SCOPEConfig.from_grpo_config(grpo_config,
        teacher_model_name_or_path=...)`.

        The values are read from the fields, not from `to_dict()` (which masks tokens); `generation_batch_size` is left
        out, since `GRPOConfig` derives it from `steps_per_generation` and refuses both.
        """
        names = {f.name for f in fields(cls) if f.init}
        values = {f.name: getattr(config, f.name) for f in fields(config) if f.init and f.name in names}
        values.pop("generation_batch_size", None)
        return cls(**{**values, **changes})

    def check_nonfinite_updates(self) -> None:
        if self.nonfinite_updates not in NONFINITE_UPDATE_POLICIES:
            raise ValueError(
                f"nonfinite_updates must be one of {', '.join(map(repr, NONFINITE_UPDATE_POLICIES))}, got "
                f"{self.nonfinite_updates!r}."
            )


class NonFiniteUpdateError(FloatingPointError):
    """A loss or gradient norm was NaN or infinite; the update was not applied."""


class RewardFunctionError(RuntimeError):
    """A reward function raised or returned something that is not one number (or None) per completion."""


def _excerpt(value, limit: int = 300) -> str:
    """A short printable form: a string (or a conversational completion's text) quoted, anything else as repr."""
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        value = "".join(str(m.get("content", "")) for m in value)
    if not isinstance(value, str):
        text = repr(value)
        return text[:limit] + ("..." if len(text) > limit else "")
    return repr(value[:limit] + ("..." if len(value) > limit else ""))


def checked_reward_function(func: Callable, name: str) -> Callable:
    """`func` with its failures turned into `RewardFunctionError`s that name it and show a completion.

    Values may be real numbers (`bool` and numpy scalars included) or None; NaN is allowed and means "no verdict", as
    None does (docs/reliability.md says what each trainer does with it).
    """

    @wraps(func)
    def checked(*args, **kwargs):
        completions = kwargs.get("completions") or []
        try:
            values = func(*args, **kwargs)
        except Exception as error:
            example = _excerpt(completions[0]) if completions else "(no completion)"
            raise RewardFunctionError(
                f"The reward function {name!r} raised {type(error).__name__}: {error} (on a batch of "
                f"{len(completions)} completions; the first one: {example})."
            ) from error
        try:
            values = list(values)
        except TypeError:
            raise RewardFunctionError(
                f"The reward function {name!r} returned {type(values).__name__} {_excerpt(values)}; it must return a "
                "list with one float (or None) per completion."
            ) from None
        for index, value in enumerate(values):
            if value is None or (isinstance(value, numbers.Real) and not isinstance(value, complex)):
                continue
            completion = _excerpt(completions[index]) if index < len(completions) else "(none)"
            raise RewardFunctionError(
                f"The reward function {name!r} returned {type(value).__name__} {_excerpt(value)} at position {index} "
                f"(completion {completion}); each reward must be a number or None."
            )
        return values

    return checked


def nonfinite(value) -> bool:
    """True when the float (or 0-d tensor) `value` is NaN or infinite; None counts as finite."""
    return value is not None and not math.isfinite(float(value))
