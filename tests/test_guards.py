"""Guards against silent faults: non-finite updates and failing reward functions, in both trainers."""

import contextlib
import math
import warnings
from unittest import mock

import pytest
import torch
import transformers

from scope_trl import DGPOConfig, DGPOTrainer, SCOPETrainer
from scope_trl.apps.toy import contains_digit_reward
from scope_trl.guards import NonFiniteUpdateError, RewardFunctionError, checked_reward_function

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
def test_a_nonfinite_loss_stops_training_before_the_update(
    trainer_class, student_path, teacher_path, toy_dataset, tmp_path
):
    trainer = build(trainer_class, student_path, teacher_path, toy_dataset, tmp_path, steps_per_generation=1)
    poison_loss(trainer, {2})
    weights = {}
    trainer.add_callback(
        type(
            "Keep",
            (__import__("transformers").TrainerCallback,),
            {
                "on_step_end": lambda self, args, state, control, **kw: weights.update(snapshot(trainer.model)),
            },
        )()
    )
    name = "SCOPE" if trainer_class is SCOPETrainer else "DGPO"
    with pytest.raises(
        NonFiniteUpdateError,
        match=rf"{name} \(scope-trl\), optimizer step 2: the loss and the "
        r"gradient norm are not finite .*the update was not applied.*nonfinite_updates='skip'",
    ):
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


# With fp16 (no DeepSpeed) accelerate scales the loss with torch's GradScaler, which it creates on a GPU only. These
# tests give the trainer a real GradScaler on CPU, wired as accelerate wires it: the loss is scaled in backward, the
# gradients unscaled before the norm is read, and `scaler.step` calls the optimizer only when they are finite. No
# autocast: the models stay in float32, an overflow is injected into one step's gradients.


@contextlib.contextmanager
def fp16_loss_scaler(trainer, init_scale=2.0**8):
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    accelerator = trainer.accelerator
    accelerator.scaler, accelerator.native_amp = scaler, True
    with mock.patch.object(type(accelerator), "mixed_precision", new_callable=mock.PropertyMock, return_value="fp16"):
        yield scaler


def overflow_gradients(trainer, steps):
    """Make one gradient infinite on the optimizer steps in `steps` (1-based), as an fp16 overflow would; the loss
    stays finite."""
    parameter = next(p for p in trainer.model.parameters() if p.requires_grad)
    parameter.register_hook(lambda grad: grad + float("inf") if trainer.state.global_step + 1 in steps else grad)


def record_updates(trainer):
    """Parameters after each optimizer step, by step number (0: before training)."""
    weights = {0: snapshot(trainer.model)}
    trainer.add_callback(
        type(
            "Keep",
            (transformers.TrainerCallback,),
            {
                "on_step_end": lambda self, args, state, control, **kw: weights.update(
                    {state.global_step: snapshot(trainer.model)}
                ),
            },
        )()
    )
    return weights


def moved(weights, step):
    return any(not torch.equal(weights[step - 1][n], weights[step][n]) for n in weights[step])


# A fused optimizer takes the scaler's verdict into its own `step` (GradScaler calls it on an overflow too); any other
# is not called at all on an overflow. Both paths are tested.
OPTIMIZERS = ["adamw_torch_fused", "sgd"]


@pytest.mark.parametrize("optim", OPTIMIZERS)
def test_a_loss_scaler_overflow_is_the_scalers_to_skip(student_path, teacher_path, toy_dataset, tmp_path, optim):
    """Default nonfinite_updates='error': an overflow in fp16 gradients is routine, the scaler drops that update and
    halves its scale; training goes on, and the step is counted in nonfinite/scaler_skipped_steps."""
    trainer = build(DGPOTrainer, student_path, teacher_path, toy_dataset, tmp_path, max_steps=3, optim=optim)
    overflow_gradients(trainer, {2})
    weights = record_updates(trainer)
    with fp16_loss_scaler(trainer) as scaler, warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # not a skip of ours: no warning
        trainer.train()
    assert trainer.state.global_step == 3
    assert [moved(weights, step) for step in (1, 2, 3)] == [True, False, True]
    assert scaler.get_scale() == 2.0**7
    assert logged(trainer, "nonfinite/scaler_skipped_steps") == [0, 1, 1]
    assert logged(trainer, "nonfinite/skipped_steps") == [0, 0, 0]


