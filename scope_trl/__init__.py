"""scope-trl: SCOPE and DGPO as drop-in `GRPOTrainer` subclasses for Hugging Face TRL."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING


__version__ = "0.1.0.dev0"

# Each public name and the module that defines it. They are imported on first use (PEP 562), so that the command line
# (`scope-trl --help`, `scope-trl env`) answers without importing torch, transformers and TRL (seconds).
_EXPORTS = {
    "accuracy_reward": "rewards",
    "format_reward": "rewards",
    "load_math_dataset": "data",
    "to_conversational": "data",
    "DGPOConfig": "dgpo_config",
    "DGPOTrainer": "dgpo_trainer",
    "SCOPEConfig": "scope_config",
    "SCOPETrainer": "scope_trainer",
    "dgpo_surrogate": "losses",
    "dgpo_terms": "losses",
    "dual_path_weights": "weights",
    "ppo_clip_loss": "losses",
}

__all__ = [
    "accuracy_reward",
    "format_reward",
    "load_math_dataset",
    "to_conversational",
    "DGPOConfig",
    "DGPOTrainer",
    "SCOPEConfig",
    "SCOPETrainer",
    "dgpo_surrogate",
    "dgpo_terms",
    "dual_path_weights",
    "ppo_clip_loss",
    "__version__",
]

if TYPE_CHECKING:
    from .data import load_math_dataset, to_conversational
    from .dgpo_config import DGPOConfig
    from .dgpo_trainer import DGPOTrainer
    from .losses import dgpo_surrogate, dgpo_terms, ppo_clip_loss
    from .rewards import accuracy_reward, format_reward
    from .scope_config import SCOPEConfig
    from .scope_trainer import SCOPETrainer
    from .weights import dual_path_weights


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
