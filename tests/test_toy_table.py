"""`benchmarks/toy_table.py --smoke` runs end to end: one table row per method, per-seed numbers in [0, 1], cached SFT.

The smoke budget measures nothing (the models are barely trained); only the shape of the outputs is checked.
"""

import json
import os
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "toy_table.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_script(*args):
    result = subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=600, env=ENV, cwd=REPO
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_toy_table_smoke(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        from toy_table import METHODS
    finally:
        sys.path.pop(0)

    cache, table = tmp_path / "cache", tmp_path / "table.md"
    stdout = run_script("--smoke", "--cache-dir", str(cache), "--output", str(table))
    assert "estimated time" in stdout

    rows = [
        line for line in table.read_text().splitlines() if line.startswith("| ") and not line.startswith("| method")
    ]
    assert len(rows) == len(METHODS)
    for method, row in zip(METHODS, rows):
        assert row.startswith(f"| {method.label} |"), row

    report = json.loads(table.with_suffix(".json").read_text())
    assert report["seeds"] == [0]
    assert set(report["per_seed"]) == {m.key for m in METHODS}
    for key, per_seed in report["per_seed"].items():
        assert [r["seed"] for r in per_seed] == [0], key
        for r in per_seed:
            assert 0.0 <= r["avg@k"] <= 1.0 and 0.0 <= r["pass@k"] <= 1.0, (key, r)
    for r in report["teacher"]:
        assert 0.0 <= r["avg@k"] <= 1.0 and 0.0 <= r["pass@k"] <= 1.0
    assert report["summary"]["grpo"]["avg@k"]["vs_scope"]["exceeds_2x_pooled_std"] is None  # one seed: no spread

    # A second run with the same cache trains neither teacher nor student again; --methods selects the rows.
    subset = tmp_path / "subset.md"
    stdout = run_script("--smoke", "--cache-dir", str(cache), "--output", str(subset), "--methods", "student,grpo")
    assert "[teacher] cached" in stdout and "[student] cached" in stdout
    assert "SFT step" not in stdout
    assert set(json.loads(subset.with_suffix(".json").read_text())["per_seed"]) == {"student", "grpo"}
