"""DGPOConfig: defaults, validation with messages that say what to do, and CLI parsing."""

import pytest
from trl import GRPOConfig, TrlParser

from scope_trl import DGPOConfig


CPU = {"use_cpu": True, "bf16": False, "report_to": "none"}


def make(**kwargs):
    return DGPOConfig(output_dir="unused", **CPU, **kwargs)


def test_defaults_follow_the_paper_and_grpo():
    config = make()
    assert isinstance(config, GRPOConfig)
    assert (config.dgpo_n, config.dgpo_m) == (1.0, 2.0)
    assert (config.epsilon, config.epsilon_high) == (0.2, None)  # epsilon_high falls back to epsilon, as in GRPO
    assert config.loss_type == "dapo"
    assert config.dgpo_is_on_policy  # GRPO's defaults are on-policy; the trainer warns about it


def test_off_policy_settings():
    assert not make(steps_per_generation=4).dgpo_is_on_policy
    assert not make(num_iterations=2).dgpo_is_on_policy
    assert not make(gradient_accumulation_steps=2, steps_per_generation=8).dgpo_is_on_policy
    assert make(gradient_accumulation_steps=4, steps_per_generation=2).dgpo_is_on_policy


# One bad value (at least) for every field DGPOConfig adds to GRPOConfig (tests/test_bad_input.py checks the
# coverage), and for the GRPO fields whose meaning DGPO restricts.
INVALID_VALUES = [
    ({"nonfinite_updates": "ignore"}, "nonfinite_updates must be one of 'error', 'skip'"),
    ({"dgpo_n": "1"}, "dgpo_n must be a finite number >= 0 .*got '1'"),
    ({"dgpo_n": -0.5}, "dgpo_n must be a finite number >= 0"),
    ({"dgpo_n": float("nan")}, "dgpo_n"),
    ({"dgpo_m": 0.9}, "dgpo_m must be a finite number >= 1"),
    ({"dgpo_m": float("inf")}, "dgpo_m"),
    ({"epsilon": 1.0}, "epsilon .* must lie in \\[0, 1\\)"),
    ({"epsilon_high": -0.1}, "epsilon_high must be >= 0"),
    ({"loss_type": "cispo"}, "loss_type='cispo' is not supported by DGPO.*'dapo'"),
    ({"loss_type": "sapo"}, "only selects the token aggregation"),
    ({"loss_type": "vespo"}, "use GRPOTrainer"),
    ({"loss_type": "nonsense"}, "loss_type='nonsense'"),
    ({"delta": 4.0}, "delta=4.0 .* Leave delta=None"),
    ({"use_liger_kernel": True}, "use_liger_kernel=True is not supported by DGPOTrainer"),
]


@pytest.mark.parametrize(("kwargs", "message"), INVALID_VALUES)
def test_invalid_values_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo", "dr_grpo", "luspo"])
def test_every_grpo_aggregation_is_accepted(loss_type):
    assert make(loss_type=loss_type).loss_type == loss_type


def test_boundary_values_are_accepted():
    config = make(dgpo_n=0.0, dgpo_m=1.0, epsilon=0.0, epsilon_high=0.0)
    assert (config.dgpo_n, config.dgpo_m) == (0.0, 1.0)


def test_cli_flags_and_yaml(tmp_path):
    parser = TrlParser((DGPOConfig,))
    (config,) = parser.parse_args_and_config(
        args=[
            "--output_dir",
            str(tmp_path),
            "--use_cpu",
            "--bf16",
            "false",
            "--dgpo_n",
            "2",
            "--dgpo_m",
            "3",
            "--epsilon_high",
            "0.28",
            "--steps_per_generation",
            "4",
        ]
    )
    assert (config.dgpo_n, config.dgpo_m, config.epsilon_high, config.steps_per_generation) == (2.0, 3.0, 0.28, 4)
    yaml_file = tmp_path / "dgpo.yaml"
    yaml_file.write_text(f"output_dir: {tmp_path}\nuse_cpu: true\nbf16: false\ndgpo_n: 3\nloss_type: grpo\n")
    (config,) = parser.parse_args_and_config(args=["--config", str(yaml_file), "--dgpo_m", "1.5"])
    assert (config.dgpo_n, config.dgpo_m, config.loss_type) == (3.0, 1.5, "grpo")
    with pytest.raises(ValueError, match="dgpo_m"):
        parser.parse_args_and_config(
            args=["--output_dir", str(tmp_path), "--use_cpu", "--bf16", "false", "--dgpo_m", "0"]
        )
