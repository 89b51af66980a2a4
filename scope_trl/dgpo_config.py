"""Configuration of `DGPOTrainer`."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from .aggregation import AGGREGATIONS
from .guards import GuardConfigMixin
from .losses import check_dgpo_exponents, check_trust_region


@dataclass
class DGPOConfig(GuardConfigMixin, GRPOConfig):
    r"""
    Configuration class for the [`DGPOTrainer`].

    [`DGPOConfig`] inherits every parameter of [`~trl.GRPOConfig`] and adds the two exponents of DGPO's soft clip
    ([DGPO paper](https://huggingface.co/papers/2603.14389)). Inherited parameters keep their GRPO meaning, with these
    precisions:

    - `epsilon` / `epsilon_high` are ε_low / ε_high: the trust region is `[1 - epsilon, 1 + epsilon_high]`
      (`epsilon_high=None` falls back to `epsilon`, as in GRPO). Defaults 0.2 / 0.2.
    - `loss_type` selects only the **token aggregation** (DGPO replaces the surrogate, never the normaliser):
      `"dapo"` (default; sum over tokens divided by the global token count of the generation batch), `"grpo"`
      (per-sequence token means), `"bnpo"` (local token mean), `"dr_grpo"` (constant `max_completion_length`) or
      `"luspo"` (per-sequence token sums). `"cispo"`, `"sapo"` and `"vespo"` are surrogates of their own and are
      rejected.
    - `importance_sampling_level="sequence"` applies the soft clip to each sequence's geometric-mean ratio
      exp(mean_t log r_t), as GSPO does with the hard clip: regions and decay are decided per sequence and the
      gradient spreads evenly over its tokens.
    - `delta` (an upper cap on r from INTELLECT-2) and `use_liger_kernel` are rejected.
    - DGPO differs from GRPO only when the ratio departs from 1, i.e. with several optimizer steps per generation
      batch: `steps_per_generation > gradient_accumulation_steps` or `num_iterations > 1` (the official recipe takes 4
      mini-batch steps per rollout batch). The trainer warns when every update is on-policy.

    Parameters:
        > Parameters that control the DGPO soft clip

        dgpo_n (`float`, *optional*, defaults to `1.0`):
            Left-boundary decay exponent n (`dgpo_n` in the official code). On LN tokens (negative advantage, ratio
            below `1 - epsilon`) the probability-gradient weight decays as (r / (1 - epsilon))^n, continuously to 0.
            `0` disables the left decay (plain policy gradient); larger values decay faster. The paper uses 1 for 7B+
            models "for stability" and suggests 2 for 1.5B models. Must be >= 0.
        dgpo_m (`float`, *optional*, defaults to `2.0`):
            Right-boundary root order m (`dgpo_m` in the official code). On HP tokens (positive advantage, ratio above
            `1 + epsilon_high`) the weight decays as ((1 + epsilon_high) / r)^(1/m). `1` is GPPO's constant right
            branch; larger values decay more slowly ("more exploration"). Must be >= 1.
        > Parameters that control the guards

        nonfinite_updates (`str`, *optional*, defaults to `"error"`):
            A NaN or infinite loss or gradient norm at an optimizer step: `"error"` raises `NonFiniteUpdateError`
            before the update (the weights stay as they were); `"skip"` drops that update, counts it in
            `nonfinite/skipped_steps` and keeps training (not supported under DeepSpeed). See `scope_trl.guards`.
    """

    dgpo_n: float = field(
        default=1.0,
        metadata={
            "help": "Left-boundary (LN: A < 0, r < 1 - epsilon) decay exponent n of DGPO: the probability-gradient "
            "weight decays as (r / (1 - epsilon))^n. 0 disables the left decay; must be >= 0. The paper uses 1 for "
            "7B+ models and suggests 2 for 1.5B models."
        },
    )
    dgpo_m: float = field(
        default=2.0,
        metadata={
            "help": "Right-boundary (HP: A > 0, r > 1 + epsilon_high) root order m of DGPO: the weight decays as "
            "((1 + epsilon_high) / r)^(1/m). 1 gives GPPO's constant right branch; must be >= 1."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self.check_nonfinite_updates()

        check_dgpo_exponents(self.dgpo_n, self.dgpo_m)
        check_trust_region(self.epsilon, self.epsilon if self.epsilon_high is None else self.epsilon_high)
        if self.loss_type not in AGGREGATIONS:
            raise ValueError(
                f"loss_type={self.loss_type!r} is not supported by DGPO. With DGPOConfig, loss_type only selects the "
                f"token aggregation: use one of {', '.join(repr(a) for a in AGGREGATIONS)} ('dapo' by default). "
                "'cispo', 'sapo' and 'vespo' replace the surrogate that DGPO replaces; use GRPOTrainer for them."
            )
        if self.delta is not None:
            raise ValueError(
                f"delta={self.delta} (INTELLECT-2's upper cap on the ratio) is not part of DGPO, whose right-boundary "
                "decay already bounds the weight of high-ratio tokens. Leave delta=None."
            )
        if self.use_liger_kernel:
            raise ValueError(
                "use_liger_kernel=True is not supported by DGPOTrainer: its loss is computed from TRL's fused LM "
                "head and Liger kernels do not implement the DGPO surrogate. Set use_liger_kernel=False (for fused "
                'layer kernels, use model_init_kwargs={"use_kernels": True}).'
            )

    @property
    def dgpo_is_on_policy(self) -> bool:
        """True when every optimizer step uses freshly generated samples, so the ratio is 1 and DGPO equals GRPO."""
        return self.gradient_accumulation_steps % (self.steps_per_generation * self.num_iterations) == 0
