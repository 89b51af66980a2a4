"""The `scope-trl` command line, the embedded-default demo and the quick-start example, end to end."""

import json
import os
import shutil
import subprocess
import sys

from scope_trl.cli import main


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_trains_off_policy_and_writes_a_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # the CLI sets it for its process; keep it out of later tests
    assert main(["demo", "--max-steps", "8", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "clip_low" in out and "w_high" in out and "mean reward" in out
    report = json.loads((tmp_path / "demo_report.json").read_text())
    assert report["steps"] == 8
    assert report["max_clip_ratio_region"] > 0.0  # 4 optimizer steps per generation batch: the soft clip acts
    assert any("clip_ratio/low_mean" in entry for entry in report["log_history"])


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
    assert result.returncode == 0 and "--steps-per-generation" in result.stdout


def test_quickstart_example_runs_offline(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "examples", "dgpo_quickstart.py"), "--toy", "--max-steps", "2",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "model.safetensors").exists()
