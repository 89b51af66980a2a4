"""SCOPE's routing: which path each rollout of a generation batch trains on, and the statistics of the routes.

Vocabulary, used the same way in options, metrics, code and docs:

- the **verdict** is the verifier's: a rollout is *correct* or *incorrect* (or has none: the verifier returned None);
- the **route** is the path a rollout trains on: the **MLE path** (weighted maximum likelihood, SCOPE's reinforcement
  of correct rollouts; option `mle_coef`, metric `scope/mle_loss`), the **OPD path** (on-policy distillation from the
  teacher; option `opd_coef`, metric `scope/opd_loss`), or **excluded** (no term, weight subset, count or metric sees
  it). With routing, correct rollouts take the MLE path and incorrect ones the OPD path; with `routing=False` (plain
  OPD) every rollout that can be trained on takes the OPD path, whatever its verdict.

A rollout is excluded when it has no loss token (truncated under `mask_truncated_completions`, empty, fully
tool-masked), when, with routing, its verdict is None, or when the teacher's score of one of its tokens is not finite
(`nonfinite_teacher_scores="exclude"`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch


# Route of a rollout, as stored per row of the generation batch (`scope_route`) and named in the completions table.
EXCLUDED, MLE, OPD = 0, 1, 2
ROUTE_NAMES = {EXCLUDED: "excluded", MLE: "mle", OPD: "opd"}


def route_rollouts(
    verdicts: torch.Tensor, has_tokens: torch.Tensor, routing: bool, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(mle, opd)`: (N,) booleans, the rollouts on each path before the teacher scored them.

    Args:
        verdicts: (N,) the verifier's rewards; NaN where it returned None.
        has_tokens: (N,) bool, whether the rollout has at least one loss token.
        routing: False for plain OPD: the verifier is not consulted.
        threshold: the reward at or above which a verdict is *correct* (`correctness_threshold`).
    """
    if not routing:
        return torch.zeros_like(has_tokens), has_tokens
    judged = has_tokens & ~torch.isnan(verdicts)
    correct = judged & (verdicts >= threshold)
    return correct, judged & ~correct


def route_ids(mle: torch.Tensor, opd: torch.Tensor) -> torch.Tensor:
    """(N,) int64 route of each rollout (`MLE`, `OPD` or `EXCLUDED`) from the two path booleans."""
    return torch.where(mle, MLE, torch.where(opd, OPD, EXCLUDED))


@dataclasses.dataclass
class RowSummary:
    """What SCOPE needs to know about each row of a generation batch from every process: the weights need the
    sequence log-probs of the whole prompt group, the loss the global token counts, the metrics everything.

    Every field is a (B,) tensor over this process's rows; `gathered` makes them (N,) over every process's rows, in
    process order, with one collective for all fields.
    """

    student_seq_logps: torch.Tensor  # mean log π_old over the row's loss tokens (ℓ_S)
    teacher_seq_logps: torch.Tensor  # mean log π_T over the same tokens (ℓ_T; 0 where the teacher did not score)
    nonfinite_teacher: torch.Tensor  # 1.0 where the teacher gave a loss token a non-finite score
    mle: torch.Tensor  # 1.0 on the MLE path
    opd: torch.Tensor  # 1.0 on the OPD path, before non-finite teacher scores take rollouts off it
    tokens: torch.Tensor  # loss tokens of the row
    teacher_kl_sum: torch.Tensor  # Σ (log π_old − log π_T) over the loss tokens: the teacher-KL metric's numerator
    signal_mean: torch.Tensor  # mean distillation signal over the loss tokens (completions table)
    score_seconds: torch.Tensor  # this process's teacher scoring time, on each of its rows
    offload_seconds: torch.Tensor  # this process's teacher offload time, on each of its rows

    def gathered(self, gather: Callable[[torch.Tensor], torch.Tensor]) -> RowSummary:
        """The summary of every process's rows; `gather` concatenates a (B, F) tensor over processes (accelerate's)."""
        fields = [getattr(self, field.name).float() for field in dataclasses.fields(self)]
        return RowSummary(*gather(torch.stack(fields, dim=1)).unbind(1))


def routing_statistics(
    group_size: int, mle: torch.Tensor, opd: torch.Tensor, weights: torch.Tensor, rows: RowSummary
) -> dict[str, torch.Tensor]:
    """The routing and weight metrics of a generation batch as 0-d tensors (NaN for an empty subset), from global
    (N,) tensors, the same on every process; no host transfer here (docs/metrics.md defines each)."""
    nan = torch.tensor(float("nan"), device=weights.device)

    def subset_mean(values, members):
        return torch.where(members, values, 0.0).sum() / members.sum()  # 0 / 0 = NaN for an empty subset

    def subset_extreme(values, members, reduce, fill):
        return torch.where(members.any(), reduce(torch.where(members, values, fill)), nan)

    student_ppl, teacher_ppl = torch.exp(-rows.student_seq_logps), torch.exp(-rows.teacher_seq_logps)
    # The metric names say "correct" / "incorrect" for the two paths: their names since the first release.
    return {
        "scope/frac_correct": mle.float().mean(),
        "scope/frac_incorrect": opd.float().mean(),
        "scope/frac_excluded": (~(mle | opd)).float().mean(),
        "scope/frac_groups_all_correct": mle.view(-1, group_size).all(1).float().mean(),
        "scope/frac_groups_all_incorrect": opd.view(-1, group_size).all(1).float().mean(),
        "scope/student_ppl_correct_mean": subset_mean(student_ppl, mle),
        "scope/teacher_ppl_incorrect_mean": subset_mean(teacher_ppl, opd),
        "scope/student_weight_max": subset_extreme(weights, mle, torch.max, float("-inf")),
        "scope/student_weight_min": subset_extreme(weights, mle, torch.min, float("inf")),
        "scope/teacher_weight_max": subset_extreme(weights, opd, torch.max, float("-inf")),
        "scope/teacher_weight_min": subset_extreme(weights, opd, torch.min, float("inf")),
        # Sampled-token reverse-KL estimate on the OPD path: mean of log π_old − log π_T over its tokens.
        "scope/teacher_kl": (rows.teacher_kl_sum * opd).sum() / (rows.tokens * opd).sum(),
    }
