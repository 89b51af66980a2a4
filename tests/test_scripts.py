"""The training scripts end to end: `examples/{scope,dgpo}.py` under `accelerate launch` and `scope-trl scope|dgpo`.

Each run trains the tiny offline student (SCOPE: with the larger tiny teacher) for 2 optimizer steps on a local JSONL
file in the math_eval layout (`problem`, `answer`), with one CPU process and with two, and must leave a saved model
with a model card that cites the method's paper.
"""

import json

import pytest

from scope_trl.apps.toy import make_arithmetic_problems

from .distributed_utils import REPO_ROOT, accelerate_command, free_port, run_command
from .helpers import console_script


pytestmark = pytest.mark.distributed

CITATION = {"scope": "zheng2026scope", "dgpo": "fu2026dgpo"}


@pytest.fixture(scope="module")
def jsonl_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "arithmetic.jsonl"
    with path.open("w") as f:
        for index, problem in enumerate(make_arithmetic_problems(32, seed=0)):
            f.write(json.dumps({"id": str(index), "problem": problem.question, "answer": problem.answer}) + "\n")
    return str(path)


def training_args(method, toy_paths, dataset, output_dir, processes=1):
    args = [
        "--model_name_or_path",
        toy_paths["student"],
        "--dataset_name",
        dataset,
        "--output_dir",
        str(output_dir),
        "--use_cpu",
        "true",
        "--bf16",
        "false",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--max_steps",
        "2",
        "--logging_steps",
        "1",
        "--per_device_train_batch_size",
        "2",
        "--num_generations",
        "4",
        "--max_completion_length",
        "8",
        "--learning_rate",
        "1e-2",
        "--gradient_checkpointing",
        "false",
    ]
    if method == "scope":
        # The tiny student never solves arithmetic: a digit test stands in for the verifier, so both paths run.
        args += ["--teacher_model_name_or_path", toy_paths["teacher"]]
        args += ["--reward_funcs", "scope_trl.apps.toy.contains_digit_reward", "accuracy_reward"]
        # One optimizer step per generation batch (SCOPE's default); with 2 processes the group of 4 straddles them.
        args += ["--steps_per_generation", str(2 // processes)]
    else:
        args += ["--steps_per_generation", "2", "--reward_funcs", "scope_trl.apps.toy.digit_fraction_reward"]
    return args


@pytest.mark.parametrize("config", ["cpu", "cpu_multi"])
@pytest.mark.parametrize("entry", ["example", "cli"])
@pytest.mark.parametrize("method", ["scope", "dgpo"])
def test_training_script_end_to_end(method, entry, config, toy_paths, jsonl_dataset, tmp_path):
    output_dir = tmp_path / "out"
    port = free_port()
    if entry == "example":
        command = accelerate_command(config, port, REPO_ROOT / "examples" / f"{method}.py")
    else:
        command = [console_script(), method, "--accelerate_config", config, "--main_process_port", str(port)]
    processes = 2 if config == "cpu_multi" else 1
    stdout, stderr = run_command(
        command + training_args(method, toy_paths, jsonl_dataset, output_dir, processes), port
    )
    assert (output_dir / "model.safetensors").exists()
    card = (output_dir / "README.md").read_text()
    assert CITATION[method] in card and "TRL" in card
    assert "'policy_loss'" in stdout + stderr  # the per-step logs went through TRL's logger
    if method == "scope":
        assert "'scope/opd_loss'" in stdout + stderr


def test_cli_runs_in_process_and_resume_true_means_the_last_checkpoint(toy_paths, jsonl_dataset, tmp_path):
    """`--resume_from_checkpoint true` resumes from the last checkpoint of `output_dir`, as TRL users expect (the
    string reached `Trainer.train` as a path before: "Can't find a valid checkpoint at true")."""
    from scope_trl.cli import main

    output_dir = tmp_path / "out"
    args = [
        *training_args("dgpo", toy_paths, jsonl_dataset, output_dir),
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
    ]
    assert main(["dgpo", *args]) == 0
    assert (output_dir / "model.safetensors").exists()
    # Mark the last checkpoint's history: a resumed run carries it on, a fresh one would not.
    state_path = output_dir / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    state["log_history"][0]["resume_marker"] = 1
    state_path.write_text(json.dumps(state))
    assert main(["dgpo", *args, "--max_steps", "3", "--resume_from_checkpoint", "true"]) == 0
    resumed = json.loads((output_dir / "checkpoint-3" / "trainer_state.json").read_text())
    assert resumed["global_step"] == 3 and resumed["log_history"][0].get("resume_marker") == 1


def test_cli_reads_a_yaml_config_and_cli_flags_override_it(toy_paths, jsonl_dataset, tmp_path):
    from scope_trl.scripts.common import parse_script_arguments
    from scope_trl.scripts.scope import make_parser

    config = tmp_path / "scope.yaml"
    config.write_text(
        f"model_name_or_path: {toy_paths['student']}\nteacher_model_name_or_path: {toy_paths['teacher']}\n"
        f"dataset_name: {jsonl_dataset}\nscope_tau: 0.5\npolicy_surrogate: dgpo\nuse_cpu: true\nbf16: false\n"
        f"output_dir: {tmp_path}\n"
    )
    script_args, training_args_, model_args = parse_script_arguments(
        make_parser(),
        [f"--config={config}", "--scope_tau", "2.0"],  # the `=` spelling is read too
    )
    assert script_args.dataset_name == jsonl_dataset and model_args.model_name_or_path == toy_paths["student"]
    assert (training_args_.scope_tau, training_args_.policy_surrogate) == (2.0, "dgpo")


def test_cli_errors(capsys):
    from scope_trl.cli import accelerate_config_path, split_launch_options

    with pytest.raises(ValueError, match="No accelerate config 'zero9'.*zero3_cpu"):
        accelerate_config_path("zero9")
    assert accelerate_config_path("cpu").name == "cpu.yaml" and accelerate_config_path("cpu").is_file()
    launch, rest = split_launch_options(["--accelerate_config=zero3", "--lr", "1", "--num_processes", "4"])
    assert launch == {"--accelerate_config": "zero3", "--num_processes": "4"} and rest == ["--lr", "1"]
    with pytest.raises(ValueError, match="--num_processes only apply with --accelerate_config"):
        from scope_trl.cli import run_training

        run_training("dgpo", ["--num_processes", "2"])
