"""DGPO's surrogate against a hand-computed oracle table, by value and by autograd gradient."""

import math

import pytest
import torch

from scope_trl.losses import dgpo_surrogate, dgpo_terms, ppo_clip_loss


RATIOS = [0.5, 0.8, 0.9, 1.0, 1.1, 1.3, 2.0, 5.0]
# The oracle table, defaults n = 1, m = 2, eps = 0.2 / 0.2: log-prob weight w for A = +1 and A = -1.
ORACLE_W_POS = [0.5, 0.8, 0.9, 1.0, 1.1, 1.2489996, 1.5491933, 2.4494897]
ORACLE_W_NEG = [0.3125, 0.8, 0.9, 1.0, 1.1, 1.3, 2.0, 5.0]


def weight_and_grad(ratios, advantage, dtype=torch.float64, **kwargs):
    """Surrogate value w, normalised weight w / r, loss -A·w, and d loss / d log r, for each ratio."""
    log_ratio = torch.tensor([math.log(r) for r in ratios], dtype=dtype).unsqueeze(0).requires_grad_(True)
    advantages = torch.full((1, 1), float(advantage), dtype=dtype)
    surrogate = dgpo_surrogate(log_ratio, advantages, **kwargs)
    loss = -advantages * surrogate
    (grad,) = torch.autograd.grad(loss.sum(), log_ratio)
    return surrogate.detach()[0], loss.detach()[0], grad[0]


@pytest.mark.parametrize(("advantage", "expected_w"), [(1.0, ORACLE_W_POS), (-1.0, ORACLE_W_NEG)])
def test_oracle_table_values_and_gradients(advantage, expected_w):
    w, loss, grad = weight_and_grad(RATIOS, advantage)
    expected_w = torch.tensor(expected_w, dtype=torch.float64)
    torch.testing.assert_close(w, expected_w, atol=1e-7, rtol=0)
    torch.testing.assert_close(loss, -advantage * expected_w, atol=1e-7, rtol=0)
    # The gradient of the loss w.r.t. log pi_theta is -A·w: the forward value *is* the log-prob gradient weight.
    torch.testing.assert_close(grad, -advantage * expected_w, atol=1e-7, rtol=0)


def test_oracle_normalised_weights():
    w_pos, _, _ = weight_and_grad(RATIOS, 1.0)
    w_neg, _, _ = weight_and_grad(RATIOS, -1.0)
    ratios = torch.tensor(RATIOS, dtype=torch.float64)
    torch.testing.assert_close(
        w_pos / ratios,
        torch.tensor([1, 1, 1, 1, 1, 0.9607689, 0.7745967, 0.4898979], dtype=torch.float64),
        atol=1e-7,
        rtol=0,
    )
    torch.testing.assert_close(w_neg / ratios, torch.tensor([0.625, 1, 1, 1, 1, 1, 1, 1], dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "advantage", "ratios", "expected"),
    [
        ({"n": 2, "m": 2}, -1.0, [0.5], [0.1953125]),
        ({"n": 3, "m": 3}, 1.0, [1.3, 2.0, 5.0], [1.2657735, 1.6868653, 3.1072325]),
        ({"n": 3, "m": 3}, -1.0, [0.5], [0.1220703]),
        ({"m": 1}, 1.0, [1.21, 1.3, 2.0, 5.0, 100.0], [1.2] * 5),
    ],
)
def test_oracle_other_settings(kwargs, advantage, ratios, expected):
    w, _, grad = weight_and_grad(ratios, advantage, **kwargs)
    torch.testing.assert_close(w, torch.tensor(expected, dtype=torch.float64), atol=1e-7, rtol=0)
    torch.testing.assert_close(grad, -advantage * w)


