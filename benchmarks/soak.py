"""Soak test: long CPU runs of SCOPE and DGPO on miniature task A, watching memory, step time and every metric.

A training run lasts days; a leak of a few kilobytes per step, a metric that turns NaN at step 700 or a step that
slows down as the logs grow only show up in long runs. This script trains, on task A of `benchmarks/miniatures.py`
(the same SFT'd teacher and student, cached in `--cache-dir`), for `--steps` optimizer steps each:

    scope   SCOPETrainer, one optimizer step per generation batch (the paper's setting)
    dgpo    DGPOTrainer with 4 optimizer steps per generation batch (off-policy, where its soft clip acts)

and records after every optimizer step the process's resident memory (VmRSS), the step's wall time and every metric
TRL logs. The checks (exit status 1 if one fails):

    memory     resident memory at the last step within 10% of its value at step 100 (after warm-up: allocator
               pools, the first generation, lazily built kernels)
    finite     no logged metric is NaN or infinite, at any step
    step time  the median step time of the last 100 steps within 25% of the median of steps 101-200 (whole
               generation cycles: with 4 steps per generation one step in four generates)

Outputs in `--output-dir` (default `benchmarks/results`): `soak.json` (per step: memory, time, metrics; the
checks) , `soak.md` (the summary table) and `soak.png` (memory and step time against the step). Not part of CI
(about 5 minutes on 2 CPU cores with cached models); `--smoke` runs a few steps and is in the tests.

    python benchmarks/soak.py                   # 1,000 steps of each
    python benchmarks/soak.py --smoke --output-dir /tmp/soak
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing: `python benchmarks/soak.py`

from scope_trl.apps.miniatures.pipeline import Budget, rl_prompts, sft_models  # noqa: E402
from scope_trl.apps.miniatures.rl import ROWS_BY_KEY, make_trainer, rl_dataset  # noqa: E402
from scope_trl.apps.miniatures.tasks import make_task  # noqa: E402


# The rows and the learning rates `benchmarks/miniatures.py` selected for them on task A's validation problems.
SOAK_ROWS = {"scope": ("scope", 3e-3), "dgpo": ("dgpo", 1e-3)}
MEMORY_TOLERANCE = 0.10
STEP_TIME_TOLERANCE = 0.25


def resident_bytes() -> int:
    """This process's resident set size (Linux `/proc`; 0 where it is unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def make_recorder():
    from transformers import TrainerCallback

    class StepRecorder(TrainerCallback):
        """Memory and wall time at the end of every optimizer step; TRL's logged metrics by step."""

        def __init__(self):
            self.steps: list[dict] = []
            self.metrics: dict[int, dict] = {}
            self._last = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self._last is None:
                self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.steps.append({"step": state.global_step, "rss": resident_bytes(), "seconds": now - self._last})
            self._last = now

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.metrics.setdefault(state.global_step, {}).update(logs or {})

    return StepRecorder()


def window_median(values: list[float], start: int, stop: int) -> float:
    return statistics.median(values[start:stop])


