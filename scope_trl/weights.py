r"""SCOPE's Dual-Path Adaptive Weighting (DPAW) and per-token advantages, as pure tensor functions.

SCOPE (Zheng, Ma, Liang et al., "SCOPE: Signal-Calibrated On-Policy Distillation Enhancement with Dual-Path Adaptive
Weighting", arXiv 2604.10688) routes each rollout of a prompt group by its verifier reward and weights it within its
subset of the group:

    MLE path (Eq. 4):  w_i^stu = softmax_{j ∈ Ω_c}( -ℓ_S(j) / τ )_i  ∝ PPL_S(y_i)^{+1/τ}
    OPD path (Eq. 5):  w_i^tea = softmax_{j ∈ Ω_w}( +ℓ_T(j) / τ )_i  ∝ PPL_T(y_i)^{-1/τ}

with ℓ the mean token log-probability of the rollout's completion (the student's old log-probs π_old for ℓ_S, teacher
log-probs on the student's tokens for ℓ_T). The project's decisions (docs/scope.md, Decisions): the
paper's directions by default, one flag per path to reverse it (the released scripts reverse the student path), mean-1
scaling within each subset by default (the official code; a singleton gets 1.0), the paper's sum-1 form as an option,
no gradient through the weights.

From the weights to what the loss reads: `path_weights` (DPAW with routing, 1 per OPD-path rollout without),
`distillation_signal` (log π_T − log π_old per token) and `per_token_advantages` (the weight on the MLE path, weight ×
signal on the OPD path). `SCOPETrainer` gathers the inputs over processes and calls these.
"""

from __future__ import annotations

import torch


DIRECTIONS = ("paper", "reversed")
NORMALIZATIONS = ("mean", "sum")


def _subset_softmax_weights(
    logits: torch.Tensor, members: torch.Tensor, normalization: str, use_weights: bool
) -> torch.Tensor:
    """Softmax of `logits` over the `members` of each row (one row = one prompt group); 0 outside the subset.

    Shapes: `logits` and `members` (num_groups, group_size). Rows without members stay all-zero.
    """
    if not use_weights:  # the "w/o DPAW" ablations: every member weighs 1, whatever the normalisation
        return members.to(logits.dtype)
    masked = torch.where(members, logits, torch.full_like(logits, float("-inf")))
    weights = torch.softmax(masked, dim=-1)
    weights = torch.where(members, weights, torch.zeros_like(weights))  # rows without members: NaN -> 0
    if normalization == "mean":
        weights = weights * members.sum(-1, keepdim=True)
    return weights


