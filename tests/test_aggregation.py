"""Token aggregation: each GRPO mode against hand-computed values, and the gradient-accumulation contract."""

import pytest
import torch

from scope_trl.aggregation import AGGREGATIONS, aggregate_token_loss, global_token_normalizer


LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # 5 loss tokens


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("dapo", (1 + 2 + 4 + 5 + 6) / 5),
        ("grpo", ((1 + 2) / 2 + (4 + 5 + 6) / 3) / 2),
        ("bnpo", (1 + 2 + 4 + 5 + 6) / 5),
        ("dr_grpo", (1 + 2 + 4 + 5 + 6) / (2 * 4)),
        ("luspo", ((1 + 2) + (4 + 5 + 6)) / 2),
    ],
)
def test_modes_hand_computed(mode, expected):
    loss, policy_loss = aggregate_token_loss(
        LOSS, MASK, mode, num_items_in_batch=torch.tensor(5.0), max_completion_length=4
    )
    assert loss.item() == pytest.approx(expected)
    assert policy_loss.item() == pytest.approx(expected)
    assert not policy_loss.requires_grad


@pytest.mark.parametrize("mode", ["grpo", "bnpo", "dr_grpo", "luspo"])
def test_per_micro_batch_modes_divide_by_accumulation_in_training_only(mode):
    kwargs = {"num_items_in_batch": torch.tensor(5.0), "max_completion_length": 4, "gradient_accumulation_steps": 4}
    train, reported = aggregate_token_loss(LOSS, MASK, mode, training=True, **kwargs)
    evaluation, _ = aggregate_token_loss(LOSS, MASK, mode, training=False, **kwargs)
    assert train.item() == pytest.approx(evaluation.item() / 4)
    assert reported.item() == pytest.approx(evaluation.item())  # the metric is the undivided mean, as in GRPO


def test_dapo_normalizer():
    count = torch.tensor(120.0)
    assert global_token_normalizer(count, 2, 4, 8, training=True).item() == pytest.approx(120 / 2 * 4 / 8)
    assert global_token_normalizer(count, 2, 4, 8, training=False).item() == pytest.approx(60)
    assert global_token_normalizer(torch.tensor(0.0), 1, 1, 1).item() == 1.0  # empty batch: 0 loss, not NaN


def test_dapo_optimizer_step_is_a_global_token_mean_whatever_the_split():
    """GA contract: summing the GA-scaled micro-batch losses of a step gives the token mean of the whole batch."""
    torch.manual_seed(0)
    per_token = torch.randn(8, 6, requires_grad=True)
    mask = (torch.rand(8, 6) > 0.3).float()
    total = mask.sum()
    reference = (per_token * mask).sum() / total
    (reference_grad,) = torch.autograd.grad(reference, per_token)
    for micro_batches in (1, 2, 4, 8):
        rows = torch.arange(8).chunk(micro_batches)
        step = sum(
            aggregate_token_loss(
                per_token[r],
                mask[r],
                "dapo",
                num_items_in_batch=total,
                gradient_accumulation_steps=micro_batches,
                steps_per_generation=micro_batches,
            )[0]
            for r in rows
        )
        (grad,) = torch.autograd.grad(step, per_token)
        torch.testing.assert_close(step, reference)
        torch.testing.assert_close(grad, reference_grad)


def test_dapo_with_several_steps_per_generation():
    """With steps_per_generation = 2 x GA, each optimizer step is a token mean over half the generation batch."""
    torch.manual_seed(1)
    per_token = torch.randn(8, 5)
    mask = torch.ones(8, 5)
    first_step = sum(
        aggregate_token_loss(
            per_token[r],
            mask[r],
            "dapo",
            num_items_in_batch=mask.sum(),
            gradient_accumulation_steps=2,
            steps_per_generation=4,
        )[0]
        for r in torch.arange(4).chunk(2)
    )
    torch.testing.assert_close(first_step, per_token[:4].mean())


def test_sequence_level_loss_broadcasts_over_tokens():
    per_sequence = torch.tensor([[2.0], [3.0]])
    loss, _ = aggregate_token_loss(per_sequence, MASK, "dapo", num_items_in_batch=torch.tensor(5.0))
    assert loss.item() == pytest.approx((2 * 2 + 3 * 3) / 5)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="num_items_in_batch"):
        aggregate_token_loss(LOSS, MASK, "dapo")
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate_token_loss(LOSS, MASK, "dr_grpo")
    with pytest.raises(ValueError, match="cispo"):
        aggregate_token_loss(LOSS, MASK, "cispo")
    assert set(AGGREGATIONS) == {"dapo", "grpo", "bnpo", "dr_grpo", "luspo"}
