"""`report_to="tensorboard"` records our metrics under TRL's names, offline (wandb and trackio use the same path)."""

import warnings

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scope_trl import DGPOConfig, DGPOTrainer, SCOPEConfig, SCOPETrainer
from scope_trl.apps.toy import contains_digit_reward

from .helpers import tiny_args


@pytest.mark.parametrize(
    ("trainer_class", "config_class", "extra", "tags"),
    [
        (DGPOTrainer, DGPOConfig, {}, ["train/policy_loss", "train/clip_ratio/region_mean", "train/reward"]),
        (
            SCOPETrainer,
            SCOPEConfig,
            {"steps_per_generation": None},
            ["train/policy_loss", "train/scope/opd_loss", "train/scope/frac_correct", "train/teacher/score_time"],
        ),
    ],
)
def test_tensorboard_records_the_metrics(
    trainer_class, config_class, extra, tags, toy_paths, toy_dataset, tmp_path, monkeypatch
):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))  # transformers 5 has no `logging_dir` field
    if trainer_class is SCOPETrainer:
        extra = {**extra, "teacher_model_name_or_path": toy_paths["teacher"]}
    args = tiny_args(tmp_path, config_class, report_to="tensorboard", max_steps=2, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = trainer_class(toy_paths["student"], contains_digit_reward, args=args, train_dataset=toy_dataset)
    trainer.train()
    trainer.accelerator.end_training()  # flushes the tensorboard writer (`trainer.end()` on transformers >= 5.18)
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    recorded = set(events.Tags()["scalars"])
    for tag in tags:
        assert tag in recorded, sorted(recorded)
        assert events.Scalars(tag)
    assert len(events.Scalars("train/policy_loss")) == 2  # every optimizer step; rewards only when generating


def _tensorboard_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "attempting to log a value" in r.getMessage()]


@pytest.mark.parametrize(("trainer_class", "config_class"), [(DGPOTrainer, DGPOConfig), (SCOPETrainer, SCOPEConfig)])
def test_a_batch_without_loss_tokens_warns_once_and_logs_no_undefined_metric(
    trainer_class, config_class, toy_paths, toy_dataset, tmp_path, monkeypatch, caplog
):
    """Every completion truncated under `mask_truncated_completions=True` trains nothing: one warning names the
    cause and the fix; the metrics of an empty set (entropy, clip ratios, DGPO's decay weights) are left out of the
    logs rather than logged as 0 (a collapsed policy's entropy) or None (which TensorBoard warns about at every step).
    """
    from transformers import AutoTokenizer

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    eos = AutoTokenizer.from_pretrained(toy_paths["student"]).eos_token_id
    extra = {"teacher_model_name_or_path": toy_paths["teacher"]} if trainer_class is SCOPETrainer else {}
    args = tiny_args(
        tmp_path,
        config_class,
        report_to="tensorboard",
        max_steps=2,
        steps_per_generation=2,
        max_completion_length=3,
        mask_truncated_completions=True,
        generation_kwargs={"suppress_tokens": [eos]},  # no completion ends: all are truncated
        **extra,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = trainer_class(toy_paths["student"], contains_digit_reward, args=args, train_dataset=toy_dataset)
    with pytest.warns(UserWarning, match="trains nothing") as caught, caplog.at_level("WARNING"):
        trainer.train()
    trainer.accelerator.end_training()
    untrainable = [str(w.message) for w in caught if "trains nothing" in str(w.message)]
    assert len(untrainable) == 1, untrainable
    assert "max_completion_length=3" in untrainable[0]
    assert "mask_truncated_completions=False" in untrainable[0]
    steps = [entry for entry in trainer.state.log_history if "loss" in entry and "train_runtime" not in entry]
    assert len(steps) == 2
    for entry in steps:
        assert entry["loss"] == 0.0
        assert None not in entry.values(), entry
        for undefined in ("entropy", "clip_ratio/region_mean", "dgpo/low_weight_mean"):
            assert undefined not in entry
        assert "policy_loss" in entry  # a defined 0
    assert not _tensorboard_warnings(caplog)


def test_dgpo_without_boundary_tokens_logs_no_none_for_tensorboard(
    toy_paths, toy_dataset, tmp_path, monkeypatch, caplog
):
    """On-policy DGPO (one step per generation batch) has no boundary token: its decay-weight means are undefined and
    left out; nothing reaches TensorBoard as None."""
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    args = tiny_args(tmp_path, DGPOConfig, report_to="tensorboard", max_steps=2, steps_per_generation=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DGPOTrainer(toy_paths["student"], contains_digit_reward, args=args, train_dataset=toy_dataset)
    with caplog.at_level("WARNING"):
        trainer.train()
    trainer.accelerator.end_training()
    steps = [entry for entry in trainer.state.log_history if "loss" in entry and "train_runtime" not in entry]
    assert all("dgpo/low_weight_mean" not in entry and "entropy" in entry for entry in steps), steps
    assert not _tensorboard_warnings(caplog)
