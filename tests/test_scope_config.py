"""SCOPEConfig: paper defaults, validation of every field with messages that say what is allowed, CLI parsing."""

import pytest
from trl import GRPOConfig, TrlParser

from scope_trl import SCOPEConfig


CPU = {"use_cpu": True, "bf16": False, "report_to": "none"}


def make(**kwargs):
    return SCOPEConfig(output_dir="unused", **CPU, **kwargs)


def test_defaults_follow_the_paper():
    config = make()
    assert isinstance(config, GRPOConfig)
    assert config.teacher_model_name_or_path is None  # a model instance may be handed to the trainer instead
    assert (config.beta, config.num_iterations, config.entropy_coef) == (0.0, 1, 0.0)
    assert (config.teacher_temperature, config.scope_tau, config.correctness_threshold) == (1.0, 1.0, 1.0)
    assert config.correctness_reward is None and config.routing
    assert config.use_student_weights and config.use_teacher_weights
    assert (config.student_weight_direction, config.teacher_weight_direction) == ("paper", "paper")
    assert (config.weight_normalization, config.scope_loss_aggregation, config.policy_surrogate) == (
        "mean",
        "official",
        "ppo",
    )
    assert (config.mle_coef, config.opd_coef, config.outcome_advantage_coef) == (1.0, 1.0, 0.0)
    assert config.distillation_advantage_clip is None  # the paper's method: no bound
    assert "teacher_model_init_kwargs" in SCOPEConfig._VALID_DICT_FIELDS


# One bad value (at least) for every field SCOPEConfig adds to GRPOConfig (tests/test_bad_input.py checks the
# coverage), and for the GRPO fields whose meaning SCOPE restricts.
INVALID_VALUES = [
    ({"teacher_model_name_or_path": ""}, "teacher_model_name_or_path must be None or a non-empty string"),
    ({"teacher_model_revision": 3}, "teacher_model_revision must be None or a non-empty string, got 3"),
    ({"teacher_model_init_kwargs": "{dtype: bf16"}, "teacher_model_init_kwargs must be a JSON object"),
    ({"teacher_model_init_kwargs": [1]}, "teacher_model_init_kwargs must be None or a dict"),
    ({"nonfinite_teacher_scores": "zero"}, "nonfinite_teacher_scores must be one of 'exclude', 'error'"),
    ({"nonfinite_updates": "ignore"}, "nonfinite_updates must be one of 'error', 'skip'"),
    ({"allow_teacher_change": "yes"}, "allow_teacher_change must be True or False"),
    ({"teacher_offload": "true"}, "teacher_offload must be True or False"),
    ({"routing": "no"}, "routing must be True or False, got 'no'"),
    ({"use_student_weights": 1}, "use_student_weights must be True or False"),
    ({"use_teacher_weights": None}, "use_teacher_weights must be True or False"),
    ({"scope_tau": "1.0"}, "scope_tau must be a number, got str"),
    ({"teacher_temperature": 0.0}, "teacher_temperature must be > 0"),
    ({"scope_tau": -1.0}, "scope_tau must be > 0"),
    ({"scope_tau": float("nan")}, "scope_tau"),
    ({"correctness_threshold": float("inf")}, "correctness_threshold"),
    ({"student_weight_direction": "up"}, "student_weight_direction must be one of 'paper', 'reversed'"),
    ({"teacher_weight_direction": "down"}, "teacher_weight_direction must be one of"),
    ({"weight_normalization": "max"}, "weight_normalization must be one of 'mean', 'sum'"),
    ({"policy_surrogate": "cispo"}, "policy_surrogate must be one of 'ppo', 'dgpo'"),
    ({"scope_loss_aggregation": "dapo"}, "scope_loss_aggregation must be one of 'official', 'per_path', 'global'"),
    ({"mle_coef": -1.0}, "mle_coef must be a finite number >= 0"),
    ({"opd_coef": float("nan")}, "opd_coef"),
    ({"outcome_advantage_coef": -0.5}, "outcome_advantage_coef"),
    ({"dgpo_n": -1.0}, "dgpo_n"),
    ({"dgpo_m": 0.5}, "dgpo_m"),
    ({"epsilon": 1.5}, "epsilon"),
    ({"loss_type": "grpo"}, "loss_type='grpo' does not apply to SCOPE.*scope_loss_aggregation"),
    ({"importance_sampling_level": "sequence"}, "importance_sampling_level must be 'token'"),
    ({"delta": 2.0}, "delta"),
    ({"use_liger_kernel": True}, "use_liger_kernel=True is not supported by SCOPETrainer"),
    ({"correctness_reward": 1.5}, "correctness_reward must be a reward function's name or position"),
    ({"distillation_advantage_clip": 0.0}, "distillation_advantage_clip must be None"),
    ({"distillation_advantage_clip": float("inf")}, "distillation_advantage_clip"),
    ({"teacher_model_server_url": ""}, "teacher_model_server_url must be None or a non-empty string"),
    ({"teacher_model_server_url": "localhost:8000"}, "must start with http:// or https://"),
    ({"teacher_model_server_host": 7}, "teacher_model_server_host must be None or a non-empty string"),
    ({"teacher_model_server_port": 0}, "teacher_model_server_port must be a port number"),
    ({"teacher_model_server_timeout": -1.0}, "teacher_model_server_timeout must be a number of seconds >= 0"),
    ({"teacher_model_server_request_timeout": 0.0}, "teacher_model_server_request_timeout must be a number of"),
    ({"teacher_model_server_max_retries": -1}, "teacher_model_server_max_retries must be an integer >= 0"),
    ({"teacher_model_server_max_retries": 1.5}, "teacher_model_server_max_retries must be an integer >= 0"),
    ({"teacher_model_server_url": "http://h:1", "teacher_offload": True}, "teacher_offload=True and a teacher server"),
    ({"teacher_model_server_host": "h", "teacher_temperature": 0.7}, "cannot be applied by a teacher server"),
]


