"""Bad input gets a clear error before training, or a documented safe behaviour (the bad-input table
of docs/reliability.md names each case and its test, here or in the test files it points to)."""

import dataclasses
import re
import warnings

import pytest
from trl import GRPOConfig

from scope_trl import DGPOConfig, DGPOTrainer, SCOPEConfig, SCOPETrainer
from scope_trl.apps.toy import boxed_answer_reward, contains_digit_reward

from . import test_dgpo_config, test_scope_config
from .helpers import build_trainer, logged, snapshot, tiny_args


CPU = {"use_cpu": True, "bf16": False, "report_to": "none"}


build = build_trainer


# --------------------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config_class", "invalid_values"),
    [(SCOPEConfig, test_scope_config.INVALID_VALUES), (DGPOConfig, test_dgpo_config.INVALID_VALUES)],
)
def test_every_added_config_field_has_an_invalid_value_test(config_class, invalid_values):
    grpo_fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    added = {f.name for f in dataclasses.fields(config_class)} - grpo_fields
    tested = {key for kwargs, _ in invalid_values for key in kwargs}
    assert added, config_class
    assert added <= tested, f"fields of {config_class.__name__} without an invalid-value test: {added - tested}"


@pytest.mark.parametrize("config_class", [SCOPEConfig, DGPOConfig])
def test_output_dir_is_the_first_positional_argument(config_class):
    """As in every TRL config (and as the trainers' default config relies on): `Config("out")` names the output."""
    config = config_class("out", **CPU)
    assert config.output_dir == "out" and config.nonfinite_updates == "error"


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------


