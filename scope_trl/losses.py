r"""Per-token policy surrogates, as pure tensor functions.

DGPO (Fu, Lin, Fang et al., "From log π to π: Taming Divergence in Soft Clipping via Bilateral Decoupled Decay of
Probability Gradient Weight", arXiv 2603.14389, ACL 2026) replaces GRPO's hard clip by a soft clip defined in
probability-gradient space. With r = π_θ / π_old, lb = 1 - ε_low and ub = 1 + ε_high, the per-token log-prob gradient
weight is

    w(r) = r^{n+1} / lb^n                 on LN: A < 0 and r < lb   (polynomial decay of W = w / π_θ)
    w(r) = ub^{1/m} · r^{1 - 1/m}         on HP: A > 0 and r > ub   (reciprocal-radical decay)
    w(r) = r                              everywhere else (plain, unclipped PPO/GRPO; no dual clip)

and the surrogate S = r · sg(decay) has value w and d S / d log π_θ = S, so the per-token loss -A · S has gradient
-A · w · ∇ log π_θ. The project's decisions (strict inequalities, no dual clip, the numerically safe form) are in
docs/dgpo.md (Decisions).

`ppo_clip_loss` is GRPO/PPO's clipped per-token loss, kept here as the reference DGPO is compared against and as the
default surrogate of SCOPE's OPD path.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


# The official code clamps the log-ratio to ±20 before exponentiating; beyond it the gradient is cut (allowed by the
# spec, and the only way to keep exp() finite in float32 and bfloat16 for arbitrary log-ratios).
LOG_RATIO_CLAMP = 20.0


class DGPOTerms(NamedTuple):
    """The DGPO surrogate together with the quantities its metrics are built from (all broadcast to one shape).

    Attributes:
        surrogate: S = r · low_decay · high_decay; carries the gradient through r only.
        low_region: bool, the LN tokens (A < 0 and r < 1 - ε_low).
        high_region: bool, the HP tokens (A > 0 and r > 1 + ε_high).
        low_decay: detached (r / lb)^n on LN, 1 elsewhere; the normalised weight W̃ of LN tokens.
        high_decay: detached (ub / r)^{1/m} on HP, 1 elsewhere; the normalised weight W̃ of HP tokens.
    """

    surrogate: torch.Tensor
    low_region: torch.Tensor
    high_region: torch.Tensor
    low_decay: torch.Tensor
    high_decay: torch.Tensor


def check_trust_region(epsilon_low: float, epsilon_high: float) -> None:
    """Raise a `ValueError` unless 1 - epsilon_low > 0 and epsilon_high >= 0 (GRPOConfig's epsilon / epsilon_high)."""
    if not 0.0 <= epsilon_low < 1.0:
        raise ValueError(
            f"epsilon (epsilon_low) must lie in [0, 1) so that the lower trust-region edge 1 - epsilon is positive, "
            f"got {epsilon_low}."
        )
    if epsilon_high < 0.0:
        raise ValueError(f"epsilon_high must be >= 0, got {epsilon_high}.")


def check_dgpo_exponents(n: float, m: float) -> None:
    """Raise a `ValueError` unless n (`dgpo_n`) is finite and >= 0 and m (`dgpo_m`) is finite and >= 1."""

    def is_number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if not (is_number(n) and math.isfinite(n) and n >= 0):
        raise ValueError(
            f"dgpo_n must be a finite number >= 0 (0 disables the left-boundary decay), got {n!r}. "
            "The DGPO paper suggests 1 (default) or 2."
        )
    if not (is_number(m) and math.isfinite(m) and m >= 1):
        raise ValueError(
            f"dgpo_m must be a finite number >= 1 (1 gives GPPO's constant right branch), got {m!r}. "
            "The DGPO paper suggests 2 (default) or 3."
        )


def boundary_regions(
    log_ratio: torch.Tensor, advantages: torch.Tensor, epsilon_low: float, epsilon_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens beyond the trust region, as bool masks broadcast to one shape: (LN, HP).

    LN ("low, negative"): A < 0 and r < 1 - ε_low; HP ("high, positive"): A > 0 and r > 1 + ε_high. These are the
    tokens GRPO's hard clip cuts off (its `clip_ratio/low_*` and `clip_ratio/high_*` metrics) and the ones DGPO's
    soft clip decays. Shapes as in `dgpo_terms`; nothing is differentiated.
    """
    ratio = torch.exp(log_ratio.detach().clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    low = (advantages < 0) & (ratio < 1.0 - epsilon_low)
    high = (advantages > 0) & (ratio > 1.0 + epsilon_high)
    low, high = torch.broadcast_tensors(low, high)
    return low, high


def dgpo_terms(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    n: float = 1.0,
    m: float = 2.0,
) -> DGPOTerms:
    r"""DGPO's surrogate and region masks (DGPO paper, Eq. for W_DGPO in §3 / Fig. 2).

    Args:
        log_ratio: log π_θ - log π_old, shape (B, T) per token or (B, 1) per sequence; carries the gradient.
        advantages: broadcastable against `log_ratio`, typically (B, 1) or (B, T). Never differentiated.
        epsilon_low, epsilon_high: trust-region half-widths, lb = 1 - epsilon_low and ub = 1 + epsilon_high.
        n: left (LN) decay exponent, n >= 0; n = 0 disables the left decay.
        m: right (HP) root order, m >= 1; m = 1 gives GPPO's constant right branch.

    The decay factors are computed in log space from a detached log-ratio clamped to ±20, and only where their region
    applies: both exponents are <= 0 there and exactly 0 elsewhere, so the factors lie in (0, 1], never overflow, and
    the branch that `torch.where` does not select cannot produce a NaN gradient.
    """
    check_trust_region(epsilon_low, epsilon_high)
    check_dgpo_exponents(n, m)

    clamped = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(clamped)
    clamped_sg = clamped.detach()

    low_region, high_region = boundary_regions(clamped_sg, advantages, epsilon_low, epsilon_high)

    log_lb, log_ub = math.log(1.0 - epsilon_low), math.log(1.0 + epsilon_high)
    # (r / lb)^n on LN: exponent n · (log r - log lb) < 0 there, 0 elsewhere.
    low_decay = torch.exp(n * (torch.where(low_region, clamped_sg, log_lb) - log_lb))
    # (ub / r)^{1/m} on HP: exponent (log ub - log r) / m < 0 there, 0 elsewhere.
    high_decay = torch.exp((log_ub - torch.where(high_region, clamped_sg, log_ub)) / m)

    surrogate = ratio * low_decay * high_decay
    return DGPOTerms(surrogate, low_region, high_region, low_decay, high_decay)


def dgpo_surrogate(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    n: float = 1.0,
    m: float = 2.0,
) -> torch.Tensor:
    r"""The DGPO surrogate S (DGPO paper, W_DGPO of §3).

    Its value equals the log-prob gradient weight w(r) and d S / d log_ratio = S (for |log_ratio| <= 20). The per-token
    loss to minimise is `-advantages * S`. Shapes: `log_ratio` (B, T) or (B, 1); `advantages` broadcastable against it;
    the result has the broadcast shape. See `dgpo_terms` for the arguments and the region masks.
    """
    return dgpo_terms(log_ratio, advantages, epsilon_low, epsilon_high, n, m).surrogate


def ppo_clip_loss(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
) -> torch.Tensor:
    r"""PPO/GRPO's clipped per-token loss -min(r · A, clip(r, 1 - ε_low, 1 + ε_high) · A) (Schulman et al. 2017, Eq. 7).

    Shapes as in `dgpo_surrogate`. No dual clip and no `delta` cap. This is what `GRPOTrainer` computes for its
    default loss types; DGPO coincides with it inside the trust region.
    """
    check_trust_region(epsilon_low, epsilon_high)
    ratio = torch.exp(log_ratio)
    clipped = ratio.clamp(1.0 - epsilon_low, 1.0 + epsilon_high)
    return -torch.min(ratio * advantages, clipped * advantages)
