"""The benchmark script runs (a smoke run: it measures nothing here, timings are never asserted)."""

import json
import math
import os
import sys

import pytest

from .helpers import run_offline


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_step_time_benchmark_smoke(tmp_path):
    """Every row and every phase runs (tiny models: the targets are computed, not enforced)."""
    result = run_offline("benchmarks/step_time.py", "--smoke", "--output-dir", str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "step_time_smoke.json").read_text())
    rows = record["rows"]
    assert list(rows) == ["grpo", "dgpo", "scope", "scope_no_routing", "distillation", "scope_acc0", "scope_acc100"]
    for key, row in rows.items():
        (run,) = row["repeats"]
        phases = run["phases"]
        for phase in ("generation", "loss_forward", "loss_backward", "optimizer", "total"):
            assert phases[phase] > 0, (key, phase)
        assert run["completion_lengths"] == [8, 8], key  # min_new_tokens: every completion at the cap
        assert run["peak_mib"] > 0
        assert (phases["reward"] > 0) == (key != "distillation")  # the distillation trainer has no reward
        assert run["old_forwards_per_generation"] == 0  # on-policy (1 step per generation): TRL computes no π_old
    teacher_rows = {key: row["repeats"][0]["teacher_rows_per_generation"] for key, row in rows.items()}
    assert teacher_rows == {
        "grpo": 0,
        "dgpo": 0,
        "scope": 2,
        "scope_no_routing": 4,
        "distillation": 4,
        "scope_acc0": 4,
        "scope_acc100": 0,
    }
    for key in ("scope", "scope_no_routing", "distillation", "scope_acc0"):
        assert rows[key]["repeats"][0]["phases"]["teacher"] > 0, key
    assert rows["scope_acc100"]["repeats"][0]["teacher_forward"] == 0  # no teacher forward at all (not a timing)
    for key in ("scope", "scope_no_routing", "scope_acc0", "scope_acc100"):  # π_old is the loss forward's own
        run = rows[key]["repeats"][0]
        assert run["extra_forwards_per_generation"] == 0 and run["phases"]["extra_forward"] == 0, key
    assert set(record["checks"]) == {"overhead", "proportional"}
    text = (tmp_path / "step_time_smoke.md").read_text()
    assert "| row | generation | reward |" in text and "SCOPE's own overhead" in text
    assert (tmp_path / "step_time_smoke.png").stat().st_size > 0

    # Off-policy (2 steps per generation), in its own process: TRL computes π_old and SCOPE reuses it.
    off_policy = ["--steps-per-generation", "2", "--rows", "scope", "--isolation", "process"]
    result = run_offline(
        "benchmarks/step_time.py", "--smoke", *off_policy, "--output-dir", str(tmp_path / "off_policy"), timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = json.loads((tmp_path / "off_policy" / "step_time_smoke.json").read_text())["rows"]["scope"]["repeats"]
    assert run["old_forwards_per_generation"] == 1 and run["phases"]["old_forward"] > 0
    assert run["extra_forwards_per_generation"] == 0 and run["phases"]["extra_forward"] == 0


@pytest.mark.vllm
@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to pin apart"
)
def test_step_time_benchmark_smoke_with_a_vllm_teacher(tmp_path):
    """The vLLM row against a real vLLM server (its CPU build, started once, ~1 min of this test): the teacher phase is
    the HTTP round trip, and the server and every row's trainer are pinned to disjoint cores."""
    result = run_offline(
        "benchmarks/step_time.py",
        "--smoke",
        "--rows",
        "grpo,scope_vllm_teacher",
        "--output-dir",
        str(tmp_path),
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    record = json.loads((tmp_path / "step_time_smoke.json").read_text())
    rows, settings, server = record["rows"], record["settings"], record["teacher_server"]
    assert list(rows) == ["grpo", "scope_vllm_teacher"]
    trainer_cores, server_cores = settings["trainer_cores"], settings["server_cores"]
    assert trainer_cores and server_cores and not set(trainer_cores) & set(server_cores)
    for key, row in rows.items():
        (run,) = row["repeats"]
        assert run["phases"]["total"] > 0 and run["phases"]["generation"] > 0, key
        assert run["cores"] == trainer_cores and run["torch_threads"] == len(trainer_cores), key
    served = rows["scope_vllm_teacher"]["repeats"][0]
    assert served["phases"]["teacher"] > 0 and 0 < served["teacher_request"] <= served["phases"]["teacher"]
    assert served["teacher_rows_per_generation"] == 2  # the incorrect half of 4 rollouts went to the server
    assert served["teacher_forward"] == 0  # no teacher in the trainer's process
    assert server["seen"]["cores"] == server_cores and server["omp_threads_bind"] == ",".join(map(str, server_cores))
    assert server["startup_seconds"] > 0 and server["version"]
    text = (tmp_path / "step_time_smoke.md").read_text()
    assert f"pinned to core(s) {trainer_cores}" in text and "SCOPE, teacher on a vLLM server" in text


def test_step_time_refuses_what_the_vllm_row_cannot_run():
    """Without vLLM, or with a teacher head size vLLM's CPU attention does not serve, the row is refused before
    anything runs; the default rows never include it."""
    step_time = load_script("step_time")
    assert "scope_vllm_teacher" in step_time.ROWS and "scope_vllm_teacher" not in step_time.DEFAULT_ROWS
    assert "cannot serve" in step_time.teacher_head_problem(96)  # teacher head size 48
    assert all(step_time.teacher_head_problem(64 * k) is None for k in range(1, 33))  # what --help promises
    if step_time.served_teacher_problem(128) is not None:  # vLLM missing: the row is refused as such
        assert "not installed" in step_time.served_teacher_problem(128)
    with pytest.raises(SystemExit):
        step_time.parse_args(["--rows", "grpo,scope_vllm_teacher", "--hidden", "96"])
    assert step_time.parse_args([]).server_cores is None  # no vLLM row: nothing pinned
    if hasattr(os, "sched_getaffinity"):
        core = min(os.sched_getaffinity(0))
        with pytest.raises(ValueError, match="overlap"):
            step_time.assign_cores([core], [core], served=True)
        with pytest.raises(ValueError, match="not in --rows"):
            step_time.assign_cores(None, [core], served=False)
    assert step_time.parse_cores("0-2,5") == [0, 1, 2, 5]


def test_step_time_checks_catch_an_overhead_and_a_disproportionate_teacher():
    step_time = load_script("step_time")

    def run(total, generation=0.5, teacher=0.0, extra=0.0, share=0.5):
        phases = dict.fromkeys(step_time.PHASES, 0.0)
        phases.update(total=total, generation=generation, teacher=teacher, extra_forward=extra)
        return {"phases": phases, "incorrect_share": share}

    def rows(scope_total, teachers=(0.2, 0.1, 0.0)):
        # GRPO: 1.0 s, of which 0.5 s generation. SCOPE at 50%: generation 0.5 s, teacher, extra forward 0.1 s.
        acc0, acc50, acc100 = teachers
        return {
            "grpo": {"repeats": [run(1.0), run(1.0)]},
            "scope": {"repeats": [run(scope_total, teacher=acc50, extra=0.1)] * 2},
            "scope_acc0": {"repeats": [run(1.3, teacher=acc0, extra=0.1, share=1.0)]},
            "scope_acc100": {"repeats": [run(1.1, teacher=acc100, extra=0.1, share=0.0)]},
        }

    ok = step_time.checks(rows(1.22))  # own overhead: (1.22 - 0.5 - 0.1 - 0.1) - (1.0 - 0.5) = 0.02 s: 2% of 1.0 s
    assert ok["overhead"]["passed"] and abs(ok["overhead"]["fraction"] - 0.02) < 1e-9
    assert ok["proportional"]["passed"] and abs(ok["proportional"]["intercept"]) < 1e-9
    late = step_time.checks(rows(1.26))  # 6%: over the 3% target
    assert not late["overhead"]["passed"] and late["overhead"]["fraction"] > 0.05
    flat = step_time.checks(rows(1.22, teachers=(0.2, 0.2, 0.0)))  # 50% incorrect costs as much as 100%
    assert not flat["proportional"]["passed"]
    offset = step_time.checks(rows(1.22, teachers=(0.25, 0.15, 0.05)))  # 0.05 s of teacher time without a teacher row
    assert not offset["proportional"]["passed"] and offset["proportional"]["intercept_fraction"] > 0.15
    assert set(step_time.checks({"grpo": rows(1.22)["grpo"]})) == set()  # rows not run: no check


def load_script(name):
    """A benchmark script as a module (they live outside the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", os.path.join(REPO, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through it
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
    result = run_offline("benchmarks/soak.py", "--smoke", "--output-dir", str(tmp_path), timeout=600)
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
    result = run_offline("benchmarks/teacher_memory.py", "--smoke", "--output-dir", str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    record = json.loads((tmp_path / "teacher_memory_smoke.json").read_text())
    assert [row["length"] for row in record["rows"]] == [64, 128]
    assert record["checks"]["agreement"]["passed"]  # the fused scores equal the full-logits log-probs
    # The figures themselves are not asserted: at the smoke sizes they are within the resident counters' noise.
    assert all(math.isfinite(row[key]) for row in record["rows"] for key in ("ours_mib", "naive_mib"))
    assert "| completion tokens | ours (MiB) |" in (tmp_path / "teacher_memory_smoke.md").read_text()


def test_a_window_below_the_counters_resolution_reads_zero(monkeypatch):
    """The CPU window reads VmRSS at entry and VmHWM at exit; the kernel batches those counters per thread, so a window
    that allocates nothing can read a high-water mark below the entry level (the smoke run measured -0.04 MiB)."""
    peak_memory = load_script("peak_memory")
    readings = iter([1000, 990])  # KiB: VmRSS at entry, then a VmHWM 10 KiB below it
    monkeypatch.setattr(peak_memory, "_status_kib", lambda key: next(readings))
    monkeypatch.setattr(peak_memory.Path, "write_text", lambda self, text: None)  # no reset of the real counters
    with peak_memory.PeakMemory("cpu") as window:
        pass
    assert window.mib == 0.0 and window.peak_mib == 990 / 1024


def test_teacher_memory_checks():
    module = load_script("teacher_memory")

    def rows(ours, naive):
        return [
            {"length": n, "ours_mib": o, "naive_mib": v, "ratio": v / o, "max_abs_difference": 0.0}
            for n, o, v in zip((1024, 8192), ours, naive)
        ]

    assert all(c["passed"] for c in module.checks(rows((100, 500), (1000, 8000))).values())
    assert not module.checks(rows((100, 900), (1000, 8000)))["ratio_at_longest"]["passed"]  # 8.9x < 10x
    assert not module.checks(rows((10, 200), (1000, 8000)))["ours_growth"]["passed"]  # 20x for 8x the length


def test_miniature_curves_keep_one_colour_per_row_in_every_panel(tmp_path):
    """A row without data in a panel (GRPO has no teacher KL) must not shift the colours of the rows after it, and
    every panel's legend names the rows it draws: the bug was OPD drawn in GRPO's colour under a legend drawn once."""
    miniatures = load_script("miniatures")

    def run(**curves):
        return {"curves": {"step": [1, 2, 3], **curves}}

    record = {
        "title": "test",
        "runs": {
            "grpo": {0: run(reward=[0.1, 0.2, 0.3], **{"clip_ratio/region_mean": [0.0, 0.0, 0.0]})},
            "opd": {0: run(reward=[0.2, 0.2, 0.4], **{"scope/teacher_kl": [0.5, 0.4, 0.3]})},
            "control": {0: run(reward=[0.3, 0.1, 0.2], **{"scope/teacher_kl": [-0.2, -0.1, -0.2]})},
        },
    }
    drawn = miniatures.plot_curves("test", record, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
    colours = drawn["reward"]["lines"]
    assert list(colours) == ["GRPO", "OPD (same rollouts)", "teacher-free control"]
    assert len(set(colours.values())) == 3
    kl = drawn["scope/teacher_kl"]
    assert kl["lines"] == {"OPD (same rollouts)": colours["OPD (same rollouts)"]}  # the control has no teacher
    for panel in drawn.values():
        assert panel["legend"] == list(panel["lines"])
    assert "clip_ratio/region_mean" not in drawn  # an on-policy row's share is 0 at every step: no flat panel
    record["runs"]["grpo"][0]["curves"]["clip_ratio/region_mean"][1] = 0.02
    assert miniatures.plot_curves("test", record, tmp_path / "curves.png")["clip_ratio/region_mean"]["lines"]