def checks(steps: list[dict], metrics: dict[int, dict]) -> dict:
    """The three soak checks on one run; the windows shrink with a short (smoke) run."""
    count = len(steps)
    reference = min(100, max(1, count // 2)) - 1  # index of step 100 (or the middle of a short run)
    window = min(100, max(1, count // 4))
    rss_reference, rss_last = steps[reference]["rss"], steps[-1]["rss"]
    memory_change = rss_last / rss_reference - 1 if rss_reference else 0.0
    times = [entry["seconds"] for entry in steps]
    early = window_median(times, reference + 1, reference + 1 + window)
    late = window_median(times, count - window, count)
    nonfinite = sorted(
        {
            f"{key} (step {step})"
            for step, logs in metrics.items()
            for key, value in logs.items()
            if isinstance(value, (int, float)) and not math.isfinite(value)
        }
    )
    return {
        "memory": {
            "reference_step": steps[reference]["step"],
            "rss_reference_mib": rss_reference / 2**20,
            "rss_last_mib": rss_last / 2**20,
            "rss_peak_mib": max(entry["rss"] for entry in steps) / 2**20,
            "change": memory_change,
            "passed": abs(memory_change) <= MEMORY_TOLERANCE,
        },
        "finite": {"nonfinite": nonfinite[:20], "count": len(nonfinite), "passed": not nonfinite},
        "step_time": {
            "early_median_s": early,
            "late_median_s": late,
            "change": late / early - 1,
            "passed": late / early - 1 <= STEP_TIME_TOLERANCE,
        },
    }


def soak_row(name: str, steps: int, budget: Budget, cache_dir: Path, work_dir: Path, print_fn=print) -> dict:
    row_key, learning_rate = SOAK_ROWS[name]
    row = ROWS_BY_KEY[row_key]
    task = make_task("carry")
    paths = sft_models(task, budget, 0, cache_dir, print_fn)
    prompts, _ = rl_prompts(task, budget, paths["student"], 0, cache_dir)
    settings = replace(
        budget.rl, max_steps=steps, learning_rate=learning_rate, steps_per_generation=row.steps_per_generation
    )
    needed = settings.steps_per_generation * settings.prompts_per_step
    prompts = prompts * -(-needed // max(1, len(prompts)))
    recorder = make_recorder()
    import warnings

    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = make_trainer(
            row, settings, task, paths["student"], paths["teacher"], rl_dataset(prompts), work_dir / name, [recorder]
        )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    start = time.time()
    trainer.train()
    elapsed = time.time() - start
    result = checks(recorder.steps, recorder.metrics)
    print_fn(
        f"  {name}: {len(recorder.steps)} steps in {elapsed:.0f}s; RSS {result['memory']['rss_reference_mib']:.0f} -> "
        f"{result['memory']['rss_last_mib']:.0f} MiB ({result['memory']['change']:+.1%}); step time "
        f"{result['step_time']['early_median_s'] * 1000:.0f} -> {result['step_time']['late_median_s'] * 1000:.0f} ms "
        f"({result['step_time']['change']:+.1%}); non-finite metrics: {result['finite']['count']}"
    )
    return {
        "row": row.label,
        "learning_rate": learning_rate,
        "steps_per_generation": row.steps_per_generation,
        "seconds": elapsed,
        "checks": result,
        "steps": recorder.steps,
        "metrics": {str(step): logs for step, logs in sorted(recorder.metrics.items())},
    }


def markdown(record: dict) -> str:
    reference = next(iter(record["runs"].values()))["checks"]["memory"]["reference_step"]
    lines = [
        f"# Soak: {record['steps']} optimizer steps per row on miniature task A (CPU)",
        "",
        f"| row | steps/gen. | time | RSS at step {reference} | RSS at the end | change | peak | step time early -> "
        "late | change | non-finite metrics |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in record["runs"].values():
        memory, timing, finite = run["checks"]["memory"], run["checks"]["step_time"], run["checks"]["finite"]
        lines.append(
            f"| {run['row']} | {run['steps_per_generation']} | {run['seconds'] / 60:.1f} min | "
            f"{memory['rss_reference_mib']:.0f} MiB | {memory['rss_last_mib']:.0f} MiB | {memory['change']:+.1%} "
            f"{'✓' if memory['passed'] else '✗'} | {memory['rss_peak_mib']:.0f} MiB | "
            f"{timing['early_median_s'] * 1000:.0f} -> {timing['late_median_s'] * 1000:.0f} ms | "
            f"{timing['change']:+.1%} {'✓' if timing['passed'] else '✗'} | {finite['count']} "
            f"{'✓' if finite['passed'] else '✗'} |"
        )
    lines += [
        "",
        f"Checks: memory at the end within {MEMORY_TOLERANCE:.0%} of step 100; no NaN or infinite logged metric; "
        f"median step time of the last 100 steps within +{STEP_TIME_TOLERANCE:.0%} of steps 101-200. "
        f"All passed: {record['passed']}.",
    ]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    from scope_trl.optional import import_pyplot

    plt = import_pyplot("drawing the soak plot")
    figure, (memory_axis, time_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for run in record["runs"].values():
        steps = [entry["step"] for entry in run["steps"]]
        memory_axis.plot(steps, [entry["rss"] / 2**20 for entry in run["steps"]], label=run["row"])
        # A moving median over 20 steps: single steps alternate between generating and not.
        times = [entry["seconds"] * 1000 for entry in run["steps"]]
        smooth = [statistics.median(times[max(0, i - 19) : i + 1]) for i in range(len(times))]
        time_axis.plot(steps, smooth, label=run["row"])
    memory_axis.set(xlabel="optimizer step", ylabel="resident memory (MiB)", title="memory")
    time_axis.set(xlabel="optimizer step", ylabel="step time, median of 20 (ms)", title="step time")
    for axis in (memory_axis, time_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps per row (default: 1000)")
    parser.add_argument("--rows", default="scope,dgpo", help=f"comma-separated, among {', '.join(SOAK_ROWS)}")
    parser.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--cache-dir", default=str(REPO / ".miniatures_cache"), help="SFT'd models (shared)")
    parser.add_argument("--smoke", action="store_true", help="tiny models and a few steps: seconds, for the tests")
    args = parser.parse_args(argv)
    rows = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = [name for name in rows if name not in SOAK_ROWS]
    if unknown:
        parser.error(f"unknown row(s) {unknown}; choose among {', '.join(SOAK_ROWS)}")
    budget = Budget()
    steps = args.steps
    if args.smoke:
        budget, steps = budget.smoke(), min(steps, 8)
    output_dir, cache_dir = Path(args.output_dir), Path(args.cache_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        cache_dir = output_dir / "cache"
    print(f"soak: {', '.join(rows)} for {steps} optimizer steps each on miniature task A")
    import tempfile

    record = {"steps": steps, "smoke": args.smoke, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="soak-") as work_dir:
        for name in rows:
            record["runs"][name] = soak_row(name, steps, budget, cache_dir, Path(work_dir))
    record["passed"] = all(check["passed"] for run in record["runs"].values() for check in run["checks"].values())
    stem = "soak_smoke" if args.smoke else "soak"
    (output_dir / f"{stem}.json").write_text(json.dumps(record, indent=1))
    (output_dir / f"{stem}.md").write_text(markdown(record))
    print(markdown(record))
    try:
        plot(record, output_dir / f"{stem}.png")
    except Exception as error:  # the results are on disk; a plot is optional
        print(f"plot: not drawn ({error})")
    return 0 if record["passed"] or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