def test_a_missing_student_or_teacher_path_is_named(student_path, teacher_path, toy_dataset, tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(
        FileNotFoundError,
        match=r"The student '.*no-such-model' \(model\) does not exist on this "
        r"machine.*Hub id of the form",
    ):
        build(DGPOTrainer, missing, toy_dataset, tmp_path)
    with pytest.raises(
        FileNotFoundError,
        match=r"The teacher '.*no-such-model' \(teacher_model / "
        r"teacher_model_name_or_path\) does not exist",
    ):
        build(SCOPETrainer, student_path, toy_dataset, tmp_path, teacher=missing)
    weights = str(next(p for p in __import__("pathlib").Path(teacher_path).iterdir() if p.suffix == ".safetensors"))
    with pytest.raises(ValueError, match=r"The teacher '.*\.safetensors' .* is a file; pass the directory"):
        build(SCOPETrainer, student_path, toy_dataset, tmp_path, teacher=weights)


def test_a_hub_teacher_that_cannot_load_offline_is_named(student_path, toy_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        OSError,
        match=r"Could not load the teacher 'no-org/no-such-teacher' "
        r"\(teacher_model_name_or_path\): HF_HUB_OFFLINE is set",
    ):
        build(SCOPETrainer, student_path, toy_dataset, tmp_path, teacher="no-org/no-such-teacher")


def test_a_hub_student_that_cannot_load_offline_is_named(toy_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        OSError, match=r"Could not load the student 'no-org/no-such-student' \(model\): HF_HUB_OFFLINE"
    ):
        build(DGPOTrainer, "no-org/no-such-student", toy_dataset, tmp_path)


@pytest.mark.parametrize("trainer_class", [DGPOTrainer, SCOPETrainer])
@pytest.mark.parametrize("fault", ["output_dir_under_a_file", "push_to_hub_offline"])
def test_a_failure_after_the_student_loaded_is_not_blamed_on_it(
    trainer_class, fault, student_path, teacher_path, toy_dataset, tmp_path, monkeypatch
):
    """Only an error raised while loading a model is reported as "Could not load the student": creating the output
    directory or the Hub repository fails with its own error."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "a_file").write_text("")
    if fault == "output_dir_under_a_file":
        overrides, expected, named = {"output_dir": str(tmp_path / "a_file" / "out")}, NotADirectoryError, "a_file"
    else:
        overrides, expected, named = {"push_to_hub": True, "hub_model_id": "someone/model"}, OSError, "offline mode"
    with pytest.raises(expected) as raised:
        build(trainer_class, student_path, toy_dataset, tmp_path, teacher=teacher_path, **overrides)
    assert "Could not load" not in str(raised.value) and named in str(raised.value)


# --------------------------------------------------------------------------------------------------------------------
# Datasets and reward functions
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trainer_class", [DGPOTrainer, SCOPETrainer])
def test_a_dataset_without_a_prompt_column_is_refused(
    trainer_class, student_path, teacher_path, toy_dataset, tmp_path
):
    renamed = toy_dataset.rename_column("prompt", "question")
    with pytest.raises(
        ValueError,
        match=r"The training dataset has no 'prompt' column \(its columns: \['question', "
        r"'solution'\]\).*rename_column\('question', 'prompt'\)",
    ):
        build(trainer_class, student_path, renamed, tmp_path, teacher=teacher_path)


def test_an_evaluation_dataset_without_a_prompt_column_is_refused(student_path, toy_dataset, tmp_path):
    message = r"The evaluation\['held_out'\] dataset has no 'prompt' column"
    with pytest.raises(ValueError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DGPOTrainer(
            model=student_path,
            reward_funcs=contains_digit_reward,
            args=tiny_args(tmp_path, DGPOConfig, eval_strategy="steps", eval_steps=1),
            train_dataset=toy_dataset,
            eval_dataset={"held_out": toy_dataset.rename_column("prompt", "text")},
        )


@pytest.mark.parametrize("trainer_class", [DGPOTrainer, SCOPETrainer])
def test_a_reward_needing_a_missing_column_is_refused(
    trainer_class, student_path, teacher_path, toy_dataset, tmp_path
):
    with pytest.raises(
        ValueError,
        match=r"The reward function 'boxed_answer_reward' needs the argument\(s\) "
        r"\['solution'\], .* the training dataset has only \['prompt'\]",
    ):
        build(
            trainer_class,
            student_path,
            toy_dataset.remove_columns("solution"),
            tmp_path,
            reward_funcs=boxed_answer_reward,
            teacher=teacher_path,
        )


def test_a_reward_asking_for_the_prompt_column_by_name_is_refused(student_path, toy_dataset, tmp_path):
    """GRPOTrainer passes the prompt as `prompts`, never as `prompt`, although `prompt` is a column."""

    def reward(completions, prompt, **kwargs):
        return [0.0] * len(completions)

    with pytest.raises(ValueError, match=r"The reward function 'reward' needs the argument\(s\) \['prompt'\]"):
        build(DGPOTrainer, student_path, toy_dataset, tmp_path, reward_funcs=reward)


def test_reward_arguments_with_defaults_or_trl_names_need_no_column(student_path, toy_dataset, tmp_path):
    def reward(prompts, completions, completion_ids, trainer_state, answer=None, **kwargs):
        return [0.0] * len(completions)

    build(DGPOTrainer, student_path, toy_dataset.remove_columns("solution"), tmp_path, reward_funcs=reward)


def no_verdict_reward(completions, **kwargs):
    return [None] * len(completions)


@pytest.mark.parametrize("trainer_class", [DGPOTrainer, SCOPETrainer])
def test_every_verifier_call_returning_none_trains_nothing(
    trainer_class, student_path, teacher_path, toy_dataset, tmp_path
):
    """No verdict anywhere: TRL warns; DGPO's advantages are 0 (TRL's nansum gives reward 0 to every rollout of the
    group), SCOPE excludes every rollout and says once that the run trains nothing, naming the verifier. Either way
    the step is finite and moves no weight."""
    trainer = build(
        trainer_class,
        student_path,
        toy_dataset,
        tmp_path,
        reward_funcs=no_verdict_reward,
        teacher=teacher_path,
        max_steps=2,
        steps_per_generation=1,
    )
    before = snapshot(trainer.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    after = snapshot(trainer.model)
    assert all((before[name] == after[name]).all() for name in before)
    assert logged(trainer, "loss") == [0.0, 0.0]
    untrainable = [str(w.message) for w in caught if "trains nothing" in str(w.message)]
    if trainer_class is SCOPETrainer:
        assert logged(trainer, "scope/frac_excluded") == [1.0, 1.0]
        assert len(untrainable) == 1 and "verifier 'no_verdict_reward' returned None" in untrainable[0], untrainable
    else:  # TRL warns about the missing rewards; the batch has loss tokens, with zero advantages
        assert not untrainable


def test_every_completion_truncated_trains_nothing_in_dgpo(student_path, toy_dataset, tmp_path):
    """With `mask_truncated_completions`, a batch of only truncated completions has no loss token: the loss is 0, not
    0/0 (SCOPE's case is in tests/test_scope_robustness.py)."""
    trainer = build(
        DGPOTrainer,
        student_path,
        toy_dataset,
        tmp_path,
        reward_funcs=contains_digit_reward,
        max_completion_length=2,
        mask_truncated_completions=True,
        max_steps=2,
    )
    before = snapshot(trainer.model)
    with pytest.warns(UserWarning, match="every completion reached max_completion_length=2"):
        trainer.train()
    assert logged(trainer, "completions/clipped_ratio") == [1.0]  # one generation batch; no stop within 2 tokens
    assert all((before[name] == param).all() for name, param in trainer.model.named_parameters())
    assert logged(trainer, "loss") == [0.0, 0.0]


# --------------------------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------------------------


def test_an_unknown_recipe_key_is_named_with_the_nearest_field(tmp_path, capsys):
    from scope_trl.cli import main
    from scope_trl.scripts.common import parse_script_arguments
    from scope_trl.scripts.scope import make_parser

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("teacher_modle_name_or_path: some/teacher\nscope_tau: 1.0\nno_such_option_at_all: 3\n")
    message = (
        r"Unknown key\(s\) in the config file .*recipe.yaml: 'teacher_modle_name_or_path' \(did you mean "
        r"'teacher_model_name_or_path'\?\), 'no_such_option_at_all'\. .*--help` lists them"
    )
    with pytest.raises(ValueError, match=message):
        parse_script_arguments(make_parser(prog="scope-trl scope"), ["--config", str(recipe)])
    for launch in ([], ["--accelerate_config", "cpu"]):  # in process; before `accelerate launch` starts any process
        assert main(["scope", *launch, f"--config={recipe}"]) == 1
        error = capsys.readouterr().err
        assert re.match(f"scope-trl scope: error: {message}", error) and error.count("\n") == 1, error
        with pytest.raises(ValueError, match=message):
            main(["--debug", "scope", *launch, "--config", str(recipe)])


@pytest.mark.parametrize("trainer_class", [DGPOTrainer, SCOPETrainer])
def test_a_tracker_that_is_not_installed_is_refused_before_any_model_loads(
    trainer_class, student_path, teacher_path, toy_dataset, tmp_path, monkeypatch
):
    """transformers would refuse it when building callbacks, after the student loaded ("TrackioCallback requires
    trackio to be installed"); the recipes log to trackio, which no default dependency installs."""
    import sys
    from unittest import mock

    from transformers import PreTrainedModel

    monkeypatch.setitem(sys.modules, "trackio", None)  # not importable, whether installed here or not
    refuse_loading = mock.patch.object(
        PreTrainedModel, "from_pretrained", side_effect=AssertionError("a model loaded")
    )
    message = (
        r"report_to includes 'trackio', but the trackio package is not installed: pip install -e \"\.\[trackio\]\""
    )
    with refuse_loading, pytest.raises(ValueError, match=message):
        build(trainer_class, student_path, toy_dataset, tmp_path, teacher=teacher_path, report_to="trackio")
