"""Kill and resume: a real training process is SIGKILLed after a checkpoint, a new process resumes from
it, and the resumed run matches an uninterrupted one step for step (model, optimizer, scheduler, RNG and trainer
state all restored)."""

import json
import subprocess
import time

import pytest
import torch

from .distributed_utils import (
    REPO_ROOT,
    accelerate_command,
    free_port,
    kill_process_tree,
    launch_env,
    run_command,
    tail,
)


SCRIPT = REPO_ROOT / "tests" / "scripts" / "run_resumable.py"
pytestmark = pytest.mark.distributed


def command(config, port, trainer, toy_paths, output_dir, result, *extra):
    return accelerate_command(
        config,
        port,
        SCRIPT,
        "--trainer",
        trainer,
        "--model",
        toy_paths["student"],
        "--teacher",
        toy_paths["teacher"],
        "--output_dir",
        str(output_dir),
        "--result",
        str(result),
        *extra,
    )


@pytest.mark.parametrize(("trainer", "config"), [("dgpo", "cpu_multi"), ("scope", "cpu")])
def test_a_killed_run_resumes_where_its_checkpoint_left_it(trainer, config, toy_paths, tmp_path):
    reference_dir, crashed_dir = tmp_path / "reference", tmp_path / "crashed"
    port = free_port()
    run_command(command(config, port, trainer, toy_paths, reference_dir, tmp_path / "reference.json"), port)
    reference = json.loads((tmp_path / "reference.json").read_text())

    port = free_port()
    launcher = subprocess.Popen(
        command(config, port, trainer, toy_paths, crashed_dir, tmp_path / "never.json", "--hang_after_step", "4"),
        env=launch_env(port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (crashed_dir / "hanging-4").exists():
        if launcher.poll() is not None or time.time() > deadline:
            kill_process_tree(launcher.pid)
            out, err = launcher.communicate()
            pytest.fail(f"the run never reached its step-4 checkpoint\n{tail(out)}\n{tail(err)}")
        time.sleep(0.5)
    # SIGKILL to the launcher and every training process (torch's launcher puts its workers in sessions of their
    # own, so a process-group kill would orphan them): no handler runs, nothing is flushed, as in a crash.
    kill_process_tree(launcher.pid)
    launcher.communicate()
    assert not (tmp_path / "never.json").exists()
    assert (crashed_dir / "checkpoint-4" / "trainer_state.json").exists()

    port = free_port()
    run_command(command(config, port, trainer, toy_paths, crashed_dir, tmp_path / "resumed.json", "--resume"), port)
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["global_step"] == reference["global_step"] == 6
    assert resumed["steps_run"] == [5, 6]  # only the steps after the checkpoint ran again
    assert sorted(resumed["losses"], key=int) == [str(step) for step in range(1, 7)]  # the history came back too
    for step, loss in reference["losses"].items():
        assert resumed["losses"][step] == pytest.approx(loss, rel=1e-5, abs=1e-6), step
    final, expected = (torch.load(d / "final_params.pt") for d in (crashed_dir, reference_dir))
    for got, want in zip(final, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
