"""`DGPOTrainer`: GRPO with DGPO's probability-gradient soft clip in place of the hard clip."""

from __future__ import annotations

import textwrap
import warnings

import torch
from trl.trainer.utils import get_config_model_id

from .dgpo_config import DGPOConfig
from .losses import dgpo_terms
from .surrogate_trainer import PolicyBatch, SurrogateGRPOTrainer


class DGPOTrainer(SurrogateGRPOTrainer):
    r"""
    Trainer for Decoupled Gradient Policy Optimization (DGPO), from the paper [From log π to π: Taming Divergence in
    Soft Clipping via Bilateral Decoupled Decay of Probability Gradient Weight](https://huggingface.co/papers/2603.14389).

    A drop-in replacement for [`~trl.GRPOTrainer`]: same arguments, same data format, same generation backends
    (transformers or vLLM), same metrics. Only the per-token policy surrogate changes. Tokens beyond GRPO's trust
    region no longer lose their gradient: on LN tokens (A < 0, r < 1 - ε_low) the probability-gradient weight decays
    polynomially, (r / (1 - ε_low))^n, and on HP tokens (A > 0, r > 1 + ε_high) as an inverse root,
    ((1 + ε_high) / r)^(1/m); both branches meet the unclipped weight at the trust-region edges. See
    `scope_trl.losses.dgpo_surrogate` for the maths and [`DGPOConfig`] for the options.

    Example:

    ```python
    from scope_trl import DGPOConfig, DGPOTrainer, load_math_dataset
    from scope_trl.rewards import accuracy_reward

    trainer = DGPOTrainer(
        model="Qwen/Qwen3-0.6B",
        reward_funcs=accuracy_reward,
        args=DGPOConfig(steps_per_generation=4),  # several optimizer steps per generation batch
        train_dataset=load_math_dataset("zwhe99/DeepMath-103K"),  # question -> prompt, final answer -> solution
    )
    trainer.train()
    ```

    Logged metrics, besides GRPO's: `clip_ratio/low_mean`, `clip_ratio/high_mean`, `clip_ratio/region_mean` (shares
    of LN, HP and LN ∪ HP tokens among loss tokens), `clip_ratio/low_min`, `clip_ratio/high_max` (per-sequence
    extremes), `dgpo/low_weight_mean` and `dgpo/high_weight_mean` (mean decay factor on LN and HP tokens; logged as
    `None` when the region is empty) and `policy_loss` (always).
    """

    # "DGPO" also names Direct Group Preference Optimization and Distribution-Guided Policy Optimization: the Hub tags
    # name this one by its soft clip and its paper, never by the bare acronym.
    _tag_names = ["trl", "grpo", "dgpo-softclip", "arxiv:2603.14389", "scope-trl"]
    _name = "DGPO"
    _paper = {
        "title": "From log π to π: Taming Divergence in Soft Clipping via Bilateral Decoupled Decay of Probability "
        "Gradient Weight",
        "id": "2603.14389",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @inproceedings{fu2026dgpo,
                title        = {{From log $\\pi$ to $\\pi$: Taming Divergence in Soft Clipping via Bilateral Decoupled Decay of Probability Gradient Weight}},
                author       = {X. Fu and J. Lin and Y. Fang and C. Hu and C. Qin and Z. Shao and B. Zheng and L. Pan and K. Zeng},
                booktitle    = {Proceedings of the 64th Annual Meeting of the Association for Computational Linguistics (ACL)},
                pages        = {41410--41430},
                year         = 2026,
                eprint       = {arXiv:2603.14389},
            }"""),
    }

    def __init__(self, model, reward_funcs=None, args: DGPOConfig | None = None, **kwargs):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = DGPOConfig(f"{model_name.split('/')[-1]}-DGPO")
        elif not isinstance(args, DGPOConfig):
            raise TypeError(
                f"DGPOTrainer needs a DGPOConfig, got {type(args).__name__}. Switch the class name in your script, "
                "or convert the config you have: DGPOConfig.from_grpo_config(your_config)."
            )
        if args.dgpo_is_on_policy:
            warnings.warn(
                "Every DGPO update is on-policy with this configuration (gradient_accumulation_steps="
                f"{args.gradient_accumulation_steps} is a multiple of steps_per_generation={args.steps_per_generation}"
                f" x num_iterations={args.num_iterations}), so the ratio pi_theta / pi_old is 1 and DGPO trains "
                "exactly like GRPO. For off-policy updates, where DGPO's soft clip acts, set steps_per_generation to a "
                "multiple of gradient_accumulation_steps (the official recipe uses 4x) or num_iterations > 1.",
                UserWarning,
                stacklevel=2,
            )
        super().__init__(model, reward_funcs, args=args, **kwargs)

    def _per_token_policy_loss(self, batch: PolicyBatch, inputs: dict) -> torch.Tensor:
        args = self.args
        terms = dgpo_terms(
            batch.log_ratio, batch.advantages, self.epsilon_low, self.epsilon_high, n=args.dgpo_n, m=args.dgpo_m
        )
        self._log_dgpo_metrics(batch, terms)
        return -batch.advantages * terms.surrogate

    def _log_dgpo_metrics(self, batch: PolicyBatch, terms) -> None:
        metrics = self._metrics[batch.mode]
        self._log_boundary_metrics(terms.low_region, terms.high_region, batch.mask, batch.mode)
        low, high = terms.low_region.float(), terms.high_region.float()
        low_weight, high_weight = self._global_masked_means(
            (terms.low_decay, batch.mask * low), (terms.high_decay, batch.mask * high)
        )
        metrics["dgpo/low_weight_mean"].append(low_weight)
        metrics["dgpo/high_weight_mean"].append(high_weight)
