"""`report_to="tensorboard"` records our metrics under TRL's names, offline (wandb and trackio use the same path)."""

import warnings

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scope_trl import DGPOConfig, DGPOTrainer, SCOPEConfig, SCOPETrainer
from scope_trl.toy import contains_digit_reward

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
