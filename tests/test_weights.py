"""SCOPE's DPAW weights against a worked example of the paper's Eq. 4-5, computed by hand, and oracles derived from it;
routing, the per-token advantages and the routing statistics as pure functions."""

import math
from dataclasses import fields

import pytest
import torch

from scope_trl.routing import EXCLUDED, MLE, OPD, RowSummary, route_ids, route_rollouts, routing_statistics
from scope_trl.weights import distillation_signal, dual_path_weights, path_weights, per_token_advantages


STUDENT_PPL = [1.2, 2.6, 3.8]  # correct rollouts
TEACHER_PPL = [4.5, 2.9, 1.7]  # incorrect rollouts


def example(**kwargs):
    """One group of 6: three correct rollouts with the student PPLs, three incorrect with the teacher PPLs."""
    student = torch.tensor([-math.log(p) for p in STUDENT_PPL] + [-0.1, -0.2, -0.3], dtype=torch.float64)
    teacher = torch.tensor([float("nan")] * 3 + [-math.log(p) for p in TEACHER_PPL], dtype=torch.float64)
    correct = torch.tensor([True] * 3 + [False] * 3)
    weights = dual_path_weights(student, teacher, correct, group_size=6, **kwargs)
    return weights[:3], weights[3:]


@pytest.mark.parametrize(
    ("kwargs", "correct_expected", "incorrect_expected"),
    [
        ({"normalization": "sum"}, [0.1579, 0.3421, 0.5000], [0.1924, 0.2985, 0.5092]),
        ({"normalization": "mean"}, [0.4737, 1.0263, 1.5000], [0.5771, 0.8954, 1.5275]),
        (
            {"normalization": "sum", "student_direction": "reversed", "teacher_direction": "reversed"},
            [0.5626, 0.2597, 0.1777],
            [0.4945, 0.3187, 0.1868],
        ),
        (
            {"student_direction": "reversed", "teacher_direction": "reversed"},
            [1.6879, 0.7790, 0.5330],
            [1.4835, 0.9560, 0.5604],
        ),
        ({"normalization": "sum", "tau": 0.5}, [0.0636, 0.2986, 0.6378], [0.0960, 0.2312, 0.6728]),
        ({"normalization": "sum", "tau": 2.0}, [0.2352, 0.3462, 0.4186], [0.2582, 0.3217, 0.4201]),
        ({"use_student_weights": False, "use_teacher_weights": False}, [1, 1, 1], [1, 1, 1]),
        ({"use_student_weights": False, "use_teacher_weights": False, "normalization": "sum"}, [1, 1, 1], [1, 1, 1]),
    ],
)
def test_worked_example(kwargs, correct_expected, incorrect_expected):
    correct_w, incorrect_w = example(**kwargs)
    torch.testing.assert_close(correct_w, torch.tensor(correct_expected, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(incorrect_w, torch.tensor(incorrect_expected, dtype=torch.float64), atol=1e-4, rtol=0)


def test_printed_paper_values_within_tolerance():
    correct_w, incorrect_w = example(normalization="sum")
    printed = torch.tensor([0.158, 0.342, 0.500, 0.192, 0.298, 0.510], dtype=torch.float64)
    torch.testing.assert_close(torch.cat([correct_w, incorrect_w]), printed, atol=2e-3, rtol=0)


def test_each_flag_only_touches_its_own_path():
    base_c, base_w = example()
    c, w = example(student_direction="reversed")
    torch.testing.assert_close(w, base_w)
    assert c.argmax() == base_c.argmin()  # the ordering flips
    c, w = example(use_teacher_weights=False)
    torch.testing.assert_close(c, base_c)
    torch.testing.assert_close(w, torch.ones(3, dtype=torch.float64))


def test_singletons_all_correct_and_all_incorrect_groups():
    lp = torch.tensor([-0.5, -1.0, -2.0, -0.3, -0.7, -0.9, -1.1, -1.3])
    teacher = torch.tensor([-1.0, -2.0, -3.0, -0.4, -0.6, -0.8, -1.0, -1.2])
    # group 0: one correct (singleton) + three incorrect; group 1: all correct
    correct = torch.tensor([True, False, False, False, True, True, True, True])
    for normalization in ("mean", "sum"):
        w = dual_path_weights(lp, teacher, correct, group_size=4, normalization=normalization)
        assert w[0].item() == pytest.approx(1.0)  # singleton subset
        subset_sum = w[1:4].sum().item()
        assert subset_sum == pytest.approx(3.0 if normalization == "mean" else 1.0)
        assert w[4:].sum().item() == pytest.approx(4.0 if normalization == "mean" else 1.0)
        # group 1 is all correct: the paper direction favours the highest student perplexity (lowest mean log-prob)
        assert w[4:].argmax().item() == 3
    # all incorrect: the teacher path favours the lowest teacher perplexity
    w = dual_path_weights(lp[:4], teacher[:4], torch.zeros(4, dtype=torch.bool), group_size=4)
    assert w.argmax().item() == 3 and w.sum().item() == pytest.approx(4.0)  # teacher log-prob -0.4: lowest PPL_T


def test_invalid_rows_get_zero_and_leave_the_subsets():
    lp = torch.tensor([-0.5, -1.0, -2.0, -0.3])
    teacher = torch.tensor([-1.0, -2.0, -3.0, -0.4])
    correct = torch.tensor([False, False, False, True])
    valid = torch.tensor([True, False, True, False])
    w = dual_path_weights(lp, teacher, correct, group_size=4, valid=valid)
    assert w[1] == 0 and w[3] == 0
    reference = dual_path_weights(lp[[0, 2]], teacher[[0, 2]], correct[[0, 2]], group_size=2)
    torch.testing.assert_close(w[[0, 2]], reference)
    off = dual_path_weights(lp, teacher, correct, group_size=4, valid=valid, use_teacher_weights=False)
    assert off.tolist() == [1.0, 0.0, 1.0, 0.0]  # weights off: 1 on the path, 0 stays 0 for invalid rows


def test_groups_are_independent_and_no_gradient_flows():
    torch.manual_seed(0)
    lp = torch.randn(12, requires_grad=True)
    teacher = torch.randn(12)
    correct = torch.rand(12) > 0.5
    w = dual_path_weights(lp, teacher, correct, group_size=4)
    assert not w.requires_grad
    for g in range(3):
        rows = slice(4 * g, 4 * g + 4)
        torch.testing.assert_close(w[rows], dual_path_weights(lp[rows], teacher[rows], correct[rows], group_size=4))


def test_extreme_log_probs_stay_finite():
    lp = torch.tensor([-1e4, -0.01, -500.0, -1e-6])
    w = dual_path_weights(lp, lp, torch.tensor([True, True, False, False]), group_size=4, tau=0.01)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w, torch.tensor([2.0, 0.0, 0.0, 2.0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tau": 0.0}, "tau must be > 0"),
        ({"student_direction": "up"}, "student_direction"),
        ({"teacher_direction": "down"}, "teacher_direction"),
        ({"normalization": "max"}, "normalization"),
        ({"group_size": 3}, "multiple of group_size"),
    ],
)
def test_invalid_arguments(kwargs, message):
    args = {"group_size": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        dual_path_weights(torch.zeros(4), torch.zeros(4), torch.zeros(4, dtype=torch.bool), **args)


# ---------------------------------------------------------------------------------------------------------------------
# From weights to per-token advantages, without a trainer (the trainer calls exactly these: scope_trl.scope_trainer)
# ---------------------------------------------------------------------------------------------------------------------


def test_path_weights_are_dpaw_with_routing_and_one_per_distilled_rollout_without():
    """The worked example's group with an excluded rollout added: DPAW on the two paths, 0 on the excluded one; plain
    OPD (routing=False) weighs every OPD-path rollout 1."""
    student = torch.tensor([-math.log(p) for p in STUDENT_PPL] + [-0.1, -0.2, -0.3, -0.4], dtype=torch.float64)
    teacher = torch.tensor([0.0] * 3 + [-math.log(p) for p in TEACHER_PPL] + [0.0], dtype=torch.float64)
    mle = torch.tensor([True] * 3 + [False] * 4)
    opd = torch.tensor([False] * 3 + [True] * 3 + [False])
    weights = path_weights(student, teacher, mle, opd, group_size=7, normalization="sum")
    expected = [0.1579, 0.3421, 0.5000, 0.1924, 0.2985, 0.5092, 0.0]  # test_worked_example's, and 0
    torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float64), atol=1e-4, rtol=0)
    plain = path_weights(student, teacher, torch.zeros(7, dtype=torch.bool), mle | opd, group_size=7, routing=False)
    assert plain.tolist() == [1.0] * 6 + [0.0]


def test_per_token_advantages_by_route():
    """MLE path: the weight on every token; OPD path: weight × (log π_T − log π_old) per token; excluded: 0."""
    teacher = torch.tensor([[-1.0, -2.0], [-0.5, -0.1], [-3.0, -3.0]])
    old = torch.tensor([[-1.5, -1.0], [-0.2, -0.6], [-1.0, -1.0]])
    signal = distillation_signal(teacher, old)
    torch.testing.assert_close(signal, torch.tensor([[0.5, -1.0], [-0.3, 0.5], [-2.0, -2.0]]))
    weights = torch.tensor([0.8, 1.5, 0.0])
    mle, opd = torch.tensor([True, False, False]), torch.tensor([False, True, False])
    advantages = per_token_advantages(weights, signal, mle, opd)
    torch.testing.assert_close(advantages, torch.tensor([[0.8, 0.8], [-0.45, 0.75], [0.0, 0.0]]))
    clipped = distillation_signal(teacher, old, clip=0.4)
    torch.testing.assert_close(clipped, torch.tensor([[0.4, -0.4], [-0.3, 0.4], [-0.4, -0.4]]))


@pytest.mark.parametrize("routing", [True, False])
def test_route_rollouts(routing):
    """Verdicts 1, 0, None and a rollout without loss tokens: the MLE path takes the correct one, the OPD path the
    incorrect one (every rollout with tokens without routing); None and token-less rollouts are excluded."""
    verdicts = torch.tensor([1.0, 0.0, float("nan"), 1.0])
    has_tokens = torch.tensor([True, True, True, False])
    mle, opd = route_rollouts(verdicts, has_tokens, routing=routing, threshold=0.5)
    if routing:
        assert mle.tolist() == [True, False, False, False] and opd.tolist() == [False, True, False, False]
    else:
        assert mle.tolist() == [False] * 4 and opd.tolist() == [True, True, True, False]
    assert route_ids(mle, opd).tolist() == ([MLE, OPD, EXCLUDED, EXCLUDED] if routing else [OPD, OPD, OPD, EXCLUDED])


def test_row_summary_gathers_named_fields_in_one_collective():
    calls = []

    def gather(tensor):  # two processes with the same rows: the concatenation, in process order
        calls.append(tensor.shape)
        return torch.cat([tensor, tensor + 10])

    local = RowSummary(*[torch.tensor([float(i), float(i) + 0.5]) for i in range(len(fields(RowSummary)))])
    gathered = local.gathered(gather)
    assert calls == [(2, len(fields(RowSummary)))]
    for index, field in enumerate(fields(RowSummary)):
        assert getattr(gathered, field.name).tolist() == [index, index + 0.5, index + 10, index + 10.5], field.name


def test_routing_statistics_against_hand_values():
    """One group of 4: two MLE-path rollouts, one OPD-path, one excluded."""
    mle = torch.tensor([True, True, False, False])
    opd = torch.tensor([False, False, True, False])
    weights = torch.tensor([0.5, 1.5, 1.0, 0.0])
    rows = RowSummary(
        student_seq_logps=torch.tensor([-1.0, -2.0, -0.5, 0.0]),
        teacher_seq_logps=torch.tensor([0.0, 0.0, -0.25, 0.0]),
        nonfinite_teacher=torch.zeros(4),
        mle=mle.float(),
        opd=opd.float(),
        tokens=torch.tensor([3.0, 2.0, 4.0, 0.0]),
        teacher_kl_sum=torch.tensor([9.0, 9.0, -1.0, 9.0]),
        signal_mean=torch.zeros(4),
        score_seconds=torch.zeros(4),
        offload_seconds=torch.zeros(4),
    )
    stats = {name: value.item() for name, value in routing_statistics(4, mle, opd, weights, rows).items()}
    assert stats["scope/frac_correct"] == 0.5 and stats["scope/frac_incorrect"] == 0.25
    assert stats["scope/frac_excluded"] == 0.25
    assert stats["scope/frac_groups_all_correct"] == 0.0 and stats["scope/frac_groups_all_incorrect"] == 0.0
    assert stats["scope/student_ppl_correct_mean"] == pytest.approx((math.e + math.e**2) / 2)
    assert stats["scope/teacher_ppl_incorrect_mean"] == pytest.approx(math.exp(0.25))
    assert (stats["scope/student_weight_min"], stats["scope/student_weight_max"]) == (0.5, 1.5)
    assert stats["scope/teacher_weight_min"] == stats["scope/teacher_weight_max"] == 1.0
    assert stats["scope/teacher_kl"] == -0.25  # the OPD path's summed log π_old − log π_T over its 4 tokens
    empty = routing_statistics(4, torch.zeros(4, dtype=torch.bool), opd, weights, rows)
    assert math.isnan(empty["scope/student_weight_max"]) and math.isnan(empty["scope/student_ppl_correct_mean"])
