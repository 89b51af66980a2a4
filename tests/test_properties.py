"""Property-based tests (hypothesis) of the pure functions: SCOPE's weights, DGPO's surrogate, the Pass@k estimator.

Each property holds for every input hypothesis draws, not only for the oracle tables of `test_weights.py`,
`test_losses.py` and `test_evaluation.py`.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scope_trl.evaluation import pass_at_k
from scope_trl.losses import dgpo_surrogate, dgpo_terms
from scope_trl.weights import dual_path_weights


PROFILE = settings(max_examples=60, deadline=None)
log_probs = st.floats(min_value=-30.0, max_value=0.0, allow_nan=False)


@st.composite
def groups(draw):
    """(student ℓ_S, teacher ℓ_T, correct, valid, group size) for 1-4 groups of 1-8 rollouts."""
    group_size = draw(st.integers(1, 8))
    total = group_size * draw(st.integers(1, 4))
    student = draw(st.lists(log_probs, min_size=total, max_size=total))
    teacher = draw(st.lists(log_probs, min_size=total, max_size=total))
    correct = draw(st.lists(st.booleans(), min_size=total, max_size=total))
    valid = draw(st.lists(st.booleans(), min_size=total, max_size=total))
    as_tensor = torch.tensor
    return as_tensor(student), as_tensor(teacher), as_tensor(correct), as_tensor(valid), group_size


def subsets(correct, valid, group_size):
    """Boolean masks of every non-empty (group, path) subset."""
    for start in range(0, len(correct), group_size):
        in_group = torch.zeros_like(correct)
        in_group[start : start + group_size] = True
        for path in (correct, ~correct):
            members = in_group & path & valid
            if members.any():
                yield members


@PROFILE
@given(groups(), st.sampled_from(["mean", "sum"]), st.floats(0.25, 4.0), st.sampled_from(["paper", "reversed"]))
def test_weights_are_finite_non_negative_and_normalised_per_subset(batch, normalization, tau, direction):
    student, teacher, correct, valid, group_size = batch
    weights = dual_path_weights(
        student,
        teacher,
        correct,
        group_size,
        tau=tau,
        valid=valid,
        normalization=normalization,
        student_direction=direction,
        teacher_direction=direction,
    )
    assert torch.isfinite(weights).all() and (weights >= 0).all()
    assert (weights[~valid] == 0).all()
    for members in subsets(correct, valid, group_size):
        total = weights[members].sum().item()
        size = int(members.sum())
        expected = size if normalization == "mean" or size == 1 else 1.0  # a singleton weighs 1 either way
        assert total == pytest.approx(expected, rel=1e-5)


@PROFILE
@given(groups(), st.randoms(use_true_random=False))
def test_weights_are_invariant_to_the_order_within_a_group(batch, rng):
    student, teacher, correct, valid, group_size = batch
    weights = dual_path_weights(student, teacher, correct, group_size, valid=valid)
    order = []
    for start in range(0, len(correct), group_size):
        block = list(range(start, start + group_size))
        rng.shuffle(block)
        order += block
    order = torch.tensor(order)
    shuffled = dual_path_weights(student[order], teacher[order], correct[order], group_size, valid=valid[order])
    torch.testing.assert_close(shuffled, weights[order])


@PROFILE
@given(groups(), st.floats(-5.0, 5.0))
def test_weights_ignore_a_constant_added_to_a_subsets_log_probs(batch, shift):
    student, teacher, correct, valid, group_size = batch
    weights = dual_path_weights(student, teacher, correct, group_size, valid=valid)
    shifted = dual_path_weights(student + shift, teacher + shift, correct, group_size, valid=valid)
    torch.testing.assert_close(shifted, weights, rtol=1e-4, atol=1e-5)


@PROFILE
@given(st.lists(log_probs, min_size=2, max_size=8, unique=True), st.sampled_from(["paper", "reversed"]))
def test_weights_move_in_the_configured_direction_with_perplexity(values, direction):
    logps = torch.tensor(values)
    order = torch.argsort(logps)  # increasing ℓ = decreasing perplexity
    everyone = torch.ones(len(values), dtype=torch.bool)
    student = dual_path_weights(logps, logps, everyone, len(values), student_direction=direction)[order]
    teacher = dual_path_weights(logps, logps, ~everyone, len(values), teacher_direction=direction)[order]
    # Paper: the correct path favours HIGH student perplexity, the incorrect path LOW teacher perplexity.
    student_falls = bool((student[1:] <= student[:-1] + 1e-7).all())
    teacher_rises = bool((teacher[1:] >= teacher[:-1] - 1e-7).all())
    assert student_falls == (direction == "paper") or torch.allclose(student, student[0])
    assert teacher_rises == (direction == "paper") or torch.allclose(teacher, teacher[0])


# ------------------------------------------------------------------------------------------------------------------
# DGPO's surrogate
# ------------------------------------------------------------------------------------------------------------------

epsilons = st.floats(0.05, 0.5)
exponents = st.tuples(st.floats(0.0, 3.0), st.floats(1.0, 4.0))


@PROFILE
@given(epsilons, epsilons, exponents, st.sampled_from([-1.0, 1.0]))
def test_surrogate_is_continuous_at_both_edges(eps_low, eps_high, nm, sign):
    n, m = nm
    for edge in (math.log(1 - eps_low), math.log(1 + eps_high)):
        around = torch.tensor([edge - 1e-7, edge, edge + 1e-7], dtype=torch.float64)
        values = dgpo_surrogate(around, torch.tensor(sign, dtype=torch.float64), eps_low, eps_high, n, m)
        assert (values.max() - values.min()).item() < 1e-5


@PROFILE
@given(st.floats(-19.0, 19.0), st.sampled_from([-1.0, 1.0]), epsilons, epsilons, exponents)
def test_surrogate_gradient_equals_its_value(log_ratio, sign, eps_low, eps_high, nm):
    x = torch.tensor(log_ratio, dtype=torch.float64, requires_grad=True)
    value = dgpo_surrogate(x, torch.tensor(sign, dtype=torch.float64), eps_low, eps_high, *nm)
    (grad,) = torch.autograd.grad(value, x)
    assert grad.item() == pytest.approx(value.item(), rel=1e-9, abs=1e-300)


@PROFILE
@given(st.lists(st.floats(-19.0, 19.0), min_size=2, max_size=16), epsilons, epsilons, exponents)
def test_weight_is_monotone_within_each_region(points, eps_low, eps_high, nm):
    x = torch.tensor(sorted(points), dtype=torch.float64)
    for sign in (-1.0, 1.0):
        terms = dgpo_terms(x, torch.tensor(sign, dtype=torch.float64), eps_low, eps_high, *nm)
        for region in (terms.low_region, terms.high_region, ~(terms.low_region | terms.high_region)):
            weights = terms.surrogate[region]  # the surrogate's value is the gradient weight w(r)
            assert (weights[1:] >= weights[:-1] * (1 - 1e-12)).all()  # non-decreasing in r in every region


@PROFILE
@given(
    st.lists(st.floats(-100.0, 100.0), min_size=1, max_size=32),
    st.sampled_from([torch.float32, torch.bfloat16]),
    exponents,
)
def test_surrogate_and_gradient_are_finite_in_low_precision(points, dtype, nm):
    x = torch.tensor(points, dtype=dtype, requires_grad=True)
    advantages = torch.where(torch.arange(len(points)) % 2 == 0, 1.0, -1.0).to(dtype)
    loss = (-advantages * dgpo_surrogate(x, advantages, 0.2, 0.28, *nm)).sum()
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


# ------------------------------------------------------------------------------------------------------------------
# Pass@k
# ------------------------------------------------------------------------------------------------------------------


@PROFILE
@given(st.integers(1, 64).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_pass_at_k_is_monotone_in_k_and_in_c(nc):
    n, c = nc
    by_k = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert all(0.0 <= v <= 1.0 for v in by_k)
    assert all(b >= a - 1e-12 for a, b in zip(by_k, by_k[1:]))
    for k in {1, max(1, n // 2), n}:
        by_c = [pass_at_k(n, correct, k) for correct in range(n + 1)]
        assert all(b >= a - 1e-12 for a, b in zip(by_c, by_c[1:]))
        assert by_c[0] == 0.0 and by_c[-1] == 1.0