def test_a_loss_scaler_does_not_hide_a_nonfinite_loss(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build(DGPOTrainer, student_path, teacher_path, toy_dataset, tmp_path, max_steps=3)
    poison_loss(trainer, {2})
    weights = record_updates(trainer)
    with fp16_loss_scaler(trainer), pytest.raises(NonFiniteUpdateError, match="optimizer step 2: the loss"):
        trainer.train()
    assert trainer.state.global_step == 1 and not any(
        not torch.equal(weights[1][n], p.detach()) for n, p in trainer.model.named_parameters()
    )


@pytest.mark.parametrize("optim", OPTIMIZERS)
def test_a_skipped_step_that_the_scaler_also_skips_does_not_drop_the_next(
    student_path, teacher_path, toy_dataset, tmp_path, optim
):
    """nonfinite_updates='skip' with a loss scaler: a NaN loss at step 2 makes NaN gradients, so `scaler.step` does not
    call an unfused optimizer's `step`; the skip decided for step 2 must not carry over to step 3."""
    trainer = build(
        DGPOTrainer,
        student_path,
        teacher_path,
        toy_dataset,
        tmp_path,
        max_steps=3,
        nonfinite_updates="skip",
        optim=optim,
    )
    poison_loss(trainer, {2})
    weights = record_updates(trainer)
    with fp16_loss_scaler(trainer), pytest.warns(UserWarning, match="optimizer step 2"):
        trainer.train()
    assert [moved(weights, step) for step in (1, 2, 3)] == [True, False, True]
    assert logged(trainer, "nonfinite/skipped_steps") == [0, 1, 1]


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


def refused_reward(trainer, message: str) -> None:
    """Training stops at the first reward batch with a `RewardFunctionError` matching `message`."""
    with pytest.raises(RewardFunctionError, match=message):
        trainer.train()


def nan_reward(completions, **kwargs):
    return [float("nan") if i % 2 else 1.0 for i in range(len(completions))]


@pytest.mark.parametrize("trainer_class", [DGPOTrainer, SCOPETrainer])
def test_a_reward_function_that_raises_names_itself_and_a_completion(
    trainer_class, student_path, teacher_path, toy_dataset, tmp_path
):
    trainer = build(trainer_class, student_path, teacher_path, toy_dataset, tmp_path, reward_funcs=exploding_reward)
    message = r"'exploding_reward' raised KeyError: 'solution' \(on a batch of \d+ completions; the first one: ['\"]"
    refused_reward(trainer, message + r".*['\"]\)")


def test_a_non_numeric_reward_is_refused_with_its_position(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build(DGPOTrainer, student_path, teacher_path, toy_dataset, tmp_path, reward_funcs=text_reward)
    message = r"'text_reward' returned str 'correct' at position 15 \(completion ['\"].*['\"]\)"
    refused_reward(trainer, message + "; each reward must be a number or None")


def test_checked_reward_function_passes_numbers_none_and_nan_through():
    checked = checked_reward_function(lambda completions, **kw: [1, 0.5, None, float("nan"), True], "mixed")
    values = checked(completions=list("abcde"))
    assert values[:3] == [1, 0.5, None] and math.isnan(values[3]) and values[4] is True
    with pytest.raises(RewardFunctionError, match="returned NoneType None; it must return a list"):
        checked_reward_function(lambda completions, **kw: None, "nothing")(completions=["a"])


def test_nan_rewards_mean_no_verdict(student_path, teacher_path, toy_dataset, tmp_path):
    """NaN from a reward is what None is: DGPO (TRL's nansum over functions) trains on, SCOPE excludes the rollout."""
    dgpo = build(
        DGPOTrainer, student_path, teacher_path, toy_dataset, tmp_path / "d", reward_funcs=nan_reward, max_steps=1
    )
    dgpo.train()
    assert all(math.isfinite(v) for v in logged(dgpo, "loss"))
    scope = build(
        SCOPETrainer,
        student_path,
        teacher_path,
        toy_dataset,
        tmp_path / "s",
        reward_funcs=nan_reward,
        max_steps=1,
        steps_per_generation=None,
    )
    scope.train()
    assert logged(scope, "scope/frac_excluded") == [0.5] and all(math.isfinite(v) for v in logged(scope, "loss"))
