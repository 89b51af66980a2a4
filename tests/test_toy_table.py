"""`benchmarks/toy_table.py`: its paired statistics against hand-computed values, and `--smoke` end to end.

The smoke budget measures nothing (the models are barely trained); only the shape of the outputs is checked.
"""

import json
import math
import os
import subprocess
import sys

import pytest


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "toy_table.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def toy_table():
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    try:
        import toy_table
    finally:
        sys.path.pop(0)
    return toy_table


def test_t_critical_values():
    t_critical = toy_table().t_critical_975
    assert t_critical(1) == 12.706 and t_critical(2) == 4.303 and t_critical(10) == 2.228
    # Tabulated two-sided 95% values beyond the hard-coded table: the expansion is within 1e-3 of them.
    for df, expected in ((11, 2.201), (15, 2.131), (20, 2.086), (30, 2.042), (60, 2.000), (120, 1.980)):
        assert abs(t_critical(df) - expected) < 1e-3, (df, t_critical(df))
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_critical(0)


def test_paired_compare_by_hand():
    paired_compare = toy_table().paired_compare
    # d = (0.02, 0.03, 0.04): mean 0.03, std 0.01, stderr 0.01/sqrt(3), t = 5.196 > 4.303.
    result = paired_compare([0.22, 0.33, 0.14], [0.20, 0.30, 0.10])
    assert math.isclose(result["delta"], 0.03) and math.isclose(result["std"], 0.01)
    assert math.isclose(result["t"], 3 * math.sqrt(3)) and result["t_critical"] == 4.303
    assert result["significant"] is True
    assert [round(d, 10) for d in result["per_seed"]] == [0.02, 0.03, 0.04]
    # The same mean difference with seeds that disagree in sign is not significant: d = (0.10, -0.04, 0.03).
    result = paired_compare([0.30, 0.26, 0.13], [0.20, 0.30, 0.10])
    assert math.isclose(result["delta"], 0.03) and result["significant"] is False
    # Pairing is what makes a small, consistent difference visible under a large between-seed spread.
    a, b = [0.12, 0.52, 0.91], [0.10, 0.50, 0.90]
    assert paired_compare(a, b)["significant"] is True
    assert abs(sum(a) / 3 - sum(b) / 3) < (sum((x - sum(b) / 3) ** 2 for x in b) / 2) ** 0.5  # unpaired: buried
    # Identical rows: no difference and t = 0; one seed: no test.
    assert paired_compare([0.2, 0.3], [0.2, 0.3]) | {"per_seed": None} == {
        "delta": 0.0,
        "std": 0.0,
        "t": 0.0,
        "t_critical": 12.706,
        "significant": False,
        "per_seed": None,
    }
    one = paired_compare([0.4], [0.1])
    assert math.isclose(one["delta"], 0.3) and one["std"] is None and one["significant"] is None
    with pytest.raises(ValueError, match="same seeds"):
        paired_compare([0.1, 0.2], [0.1])


def run_script(*args):
    result = subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=600, env=ENV, cwd=REPO
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_toy_table_smoke(tmp_path):
    METHODS = toy_table().METHODS
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
    assert report["summary"]["grpo"]["avg@k"]["vs_scope"]["significant"] is None  # one seed: no test
    assert report["summary"]["scope"]["pass@k"]["vs_student"]["std"] is None

    # --resume keeps every (row, seed) result of the JSON and reruns nothing; the table is rebuilt identically.
    before = table.read_text()
    stdout = run_script("--smoke", "--cache-dir", str(cache), "--output", str(table), "--resume")
    assert "every row resumed" in stdout and "SFT step" not in stdout and "[teacher] cached" not in stdout
    assert table.read_text() == before
    # ... and refuses a JSON written with another budget, naming what differs.
    result = subprocess.run(
        [sys.executable, SCRIPT, "--smoke", "--output", str(table), "--resume", "--learning-rate", "0.5"],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
        cwd=REPO,
    )
    assert result.returncode != 0 and "other settings (differences: learning_rate)" in result.stderr

    # A second run with the same cache trains neither teacher nor student again; --methods selects the rows.
    subset = tmp_path / "subset.md"
    stdout = run_script("--smoke", "--cache-dir", str(cache), "--output", str(subset), "--methods", "student,grpo")
    assert "[teacher] cached" in stdout and "[student] cached" in stdout
    assert "SFT step" not in stdout
    assert set(json.loads(subset.with_suffix(".json").read_text())["per_seed"]) == {"student", "grpo"}
