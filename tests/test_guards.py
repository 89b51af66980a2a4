"""Guards against silent faults (issue 12 §1): non-finite updates and failing reward functions, in both trainers."""

import math

import pytest
import torch

from scope_trl import DGPOConfig, DGPOTrainer, SCOPETrainer
from scope_trl.guards import NonFiniteUpdateError, RewardFunctionError, checked_reward_function
from scope_trl.toy import contains_digit_reward

from .helpers import build_trainer, logged, snapshot


def build(trainer_class, student_path, teacher_path, dataset, tmp_path, reward_funcs=contains_digit_reward, **kw):
    return build_trainer(trainer_class, student_path, dataset, tmp_path, reward_funcs, teacher=teacher_path, **kw)


def poison_loss(trainer, steps):
    """Make the per-token loss NaN on the optimizer steps in `steps` (1-based)."""
    original = trainer._per_token_policy_loss

    def loss(batch, inputs):
        value = original(batch, inputs)
        return value * float("nan") if trainer.state.global_step + 1 in steps else value

    trainer._per_token_policy_loss = loss


@pytest.mark.parametrize("trainer_class", [DGPOTrainer, SCOPETrainer])
def test_a_nonfinite_loss_stops_training_before_the_update(trainer_class, student_path, teacher_path, toy_dataset,
                                                           tmp_path):  # fmt: skip
    trainer = build(trainer_class, student_path, teacher_path, toy_dataset, tmp_path, steps_per_generation=1)
    poison_loss(trainer, {2})
    weights = {}
    trainer.add_callback(type("Keep", (__import__("transformers").TrainerCallback,), {
        "on_step_end": lambda self, args, state, control, **kw: weights.update(snapshot(trainer.model)),
    })())  # fmt: skip
    name = "SCOPE" if trainer_class is SCOPETrainer else "DGPO"
    with pytest.raises(NonFiniteUpdateError, match=rf"{name} \(scope-trl\), optimizer step 2: the loss and the "
                       r"gradient norm are not finite .*the update was not applied.*nonfinite_updates='skip'"):  # fmt: skip
        trainer.train()
    assert trainer.state.global_step == 1
    after = snapshot(trainer.model)
    assert all(torch.equal(weights[n], after[n]) for n in after)  # step 2 changed nothing
    assert all(torch.isfinite(p).all() for p in after.values())


def test_skip_mode_drops_the_update_and_keeps_training(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build(DGPOTrainer, student_path, teacher_path, toy_dataset, tmp_path, nonfinite_updates="skip")
    poison_loss(trainer, {1, 2, 3, 4})  # every update is poisoned: the weights must not move at all
    before = snapshot(trainer.model)
    with pytest.warns(UserWarning, match="this update is skipped"):
        trainer.train()
    assert trainer.state.global_step == 4
    assert all(torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    assert logged(trainer, "nonfinite/skipped_steps") == [1, 2, 3, 4]


def test_skip_mode_only_drops_the_bad_step(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build(DGPOTrainer, student_path, teacher_path, toy_dataset, tmp_path, nonfinite_updates="skip")
    poison_loss(trainer, {2})
    before = snapshot(trainer.model)
    with pytest.warns(UserWarning, match="optimizer step 2"):
        trainer.train()
    assert logged(trainer, "nonfinite/skipped_steps") == [0, 1, 1, 1]
    assert any(not torch.equal(before[n], p.detach()) for n, p in trainer.model.named_parameters())
    assert all(math.isfinite(v) for v in logged(trainer, "grad_norm")[2:])


def test_nonfinite_updates_option_is_validated(tmp_path):
    with pytest.raises(ValueError, match="nonfinite_updates must be one of 'error', 'skip', got 'ignore'"):
        DGPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", nonfinite_updates="ignore")


# ------------------------------------------------------------------------------------------------------------------
# Reward functions
# ------------------------------------------------------------------------------------------------------------------


def exploding_reward(completions, **kwargs):
    raise KeyError("solution")


def text_reward(completions, **kwargs):
    return [1.0] * (len(completions) - 1) + ["correct"]


def nan_reward(completions, **kwargs):
    return [float("nan") if i % 2 else 1.0 for i in range(len(completions))]


@pytest.mark.parametrize("trainer_class", [DGPOTrainer, SCOPETrainer])
def test_a_reward_function_that_raises_names_itself_and_a_completion(trainer_class, student_path, teacher_path,
                                                                     toy_dataset, tmp_path):  # fmt: skip
    trainer = build(trainer_class, student_path, teacher_path, toy_dataset, tmp_path, reward_funcs=exploding_reward)
    with pytest.raises(RewardFunctionError, match=r"'exploding_reward' raised KeyError: 'solution' \(on a batch of "
                       r"\d+ completions; the first one: ['\"].*['\"]\)"):  # fmt: skip
        trainer.train()


def test_a_non_numeric_reward_is_refused_with_its_position(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build(DGPOTrainer, student_path, teacher_path, toy_dataset, tmp_path, reward_funcs=text_reward)
    with pytest.raises(RewardFunctionError, match=r"'text_reward' returned str 'correct' at position 15 \(completion "
                       r"['\"].*['\"]\); each reward must be a number or None"):  # fmt: skip
        trainer.train()


def test_checked_reward_function_passes_numbers_none_and_nan_through():
    checked = checked_reward_function(lambda completions, **kw: [1, 0.5, None, float("nan"), True], "mixed")
    values = checked(completions=list("abcde"))
    assert values[:3] == [1, 0.5, None] and math.isnan(values[3]) and values[4] is True
    with pytest.raises(RewardFunctionError, match="returned NoneType None; it must return a list"):
        checked_reward_function(lambda completions, **kw: None, "nothing")(completions=["a"])


def test_nan_rewards_mean_no_verdict(student_path, teacher_path, toy_dataset, tmp_path):
    """NaN from a reward is what None is: DGPO (TRL's nansum over functions) trains on, SCOPE excludes the rollout."""
    dgpo = build(DGPOTrainer, student_path, teacher_path, toy_dataset, tmp_path / "d", reward_funcs=nan_reward,
                 max_steps=1)  # fmt: skip
    dgpo.train()
    assert all(math.isfinite(v) for v in logged(dgpo, "loss"))
    scope = build(SCOPETrainer, student_path, teacher_path, toy_dataset, tmp_path / "s", reward_funcs=nan_reward,
                  max_steps=1, steps_per_generation=None)  # fmt: skip
    scope.train()
    assert logged(scope, "scope/frac_excluded") == [0.5] and all(math.isfinite(v) for v in logged(scope, "loss"))
