"""Token aggregation of per-token losses, honouring TRL's gradient-accumulation contract.

`GRPOTrainer` sets `loss_is_scaled_for_ga = True`: the loss a trainer returns for one micro-batch must already be
divided for gradient accumulation (Trainer does not divide it again, and DeepSpeed is told not to either). Every
aggregation below returns such a loss, so that summing the micro-batch losses of one optimizer step gives the
intended mean. The modes are GRPO's `loss_type` values, with their GRPO meaning:

| mode      | per micro-batch                                                              |
|-----------|------------------------------------------------------------------------------|
| `dapo`    | sum over tokens / (global token count of the generation batch, per process and per micro-batch) |
| `grpo`    | mean over sequences of each sequence's token mean, / GA                      |
| `bnpo`    | local token mean, / GA                                                       |
| `dr_grpo` | sum / (B · max_completion_length), / GA                                      |
| `luspo`   | mean over sequences of each sequence's token sum, / GA                       |

`dapo` is the only mode whose optimizer step is an exact token mean over the whole generation batch and every
process, independent of how the batch is split into micro-batches; it is the default.
"""

from __future__ import annotations

import torch


AGGREGATIONS = ("dapo", "grpo", "bnpo", "dr_grpo", "luspo")


def global_token_normalizer(
    num_tokens: torch.Tensor,
    num_processes: int,
    gradient_accumulation_steps: int,
    steps_per_generation: int,
    training: bool = True,
) -> torch.Tensor:
    """Turn a global token count of one generation batch into the divisor of one micro-batch's token sum.

    A generation batch of `num_tokens` loss tokens (all processes) is split into `steps_per_generation` micro-batches
    per process and `gradient_accumulation_steps` of them are summed into one optimizer step, so dividing each
    micro-batch sum by `num_tokens / num_processes * GA / steps_per_generation` makes one optimizer step (after DDP's
    mean over processes) a token mean over the tokens it saw. In eval mode a batch is neither split nor accumulated.
    `num_tokens` is clamped to >= 1 so that an all-masked batch yields a zero loss instead of a NaN.
    """
    normalizer = num_tokens.clamp(min=1.0) / num_processes
    if training:
        normalizer = normalizer * gradient_accumulation_steps / steps_per_generation
    return normalizer


def aggregate_token_loss(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "dapo",
    *,
    num_items_in_batch: torch.Tensor | None = None,
    num_processes: int = 1,
    gradient_accumulation_steps: int = 1,
    steps_per_generation: int = 1,
    max_completion_length: int | None = None,
    training: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aggregate a per-token loss of shape (B, T) (or (B, 1) per sequence, broadcast over tokens) into a scalar.

    Args:
        per_token_loss: (B, T) or (B, 1).
        mask: (B, T) float or bool, 1 on loss tokens.
        loss_type: one of `AGGREGATIONS`.
        num_items_in_batch: 0-d global loss-token count of the generation batch (required for `dapo`).
        max_completion_length: the constant of `dr_grpo` (required for it).

    Returns:
        `(loss, policy_loss)`: `loss` is already divided for gradient accumulation (the value to backpropagate);
        `policy_loss` is the detached value reported as the `policy_loss` metric, following GRPOTrainer (the
        undivided mean for the per-micro-batch modes, the normalised sum for `dapo`).
    """
    mask = mask.to(per_token_loss.dtype)
    accumulation = gradient_accumulation_steps if training else 1
    masked = per_token_loss * mask
    if loss_type == "dapo":
        if num_items_in_batch is None:
            raise ValueError("loss_type='dapo' needs the global token count `num_items_in_batch`.")
        normalizer = global_token_normalizer(
            num_items_in_batch, num_processes, gradient_accumulation_steps, steps_per_generation, training
        )
        loss = masked.sum() / normalizer
        return loss, loss.detach()
    if loss_type == "grpo":
        mean = (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        mean = masked.sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("loss_type='dr_grpo' needs `max_completion_length`.")
        mean = masked.sum() / (per_token_loss.size(0) * max_completion_length)
    elif loss_type == "luspo":
        mean = masked.sum(-1).mean()
    else:
        raise ValueError(f"Unknown token aggregation {loss_type!r}; choose one of {', '.join(AGGREGATIONS)}.")
    return mean / accumulation, mean.detach()