@torch.no_grad()
def dual_path_weights(
    student_seq_logps: torch.Tensor,
    teacher_seq_logps: torch.Tensor,
    correct: torch.Tensor,
    group_size: int,
    tau: float = 1.0,
    valid: torch.Tensor | None = None,
    student_direction: str = "paper",
    teacher_direction: str = "paper",
    normalization: str = "mean",
    use_student_weights: bool = True,
    use_teacher_weights: bool = True,
) -> torch.Tensor:
    r"""DPAW weight of every rollout (SCOPE paper, Eq. 4 and Eq. 5).

    Args:
        student_seq_logps: (N,) mean token log-prob ℓ_S of each rollout under the student's sampling policy π_old.
        teacher_seq_logps: (N,) mean token log-prob ℓ_T of each rollout under the teacher. Only read on incorrect
            rollouts (any value, NaN included, may stand elsewhere).
        correct: (N,) bool, the verifier's verdict.
        group_size: G; rows `[k·G, (k+1)·G)` are the rollouts of prompt k (N must be a multiple of G).
        tau: DPAW temperature, > 0.
        valid: (N,) bool or None (all valid). Invalid rollouts (e.g. the verifier returned None) get weight 0 and are
            not members of any subset.
        student_direction / teacher_direction: `"paper"` (the MLE path favours high student perplexity; the OPD
            path favours low teacher perplexity) or `"reversed"`.
        normalization: `"mean"` (weights of a subset average to 1: ×|subset|, the official code) or `"sum"` (the
            paper's softmax, summing to 1). A singleton subset gets 1.0 either way.
        use_student_weights / use_teacher_weights: False gives weight 1.0 to every member of that path.

    Returns:
        (N,) float weights, detached: w^stu on correct valid rows, w^tea on incorrect valid rows, 0 on invalid rows.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}.")
    for name, direction in (("student_direction", student_direction), ("teacher_direction", teacher_direction)):
        if direction not in DIRECTIONS:
            raise ValueError(f"{name} must be one of {DIRECTIONS}, got {direction!r}.")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}.")
    total = student_seq_logps.numel()
    if group_size < 1 or total % group_size:
        raise ValueError(f"The number of rollouts ({total}) must be a multiple of group_size ({group_size}).")
    for name, tensor in (("teacher_seq_logps", teacher_seq_logps), ("correct", correct)):
        if tensor.shape != student_seq_logps.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected {tuple(student_seq_logps.shape)}.")

    valid = torch.ones_like(correct, dtype=torch.bool) if valid is None else valid.bool()
    correct = correct.bool()
    shape = (-1, group_size)
    correct_members = (correct & valid).view(shape)
    incorrect_members = (~correct & valid).view(shape)

    dtype = torch.promote_types(student_seq_logps.dtype, torch.float32)
    student_sign = -1.0 if student_direction == "paper" else 1.0  # paper: logit -ℓ_S / τ, high PPL_S wins
    teacher_sign = 1.0 if teacher_direction == "paper" else -1.0  # paper: logit +ℓ_T / τ, low PPL_T wins
    student_logits = student_sign * student_seq_logps.to(dtype).view(shape) / tau
    teacher_logits = teacher_sign * teacher_seq_logps.to(dtype).view(shape) / tau

    student_weights = _subset_softmax_weights(student_logits, correct_members, normalization, use_student_weights)
    teacher_weights = _subset_softmax_weights(teacher_logits, incorrect_members, normalization, use_teacher_weights)
    return (student_weights + teacher_weights).reshape(-1)


def distillation_signal(
    teacher_logps: torch.Tensor, old_per_token_logps: torch.Tensor, clip: float | None = None
) -> torch.Tensor:
    r"""The per-token distillation signal log π_T(y_t) − log π_old(y_t) on the student's sampled tokens (SCOPE paper,
    Eq. 3: the negative of the sampled-token reverse-KL estimate), bounded to ±`clip` when given
    (`distillation_advantage_clip`, off by default as in the paper).

    Shapes: `teacher_logps`, `old_per_token_logps` and the result (B, T).
    """
    signal = teacher_logps - old_per_token_logps
    return signal if clip is None else signal.clamp(-clip, clip)


def path_weights(
    student_seq_logps: torch.Tensor,
    teacher_seq_logps: torch.Tensor,
    mle: torch.Tensor,
    opd: torch.Tensor,
    group_size: int,
    routing: bool = True,
    **options,
) -> torch.Tensor:
    r"""The weight of every rollout on its path: DPAW's (`dual_path_weights`, with `options` its keyword arguments:
    `tau`, the directions, the normalisation, `use_*_weights`) with routing; 1 for every OPD-path rollout without
    (plain OPD); 0 on excluded rollouts either way.

    Shapes: every tensor argument and the result (N,), N a multiple of `group_size`; `mle` and `opd` bool, disjoint.
    """
    if not routing:
        return opd.float()
    return dual_path_weights(student_seq_logps, teacher_seq_logps, mle, group_size, valid=mle | opd, **options)


def per_token_advantages(
    weights: torch.Tensor, signal: torch.Tensor, mle: torch.Tensor, opd: torch.Tensor
) -> torch.Tensor:
    r"""SCOPE's per-token advantage of each rollout (SCOPE paper, Eq. 6): its weight w^stu on every token of an
    MLE-path rollout (the loss is −w^stu · log π_θ), w^tea · (log π_T − log π_old) on an OPD-path rollout, 0 on an
    excluded one. Constant over the micro-batches and iterations of a generation batch.

    Shapes: `weights`, `mle`, `opd` (B,); `signal` (`distillation_signal`) and the result (B, T).
    """
    distilled = weights.unsqueeze(1) * signal
    reinforced = weights.unsqueeze(1).expand_as(distilled)
    return torch.where(mle.unsqueeze(1), reinforced, torch.where(opd.unsqueeze(1), distilled, 0.0))
