"""DGPO under `accelerate launch`: several CPU processes, DeepSpeed ZeRO-2 / ZeRO-3, LoRA, gradient accumulation.

Each test launches `tests/scripts/run_dgpo_tiny.py` in fresh processes with one of the configs of
`accelerate_configs/` and checks the JSON report that the script's main process writes: world size, distribution
type, parameters that moved (gathered under ZeRO-3), identical models on every rank, and DGPO's metrics in the log
history. Everything runs on CPU with the tiny student of the offline test bed.

Two launcher facts shape the commands:

- `accelerate launch` starts only **one** process for a `MULTI_CPU` config unless it is given `--mpirun_hostfile`
  (it then runs `mpirun`). `accelerate_configs/cpu_multi.yaml` therefore says `MULTI_GPU`: accelerate spawns the
  processes with torchrun, and each still comes up as `MULTI_CPU` over gloo because the config (and
  `DGPOConfig(use_cpu=True)`) asks for the CPU.
- DeepSpeed selects its CPU accelerator by itself when there is no GPU and communicates over gloo. The first
  DeepSpeed launch on a machine JIT-compiles DeepSpeed's `deepspeed_shm_comm` op into the torch extensions cache
  (35-60 s on 2 cores); later launches load it from the cache.
"""

import pytest

from .distributed_utils import SCRIPTS_DIR, launch_script


pytestmark = pytest.mark.distributed

SCRIPT = SCRIPTS_DIR / "run_dgpo_tiny.py"
DGPO_METRICS = ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "policy_loss")


def launch(config: str, model: str, tmp_path, *script_args: str, accelerate_args: tuple = ()) -> dict:
    """Run the tiny DGPO script under `accelerate launch --config_file accelerate_configs/<config>`; return its report."""
    result_path = tmp_path / "result.json"
    script_args = ("--model", model, "--output_dir", str(tmp_path / "out"), "--result", str(result_path), *script_args)
    return launch_script(SCRIPT, config, result_path, script_args, accelerate_args)


def check_report(report: dict, world_size: int, distributed_type: str, zero_stage=None, global_step: int = 2):
    summary = {key: value for key, value in report.items() if key != "log_history"}
    assert report["world_size"] == world_size, summary
    assert report["distributed_type"] == f"DistributedType.{distributed_type}", summary
    assert report["zero_stage"] == zero_stage, summary
    assert report["global_step"] == global_step, summary
    assert report["params_changed"], f"No trainable parameter moved: {summary}"
    assert report["num_params_changed"] == report["num_params_compared"], f"Some parameters did not move: {summary}"
    assert report["num_frozen_params_changed"] == 0, f"Frozen parameters moved: {summary}"
    assert report["ranks_in_sync"], f"The ranks hold different models after training: {summary}"

    step_logs = [entry for entry in report["log_history"] if "policy_loss" in entry]
    assert len(step_logs) == global_step, report["log_history"]  # logging_steps=1
    for name in DGPO_METRICS:
        assert all(name in entry for entry in step_logs), f"{name} missing from {report['log_history']}"
    for entry in step_logs:
        low, high, region = (entry[f"clip_ratio/{key}_mean"] for key in ("low", "high", "region"))
        assert 0.0 <= low <= 1.0 and 0.0 <= high <= 1.0, entry
        # LN and HP tokens are disjoint (they need advantages of opposite signs): the region is their union.
        assert region == pytest.approx(low + high, abs=1e-6), entry
        assert entry["policy_loss"] == entry["policy_loss"], entry  # not NaN
    return step_logs


def test_single_process_cpu(student_path, tmp_path):
    """Baseline: accelerate_configs/cpu.yaml, one process, no distribution."""
    report = launch("cpu.yaml", student_path, tmp_path)
    check_report(report, world_size=1, distributed_type="NO")


def test_multi_cpu_two_processes(student_path, tmp_path):
    """(a) DDP over gloo. 3 optimizer steps per generation batch of 2 rows per step and process: each process holds 6
    rows, so with num_generations=4 the middle prompt group straddles both ranks and its advantages need the
    cross-process gather."""
    report = launch("cpu_multi.yaml", student_path, tmp_path, "--steps_per_generation", "3")
    check_report(report, world_size=2, distributed_type="MULTI_CPU")


def test_deepspeed_zero2_cpu(student_path, tmp_path):
    """(b) DeepSpeed ZeRO-2 on DeepSpeed's CPU accelerator, 2 processes."""
    report = launch("zero2_cpu.yaml", student_path, tmp_path)
    check_report(report, world_size=2, distributed_type="DEEPSPEED", zero_stage=2)


def test_deepspeed_stops_a_nonfinite_loss_before_its_engine_steps(student_path, tmp_path):
    """accelerate's DeepSpeed backward runs the engine's optimizer step on the synchronising micro-batch, before the
    trainer reads the gradient norm: the loss is checked before that backward, so that the error's "the update was not
    applied" holds (here with 2 micro-batches per step, the first already back-propagated)."""
    report = launch(
        "zero2_cpu.yaml",
        student_path,
        tmp_path,
        "--gradient_accumulation_steps",
        "2",
        "--max_steps",
        "3",
        "--nonfinite_loss_at_step",
        "2",
    )
    summary = {key: value for key, value in report.items() if key != "log_history"}
    assert report["distributed_type"] == "DistributedType.DEEPSPEED" and report["global_step"] == 1, summary
    assert "optimizer step 2: the loss is not finite; the update was not applied" in report["nonfinite_error"], summary
    assert report["params_equal_to_last_completed_step"] and report["params_finite"], summary
    assert report["ranks_in_sync"], summary


def test_deepspeed_zero3_cpu(student_path, tmp_path):
    """(c) DeepSpeed ZeRO-3 on CPU, 2 processes: parameters are sharded, generation and the parameter comparison
    gather them."""
    report = launch("zero3_cpu.yaml", student_path, tmp_path)
    check_report(report, world_size=2, distributed_type="DEEPSPEED", zero_stage=3)


def test_deepspeed_zero3_cpu_peft(student_path, tmp_path):
    """(d) ZeRO-3 with a LoRA adapter (r=4 on q_proj/v_proj of 2 layers): only the adapter moves."""
    report = launch("zero3_cpu.yaml", student_path, tmp_path, "--use_peft")
    check_report(report, world_size=2, distributed_type="DEEPSPEED", zero_stage=3)
    assert report["use_peft"]
    assert report["num_params_compared"] == 8, report  # lora_A and lora_B of q_proj and v_proj, 2 layers
    assert report["num_frozen_params"] > 0, report


def test_multi_cpu_gradient_accumulation(student_path, tmp_path):
    """(e) DDP over gloo with gradient_accumulation_steps=2 (steps_per_generation=8: 4 optimizer steps per
    generation batch, so the second step is off-policy)."""
    report = launch(
        "cpu_multi.yaml",
        student_path,
        tmp_path,
        "--gradient_accumulation_steps",
        "2",
    )
    check_report(report, world_size=2, distributed_type="MULTI_CPU")
    assert report["gradient_accumulation_steps"] == 2, report
    assert report["steps_per_generation"] == 8, report
