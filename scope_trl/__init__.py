"""scope-trl: SCOPE and DGPO as drop-in `GRPOTrainer` subclasses for Hugging Face TRL."""

from .data import load_math_dataset, to_conversational
from .dgpo_config import DGPOConfig
from .dgpo_trainer import DGPOTrainer
from .losses import dgpo_surrogate, dgpo_terms, ppo_clip_loss
from .rewards import accuracy_reward, format_reward
from .scope_config import SCOPEConfig
from .scope_trainer import SCOPETrainer
from .weights import dual_path_weights


__version__ = "0.1.0.dev0"

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