@pytest.mark.parametrize(("kwargs", "message"), INVALID_VALUES)
def test_invalid_values_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_teacher_server_address():
    assert make().teacher_server_base_url is None
    assert make(teacher_model_server_host="10.0.0.2", teacher_model_server_port=8001).teacher_server_base_url == (
        "http://10.0.0.2:8001"
    )
    both = make(teacher_model_server_url="https://teacher.example/", teacher_model_server_host="10.0.0.2")
    assert both.teacher_server_base_url == "https://teacher.example"  # the URL wins, as vllm_server_base_url does


def test_correctness_reward_accepts_a_position():
    assert make(correctness_reward=1).correctness_reward == "1"
    assert make(correctness_reward="accuracy").correctness_reward == "accuracy"


def test_cli_flags(tmp_path):
    parser = TrlParser((SCOPEConfig,))
    (config,) = parser.parse_args_and_config(
        args=[
            "--output_dir",
            str(tmp_path),
            "--use_cpu",
            "--bf16",
            "false",
            "--teacher_model_name_or_path",
            "some/teacher",
            "--teacher_model_init_kwargs",
            '{"dtype": "bfloat16"}',
            "--scope_tau",
            "0.5",
            "--routing",
            "false",
            "--policy_surrogate",
            "dgpo",
            "--dgpo_n",
            "2",
            "--student_weight_direction",
            "reversed",
            "--correctness_reward",
            "accuracy_reward",
        ]
    )
    assert config.teacher_model_name_or_path == "some/teacher"
    assert config.teacher_model_init_kwargs == {"dtype": "bfloat16"}
    assert (config.scope_tau, config.routing, config.policy_surrogate, config.dgpo_n) == (0.5, False, "dgpo", 2.0)
    assert config.student_weight_direction == "reversed" and config.correctness_reward == "accuracy_reward"