def test_m1_equals_gppo_right_branch():
    """GPPO keeps the clipped forward value (1 + eps) and the gradient: w = ub on HP tokens, for any r > ub."""
    ratios = [1.3, 1.5, 3.0, 10.0]
    w, _, grad = weight_and_grad(ratios, 1.0, m=1.0, epsilon_high=0.28)
    log_ratio = torch.tensor([math.log(r) for r in ratios], dtype=torch.float64).requires_grad_(True)
    ratio = log_ratio.exp()
    gppo = (1.28 / ratio.detach()) * ratio  # GPPO: clipped value, gradient preserved
    (gppo_grad,) = torch.autograd.grad(-gppo.sum(), log_ratio)
    torch.testing.assert_close(w, gppo.detach())
    torch.testing.assert_close(grad, gppo_grad)


def test_n0_disables_left_decay():
    w, _, _ = weight_and_grad([0.1, 0.5, 0.79], -1.0, n=0.0)
    torch.testing.assert_close(w, torch.tensor([0.1, 0.5, 0.79], dtype=torch.float64))


@pytest.mark.parametrize(("edge", "advantage"), [(0.8, -1.0), (1.2, 1.0)])
@pytest.mark.parametrize("n_m", [(1.0, 2.0), (2.0, 3.0), (0.5, 1.5)])
def test_value_and_gradient_continuous_at_the_edges(edge, advantage, n_m):
    n, m = n_m
    delta = 1e-7
    below, above = edge * (1 - delta), edge * (1 + delta)
    w, _, grad = weight_and_grad([below, edge, above], advantage, n=n, m=m)
    torch.testing.assert_close(w, torch.full((3,), edge, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, torch.full((3,), -advantage * edge, dtype=torch.float64), atol=1e-6, rtol=0)


def test_strict_inequalities_and_regions():
    ratios = [0.5, 0.8, 1.0, 1.2, 1.5]
    log_ratio = torch.tensor([math.log(r) for r in ratios], dtype=torch.float64).unsqueeze(0)
    pos = dgpo_terms(log_ratio, torch.ones(1, 1, dtype=torch.float64))
    neg = dgpo_terms(log_ratio, -torch.ones(1, 1, dtype=torch.float64))
    assert pos.high_region.tolist() == [[False, False, False, False, True]]
    assert not pos.low_region.any()  # reverse-left (A > 0, r < lb) stays plain PG
    assert neg.low_region.tolist() == [[True, False, False, False, False]]
    assert not neg.high_region.any()  # reverse-right (A < 0, r > ub): plain PG, no dual clip
    zero = dgpo_terms(log_ratio, torch.zeros(1, 1, dtype=torch.float64))
    assert not (zero.low_region.any() or zero.high_region.any())
    for terms in (pos, neg):
        for decay in (terms.low_decay, terms.high_decay):
            assert not decay.requires_grad and (decay > 0).all() and (decay <= 1).all()


def test_no_dual_clip_on_reverse_right():
    _, loss, grad = weight_and_grad([3.5, 10.0], -1.0)
    torch.testing.assert_close(loss, torch.tensor([3.5, 10.0], dtype=torch.float64))
    torch.testing.assert_close(grad, torch.tensor([3.5, 10.0], dtype=torch.float64))


def test_inside_trust_region_equals_grpo_loss_and_gradient():
    torch.manual_seed(0)
    log_ratio = torch.empty(6, 9, dtype=torch.float64).uniform_(math.log(0.81), math.log(1.19))
    advantages = torch.randn(6, 1, dtype=torch.float64)
    for surrogate_loss in ("dgpo", "grpo"):
        lr = log_ratio.clone().requires_grad_(True)
        if surrogate_loss == "dgpo":
            loss = -advantages * dgpo_surrogate(lr, advantages)
        else:
            loss = ppo_clip_loss(lr, advantages)
        grad = torch.autograd.grad(loss.sum(), lr)[0]
        if surrogate_loss == "dgpo":
            dgpo_loss, dgpo_grad = loss.detach(), grad
    torch.testing.assert_close(dgpo_loss, loss.detach())
    torch.testing.assert_close(dgpo_grad, grad)


def test_at_ratio_one_equals_grpo_everywhere():
    """On-policy (r = 1 exactly), DGPO and GRPO coincide for every advantage, value and gradient."""
    advantages = torch.tensor([[-2.0], [-0.5], [0.0], [0.7], [3.0]])
    log_ratio = torch.zeros(5, 4, requires_grad=True)
    dgpo = -advantages * dgpo_surrogate(log_ratio, advantages)
    grad_dgpo = torch.autograd.grad(dgpo.sum(), log_ratio)[0]
    grpo = ppo_clip_loss(log_ratio, advantages)
    grad_grpo = torch.autograd.grad(grpo.sum(), log_ratio)[0]
    torch.testing.assert_close(dgpo, grpo)
    torch.testing.assert_close(grad_dgpo, grad_grpo)


def test_boundary_tokens_keep_a_gradient_where_grpo_drops_it():
    log_ratio = torch.tensor([[math.log(0.5)], [math.log(2.0)]], requires_grad=True)
    advantages = torch.tensor([[-1.0], [1.0]])
    grad_dgpo = torch.autograd.grad((-advantages * dgpo_surrogate(log_ratio, advantages)).sum(), log_ratio)[0]
    grad_grpo = torch.autograd.grad(ppo_clip_loss(log_ratio, advantages).sum(), log_ratio)[0]
    assert (grad_grpo == 0).all()
    assert (grad_dgpo != 0).all()


def test_per_token_advantages_broadcast():
    torch.manual_seed(1)
    log_ratio = torch.randn(3, 5) * 0.5
    advantages = torch.randn(3, 5)
    per_token = dgpo_surrogate(log_ratio, advantages)
    for t in range(5):  # a (B, T) advantage equals column-by-column (B, 1) calls
        torch.testing.assert_close(
            per_token[:, t : t + 1], dgpo_surrogate(log_ratio[:, t : t + 1], advantages[:, t : t + 1])
        )
    sequence_level = dgpo_surrogate(log_ratio[:, :1], torch.ones(3, 5))  # (B, 1) ratio against (B, T) advantages
    assert sequence_level.shape == (3, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n_m", [(1.0, 2.0), (3.0, 3.0), (0.0, 1.0)])
def test_finite_at_extreme_ratios(dtype, n_m):
    n, m = n_m
    values = [-100.0, -80.0, -50.0, -44.5, -20.0, 0.0, 20.0, 44.5, 50.0, 80.0, 100.0]
    log_ratio = torch.tensor(values, dtype=dtype).repeat(3, 1).requires_grad_(True)
    advantages = torch.tensor([[1.0], [-1.0], [0.0]], dtype=dtype)
    surrogate = dgpo_surrogate(log_ratio, advantages, n=n, m=m)
    (grad,) = torch.autograd.grad((-advantages * surrogate).sum(), log_ratio)
    assert torch.isfinite(surrogate).all()
    assert torch.isfinite(grad).all()


def test_gradient_matches_finite_differences():
    """d S / d log r = S, confirmed numerically on random points in every region (float64)."""
    torch.manual_seed(2)
    log_ratio = (torch.randn(4, 50, dtype=torch.float64) * 0.8).requires_grad_(True)
    advantages = torch.randn(4, 1, dtype=torch.float64)
    surrogate = dgpo_surrogate(log_ratio, advantages, n=2.0, m=3.0)
    (grad,) = torch.autograd.grad(surrogate.sum(), log_ratio)
    torch.testing.assert_close(grad, surrogate.detach())
    # The decay factor is held fixed (stop-gradient), so the finite difference is of r · sg(decay).
    eps = 1e-6
    decay = (surrogate / log_ratio.exp()).detach()
    fd = ((log_ratio + eps).exp() - (log_ratio - eps).exp()) / (2 * eps) * decay
    torch.testing.assert_close(grad, fd.detach(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1.0}, "dgpo_n"),
        ({"m": 0.5}, "dgpo_m"),
        ({"epsilon_low": 1.0}, "epsilon"),
        ({"epsilon_high": -0.1}, "epsilon_high"),
    ],
)
def test_invalid_parameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dgpo_surrogate(torch.zeros(1, 1), torch.ones(1, 1), **kwargs)
