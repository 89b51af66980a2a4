"""The `scope-trl` command line, the embedded-default demo and the quick-start example, end to end."""

import json
import os
import re
import subprocess
import sys

import pytest

from scope_trl.cli import main

from .helpers import console_script, run_offline


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
        assert metrics["problems"] == report["eval_problems"]
    png = tmp_path / "demo_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["plot"] == str(png)
    return report


def test_demo_smoke_runs_scope_end_to_end(tmp_path, capsys, monkeypatch):
    report = run_smoke_demo(tmp_path, monkeypatch, "--distillation-advantage-clip", "1.0")
    out = capsys.readouterr().out
    assert report["method"] == "scope" and report["settings"]["max_steps"] == 4
    assert max(entry["step"] for entry in report["log_history"]) == 4
    assert report["settings"]["distillation_advantage_clip"] == 1.0 and "distillation advantage clip 1" in out
    assert any("scope/teacher_kl" in entry for entry in report["log_history"])
    assert report["task"].startswith("A: carries") and set(report["rl_prompts"]) >= {"candidates", "mixed"}
    assert "student before" in out and "student after" in out and "teacher_kl" in out
    assert str(tmp_path / "demo_report.json") in out and str(tmp_path / "demo_curves.png") in out
    assert out.index("student after") < out.index("report:") < out.index("plot:")  # results first, plot last


def test_demo_without_matplotlib_keeps_its_results(tmp_path, capsys, monkeypatch):
    """Plotting is optional: without matplotlib the demo still writes its report, prints its table, says in one line
    which package to install, and exits 0."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    for module in ("matplotlib", "matplotlib.pyplot"):  # `import matplotlib` now fails as if it were not installed
        monkeypatch.setitem(sys.modules, module, None)
    assert main(["demo", "--smoke", "--output-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "demo_report.json").read_text())
    assert set(report["metrics"]) == {"teacher", "student_before", "student_after"}
    assert report["plot"] is None and not (tmp_path / "demo_curves.png").exists()
    assert "pip install 'scope-trl[plot]'" in report["plot_error"]
    out = capsys.readouterr().out
    plot_lines = [line for line in out.splitlines() if line.startswith("plot:")]
    assert plot_lines == [f"plot:   not drawn ({report['plot_error'].split(': ', 1)[1]})"]
    assert "Traceback" not in out and "student after" in out


def test_demo_smoke_runs_dgpo(tmp_path, monkeypatch):
    report = run_smoke_demo(tmp_path, monkeypatch, "--method", "dgpo", "--max-steps", "8")
    assert report["method"] == "dgpo" and max(entry["step"] for entry in report["log_history"]) == 8
    assert any("clip_ratio/low_mean" in entry for entry in report["log_history"])  # DGPOTrainer's own metrics
    assert not any("scope/teacher_kl" in entry for entry in report["log_history"])


def test_demo_distillation_advantage_clip_reaches_the_config(tmp_path, monkeypatch):
    """`--distillation-advantage-clip` reaches SCOPEConfig's field; unset, the paper's method (None) runs."""
    import scope_trl.apps.miniatures.pipeline as pipeline

    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    seen = []
    original = pipeline.make_trainer

    def spy(row, *args, **kwargs):
        trainer = original(row, *args, **kwargs)
        seen.append(trainer.args.distillation_advantage_clip)
        return trainer

    monkeypatch.setattr(pipeline, "make_trainer", spy)
    assert main(["demo", "--smoke", "--max-steps", "1", "--output-dir", str(tmp_path / "a")]) == 0
    assert (
        main(
            [
                "demo",
                "--smoke",
                "--max-steps",
                "1",
                "--output-dir",
                str(tmp_path / "b"),
                "--distillation-advantage-clip",
                "1.5",
            ]
        )
        == 0
    )
    assert seen == [None, 1.5]


def test_demo_help_states_the_demo_defaults():
    """The `(default: ...)` in each demo flag's help is the value `DemoSettings` really uses."""
    import re

    from scope_trl.apps.demo import DemoSettings
    from scope_trl.cli import make_parser

    demo_parser = make_parser()._subparsers._group_actions[0].choices["demo"]
    defaults = DemoSettings()
    checked = 0
    for action in demo_parser._actions:
        match = re.search(r"\(default: ([^)]+)\)", action.help or "")
        field = action.dest
        if match and hasattr(defaults, field) and field not in ("method", "seed"):
            assert float(match.group(1)) == float(getattr(defaults, field)), (action.option_strings, match.group(1))
            checked += 1
    assert checked >= 6


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_env_lists_versions(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "- trl version: 1.16" in out and "- scope-trl version:" in out


def test_console_script_is_installed():
    executable = console_script()
    result = subprocess.run([executable, "demo", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--method" in result.stdout and "--smoke" in result.stdout


def test_quickstart_example_runs_offline(tmp_path):
    result = run_offline(
        "examples/dgpo_quickstart.py", "--toy", "--max-steps", "2", "--output-dir", str(tmp_path), timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "model.safetensors").exists()


HEAVY = ("torch", "transformers", "trl", "accelerate", "datasets")


def test_help_imports_nothing_heavy():
    """`scope-trl --help` (and `import scope_trl`) import neither torch nor transformers nor TRL: the trainers load on
    first use, so the help answers at once instead of after seconds of imports."""
    probe = (
        "import sys, scope_trl\n"
        "from scope_trl.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', [name for name in {HEAVY!r} if name in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: scope-trl" in result.stdout and "LOADED []" in result.stdout, result.stdout


def test_the_package_exports_load_on_first_use():
    import scope_trl

    assert {"SCOPETrainer", "DGPOConfig", "dual_path_weights"} <= set(dir(scope_trl))
    assert all(getattr(scope_trl, name) is not None for name in scope_trl.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'SCOPETrainr'"):
        scope_trl.SCOPETrainr  # noqa: B018


def test_an_error_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    missing = ["eval", "--model", str(tmp_path / "nowhere"), "--benchmarks", "amc23", "--data-dir", str(tmp_path)]
    assert main(missing) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert error.startswith("scope-trl eval: error: FileNotFoundError: The model ") and "--debug" in error, error
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["--debug", *missing])


def test_training_command_errors_are_one_line(capsys, monkeypatch, tmp_path):
    """Unknown and ambiguous flags and bad values name themselves (with the nearest flag) in one line, instead of
    TRL's generic "arguments are not used" or argparse's full usage; `--debug` before the sub-command raises."""
    cases = {
        ("--lerning_rate", "0.1"): r"Unknown argument\(s\): --lerning_rate \(did you mean --learning_rate\?\)\.",
        ("--learning_rate", "fast"): r"Argument --learning_rate.*: invalid float value: 'fast'\.",
        ("--teacher_model", "x"): r"Ambiguous option: --teacher_model could match --teacher_model_name_or_path",
    }
    for flags, message in cases.items():
        assert main(["scope", *flags, "--output_dir", str(tmp_path)]) == 1
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "usage:" not in error, error
        assert re.match(f"scope-trl scope: error: {message}.*`scope-trl scope --help` lists them", error), error
    with pytest.raises(ValueError, match="did you mean --learning_rate"):
        main(["--debug", "scope", "--lerning_rate", "0.1"])
