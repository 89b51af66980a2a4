"""The benchmark script runs (a smoke run: it measures nothing here, timings are never asserted)."""

import os
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_step_time_benchmark_smoke():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "step_time.py"), "--hidden", "16", "--layers", "1",
         "--steps", "3", "--warmup", "1", "--batch", "4", "--generations", "4", "--completion", "8"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.split()}
    for name in ("grpo", "dgpo", "scope"):
        assert name in rows, result.stdout
    assert rows["grpo"][2] == "1.00"  # the baseline's own ratio
