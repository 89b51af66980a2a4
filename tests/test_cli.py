"""The `scope-trl` command line, the embedded-default demo and the quick-start example, end to end."""

import json
import os
import shutil
import subprocess
import sys

from scope_trl.cli import main


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_smoke_demo(tmp_path, monkeypatch, *flags):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # the CLI sets it for its process; keep it out of later tests
    assert main(["demo", "--smoke", "--output-dir", str(tmp_path), *flags]) == 0
    report = json.loads((tmp_path / "demo_report.json").read_text())
    assert set(report["metrics"]) == {"teacher", "student_before", "student_after"}
    for name, metrics in report["metrics"].items():
        for key in ("avg@k", "pass@k"):
            assert 0.0 <= metrics[key] <= 1.0, (name, key, metrics[key])
        assert metrics["avg@k"] <= metrics["pass@k"]
        assert len(metrics["correct_counts"]) == report["eval_problems"]
    png = tmp_path / "demo_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["plot"] == str(png)
    return report


def test_demo_smoke_runs_scope_end_to_end(tmp_path, capsys, monkeypatch):
    report = run_smoke_demo(tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert report["method"] == "scope" and report["steps"] == report["settings"]["max_steps"] == 4
    assert any("scope/teacher_kl" in entry for entry in report["log_history"])
    assert "student before" in out and "student after" in out and "teacher_kl" in out
    assert str(tmp_path / "demo_report.json") in out and str(tmp_path / "demo_curves.png") in out


def test_demo_smoke_runs_dgpo(tmp_path, monkeypatch):
    report = run_smoke_demo(tmp_path, monkeypatch, "--method", "dgpo", "--max-steps", "8")
    assert report["method"] == "dgpo" and report["steps"] == 8
    assert any("clip_ratio/low_mean" in entry for entry in report["log_history"])  # DGPOTrainer's own metrics
    assert not any("scope/teacher_kl" in entry for entry in report["log_history"])


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_env_lists_versions(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "- trl version: 1.16" in out and "- scope-trl version:" in out


def test_console_script_is_installed():
    executable = shutil.which("scope-trl")
    assert executable, "the `scope-trl` console script is missing: install the package with `pip install -e .`"
    result = subprocess.run([executable, "demo", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--method" in result.stdout and "--smoke" in result.stdout


def test_quickstart_example_runs_offline(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", "dgpo_quickstart.py"), "--toy", "--max-steps", "2",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "model.safetensors").exists()
