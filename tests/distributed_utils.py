"""Launching a test script under `accelerate launch` in fresh processes, for the distributed test modules.

`launch_script` runs `python -m accelerate.commands.launch --config_file accelerate_configs/<config> <script> ...` in a
session of its own, with a free rendezvous port and an environment stripped of any outer distributed job, and returns
the JSON report that the script writes. A run that hangs (a collective that one process never reaches) is killed,
launcher and workers together, after `timeout` seconds and fails the test with the tail of its output.

The workers have to be found as descendants of the launcher: torchrun (what `accelerate launch` runs for
multi-process configs such as `cpu_multi.yaml` and DeepSpeed) starts each worker in a session of its own, so killing the launcher's process
group would leave them running, deadlocked, with the output pipes open (and `communicate()` waiting forever).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "accelerate_configs"
SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"

# Generous: a launch takes about 10 s (2 processes on 2 cores), the first DeepSpeed one about a minute (JIT build).
LAUNCH_TIMEOUT = 600
# Variables that would make the launched processes join some outer distributed job instead of their own.
INHERITED_DIST_VARS = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def kill_process_tree(pid: int) -> None:
    """SIGKILL `pid` and all its descendants, collected before anything is killed (orphans get re-parented)."""
    import psutil  # a dependency of accelerate

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=30)


def launch_env(port: int) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in INHERITED_DIST_VARS and not key.startswith("ACCELERATE_")
    }
    env.update(
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        MASTER_PORT=str(port),
    )
    return env


# Failures of the environment rather than of the code under test, retried once with a fresh port: another process
# took the rendezvous port between `free_port()` and the bind, or a worker died of SIGABRT, which gloo's worker threads
# occasionally raise while the interpreter shuts down (pytorch/pytorch#179291 describes the teardown race). A failure
# that repeats on the retry fails the test; a retried one is reported as a warning.
TRANSIENT_LAUNCH_FAILURES = ("Address already in use", "EADDRINUSE", "SIGABRT")


def run_command(cmd: list[str], port: int, timeout: float = LAUNCH_TIMEOUT) -> tuple[str, str]:
    """Run a launcher command in a session of its own; fail the test with its output tail if it fails or hangs.

    `port` is the rendezvous port the command names (as an argument and as MASTER_PORT). Returns (stdout, stderr). On
    a timeout the launcher's whole process tree is killed (see the module docstring).
    """
    returncode, stdout, stderr = _run_once(cmd, port, timeout)
    if returncode != 0 and any(signature in stderr for signature in TRANSIENT_LAUNCH_FAILURES):
        import warnings

        new_port = free_port()
        warnings.warn(
            f"`{' '.join(cmd)}` failed with a transient launch error (exit {returncode}); retrying once on port "
            f"{new_port}.\n{tail(stderr, 20)}",
            stacklevel=2,
        )
        cmd = [str(new_port) if arg == str(port) else arg for arg in cmd]
        returncode, stdout, stderr = _run_once(cmd, new_port, timeout)
    output = f"--- stdout (tail) ---\n{tail(stdout)}\n--- stderr (tail) ---\n{tail(stderr)}"
    assert returncode == 0, f"`{' '.join(cmd)}` exited with {returncode}\n{output}"
    return stdout, stderr


def _run_once(cmd: list[str], port: int, timeout: float) -> tuple[int, str, str]:
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=launch_env(port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_process_tree(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # some process still holds the pipes: give up on the output
            stdout, stderr = "", "(no output: the pipes stayed open after the kill)"
        pytest.fail(f"`{' '.join(cmd)}` ran past {timeout} s (deadlock?)\n{tail(stdout)}\n{tail(stderr)}")
    return proc.returncode, stdout, stderr


def accelerate_command(config: str, port: int, script: Path | str, *args: str, accelerate_args=()) -> list[str]:
    """`python -m accelerate.commands.launch --config_file accelerate_configs/<config> ... <script> <args>`."""
    config_file = CONFIG_DIR / (config if config.endswith(".yaml") else f"{config}.yaml")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file)]
    return [*launcher, "--main_process_port", str(port), *accelerate_args, str(script), *args]


def launch_script(
    script: Path,
    config: str,
    result_path: Path,
    script_args=(),
    accelerate_args=(),
    timeout: float = LAUNCH_TIMEOUT,
) -> dict:
    """Run `script` under `accelerate launch --config_file accelerate_configs/<config>`; return the JSON report it
    writes at `result_path` (which `script_args` must tell it about)."""
    port = free_port()
    cmd = accelerate_command(config, port, script, *script_args, accelerate_args=accelerate_args)
    stdout, stderr = run_command(cmd, port, timeout)
    output = f"--- stdout (tail) ---\n{tail(stdout)}\n--- stderr (tail) ---\n{tail(stderr)}"
    assert result_path.is_file(), f"The script did not write {result_path}\n{output}"
    return json.loads(result_path.read_text())
