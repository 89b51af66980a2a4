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


def load_script(name):
    """A benchmark script as a module (they live outside the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_soak_checks_catch_a_leak_a_nan_and_a_slowdown():
    soak = load_script("soak")
    steady = [{"step": i + 1, "rss": 1000 * 2**20, "seconds": 0.1} for i in range(400)]
    ok = soak.checks(steady, {5: {"loss": 0.5, "reward": None}})
    assert all(check["passed"] for check in ok.values()) and ok["memory"]["reference_step"] == 100
    leak = [{**entry, "rss": (1000 + entry["step"]) * 2**20} for entry in steady]  # +1 MiB per step
    assert not soak.checks(leak, {})["memory"]["passed"]
    assert soak.checks(steady, {7: {"entropy": float("nan")}})["finite"]["nonfinite"] == ["entropy (step 7)"]
    slower = [{**entry, "seconds": 0.1 * (1 + entry["step"] / 200)} for entry in steady]
    assert not soak.checks(slower, {})["step_time"]["passed"]


def test_soak_benchmark_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "soak.py"), "--smoke", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    record = json.loads((tmp_path / "soak_smoke.json").read_text())
    assert set(record["runs"]) == {"scope", "dgpo"}
    for run in record["runs"].values():
        assert [entry["step"] for entry in run["steps"]] == list(range(1, 9))
        assert all(entry["rss"] > 0 and entry["seconds"] > 0 for entry in run["steps"])
        assert run["checks"]["finite"]["passed"] and "policy_loss" in run["metrics"]["1"]
    assert record["runs"]["scope"]["metrics"]["1"].get("scope/frac_correct") is not None
    assert "| SCOPE | 1 |" in (tmp_path / "soak_smoke.md").read_text()


def test_teacher_memory_benchmark_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "teacher_memory.py"), "--smoke", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    record = json.loads((tmp_path / "teacher_memory_smoke.json").read_text())
    assert [row["length"] for row in record["rows"]] == [64, 128]
    assert record["checks"]["agreement"]["passed"]  # the fused scores equal the full-logits log-probs
    assert all(row["ours_mib"] >= 0 and row["naive_mib"] >= 0 for row in record["rows"])
    assert "| completion tokens | ours (MiB) |" in (tmp_path / "teacher_memory_smoke.md").read_text()


def test_teacher_memory_checks():
    module = load_script("teacher_memory")

    def rows(ours, naive):
        return [{"length": n, "ours_mib": o, "naive_mib": v, "ratio": v / o, "max_abs_difference": 0.0}
                for n, o, v in zip((1024, 8192), ours, naive)]  # fmt: skip

    assert all(c["passed"] for c in module.checks(rows((100, 500), (1000, 8000))).values())
    assert not module.checks(rows((100, 900), (1000, 8000)))["ratio_at_longest"]["passed"]  # 8.9x < 10x
    assert not module.checks(rows((10, 200), (1000, 8000)))["ours_growth"]["passed"]  # 20x for 8x the length
