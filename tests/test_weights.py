"""SCOPE's DPAW weights against a worked example of the paper's Eq. 4-5, computed by hand, and oracles derived from it."""

import math

import pytest
import torch

from scope_trl.weights import dual_path_weights


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
