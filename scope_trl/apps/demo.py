"""The embedded-default job: a teacher, a student and SCOPE on a built-in verifiable task, offline, on CPU.

`scope-trl demo` (the README's `make demo`) runs miniature task A of `benchmarks/miniatures.py`
(`scope_trl.apps.miniatures.tasks.CarryTask`) in five stages and reports the student before and after RL:

1. **Task.** Add two 8-digit numbers given column by column, least significant digit first (`38750412...=`), and
   write every column's sum digit and carry: 16 decisive tokens, all checked by the verifier. Train, validation and
   test problems are disjoint by construction.
2. **Teacher.** A 0.1M-parameter Qwen3 (hidden 64, 2 layers) taught every problem by supervised fine-tuning (a plain
   PyTorch loop on the completion tokens): it solves nearly all of them.
3. **Student.** The same architecture, fine-tuned on problems whose columns rarely carry (5% of columns): it lacks
   the carry skill the task needs and solves about a fifth of the test problems. Its RL prompts are training problems
   at its edge of competence (of 8 samples, some right and some wrong).
4. **RL.** `--method scope` (default): `SCOPETrainer` with the teacher; `opd`: plain on-policy distillation (SCOPE
   with `routing=False`); `grpo`: TRL's `GRPOTrainer`; `dgpo`: `DGPOTrainer` with 4 optimizer steps per generation
   batch. 200 steps of 16 prompts x 8 rollouts, warm-up over the first 10% then cosine decay, the learning rate that
   the miniature benchmark's validation selection chose for SCOPE on this task.
5. **Evaluation.** k samples per test problem at temperature 1 for the student before and after RL and for the
   teacher: Avg@k (mean fraction correct) and Pass@k (unbiased estimator with n = k).

Outputs under `--output-dir`: `demo_report.json` (settings, timings, metrics, log history), `demo_curves.png` (training
reward, `scope/teacher_kl`, route shares; needs the `plot` extra, and is skipped with a one-line message without it:
the report and the result table come first, so a failing plot loses nothing) and the SFT'd models. `--smoke` runs the
same pipeline with tiny budgets (the tests use it). The demo reports whatever it measures rather than being tuned to
show a gain; how SCOPE, its ablations and the baselines compare on this and other tasks over seeds is measured by
`benchmarks/miniatures.py` (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from transformers import TrainerCallback


METHODS = ("scope", "opd", "grpo", "dgpo")
TASK = {"name": "carry", "student_carry_rate": 0.05}  # miniature task A, as in benchmarks/miniatures.py
ROW_OF_METHOD = {"scope": "scope", "opd": "opd", "grpo": "grpo", "dgpo": "dgpo"}


@dataclass
class DemoSettings:
    """The budget of one demo run; `smoke()` shrinks it to an end-to-end check of a few seconds per stage."""

    method: str = "scope"
    max_steps: int = 200
    teacher_sft_steps: int = 1500
    student_sft_steps: int = 1000
    # The rate `benchmarks/miniatures.py` chose for SCOPE on task A from its grid, on validation problems.
    learning_rate: float = 3e-3
    num_generations: int = 8
    prompts_per_step: int = 16
    rl_prompts: int = 1600
    # SCOPEConfig.distillation_advantage_clip for --method scope / opd; None (the paper's method) by default
    distillation_advantage_clip: float | None = None
    eval_problems: int = 500
    k: int = 8
    seed: int = 0

    def smoke(self) -> DemoSettings:
        self.max_steps, self.teacher_sft_steps, self.student_sft_steps = 4, 30, 10
        self.eval_problems, self.k, self.num_generations, self.prompts_per_step, self.rl_prompts = 8, 4, 4, 2, 4
        return self

    def budget(self):
        from .miniatures.pipeline import Budget
        from .miniatures.rl import RLSettings

        rl = RLSettings(
            max_steps=self.max_steps,
            prompts_per_step=self.prompts_per_step,
            num_generations=self.num_generations,
            learning_rate=self.learning_rate,
            seed=self.seed,
        )
        return Budget(
            teacher_sft_steps=self.teacher_sft_steps,
            student_sft_steps=self.student_sft_steps,
            rl=rl,
            rl_prompts=self.rl_prompts,
            eval_problems=self.eval_problems,
            k=self.k,
        )


# --------------------------------------------------------------------------------------------------------------------
# The per-step table printed during RL
# --------------------------------------------------------------------------------------------------------------------


REWARD_KEY = "rewards/carry_correct/mean"
COMMON_COLUMNS = [("step", "step", "d"), ("correct", REWARD_KEY, ".3f")]
METHOD_COLUMNS = {
    "scope": [
        ("teacher_kl", "scope/teacher_kl", ".3f"),
        ("frac_mle", "scope/frac_correct", ".3f"),
        ("frac_opd", "scope/frac_incorrect", ".3f"),
        ("mle_loss", "scope/mle_loss", ".4f"),
        ("opd_loss", "scope/opd_loss", ".4f"),
    ],
    "grpo": [("clip_ratio", "clip_ratio/region_mean", ".4f"), ("entropy", "entropy", ".3f")],
    "dgpo": [
        ("clip_low", "clip_ratio/low_mean", ".4f"),
        ("clip_high", "clip_ratio/high_mean", ".4f"),
        ("policy_loss", "policy_loss", ".4f"),
        ("entropy", "entropy", ".3f"),
    ],
}
METHOD_COLUMNS["opd"] = [c for c in METHOD_COLUMNS["scope"] if c[0] not in ("frac_mle", "mle_loss")]
COLUMN_WIDTH = 11


class MetricsPrinter(TrainerCallback):
    """Prints one aligned line of the method's main metrics per logged step ("-" where a metric is absent), every
    `every` steps."""

    def __init__(self, columns, print_fn=print, every: int = 10):
        self.columns, self.print, self.every = columns, print_fn, every
        self.header_printed = False
        self.start = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "reward" not in logs:
            return
        if state.global_step % self.every and state.global_step != state.max_steps:
            return
        if not self.header_printed:
            self.print("".join(f"{header:>{COLUMN_WIDTH}s}" for header, _, _ in self.columns) + "       time")
            self.header_printed = True
        cells = []
        for _, key, spec in self.columns:
            value = state.global_step if key == "step" else logs.get(key)
            cells.append(f"{'-':>{COLUMN_WIDTH}s}" if value is None else f"{value:>{COLUMN_WIDTH}{spec}}")
        self.print("".join(cells) + f"{time.time() - self.start:>10.0f}s")


# --------------------------------------------------------------------------------------------------------------------
# Report: summary table, plot
# --------------------------------------------------------------------------------------------------------------------


def summary_table(metrics: dict, k: int) -> str:
    rows = [("student before", "student_before"), ("student after", "student_after"), ("teacher", "teacher")]
    lines = [f"{'':16s} {f'Avg@{k}':>8s} {f'Pass@{k}':>8s}"]
    lines += [f"{label:16s} {metrics[key]['avg@k']:8.3f} {metrics[key]['pass@k']:8.3f}" for label, key in rows]
    return "\n".join(lines)


def plot_curves(log_history: list[dict], method: str, path: Path) -> None:
    """Training reward, teacher KL and route shares per step (the last two exist only for scope / opd).

    Needs matplotlib (extra `plot`); raises `MissingOptionalDependency` naming the install command without it.
    """
    from ..optional import import_pyplot

    plt = import_pyplot("drawing the demo's training curves")

    entries = [e for e in log_history if "reward" in e]
    steps = [e["step"] for e in entries]
    panels = [
        ("training reward (verifier)", [("reward", "reward")]),
        ("scope/teacher_kl", [("scope/teacher_kl", "teacher KL")]),
        ("route shares", [("scope/frac_correct", "MLE path (correct)"), ("scope/frac_incorrect", "OPD path")]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (title, series) in zip(axes, panels):
        plotted = False
        for key, label in series:
            values = [e.get(key) for e in entries]
            if any(v is not None for v in values):
                ax.plot(steps, [math.nan if v is None else v for v in values], label=label)
                plotted = True
        if not plotted:
            ax.text(0.5, 0.5, f"not logged by {method}", ha="center", va="center", transform=ax.transAxes)
        elif len(series) > 1:
            ax.legend()
        ax.set_title(title)
        ax.set_xlabel("step")
    fig.suptitle(f"scope-trl demo: {method} on miniature task A (carries)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------------------------------


def _train(settings: DemoSettings, task, budget, paths, prompts, test, output_dir: Path, print_fn) -> dict:
    """The RL run of the chosen method on the student, with a console line every twentieth of the run."""
    from .miniatures.pipeline import row, run_row

    method_row = row(ROW_OF_METHOD[settings.method])
    clip = settings.distillation_advantage_clip
    if clip is not None and method_row.trainer == "scope":
        method_row = replace(method_row, config={**method_row.config, "distillation_advantage_clip": clip})
    print_fn(
        f"[{settings.method}] {settings.max_steps} steps of {settings.prompts_per_step} prompts x "
        f"{settings.num_generations} rollouts, lr {settings.learning_rate:g} (10% warm-up, cosine)"
        + ("" if clip is None or method_row.trainer != "scope" else f", distillation advantage clip {clip:g}")
    )
    columns = COMMON_COLUMNS + METHOD_COLUMNS[settings.method]
    callback = MetricsPrinter(columns, print_fn, every=max(1, settings.max_steps // 20))
    return run_row(
        method_row, task, budget.rl, paths, prompts, test, settings.k, output_dir / "rl", settings.seed, [callback]
    )


def _save_report(report: dict, settings: DemoSettings, output_dir: Path, print_fn) -> None:
    """Write the report and print the summary, then draw the curves: the results reach the disk and the screen
    before that optional step, so a failing plot loses nothing."""
    plot_path, report_path = output_dir / "demo_curves.png", output_dir / "demo_report.json"
    report_path.write_text(json.dumps(report, indent=2))
    timings = report["seconds"]
    print_fn("")
    print_fn(summary_table(report["metrics"], settings.k))
    print_fn(
        f"total {timings['total']:.0f}s ("
        + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items() if k != "total")
        + ")"
    )
    print_fn(f"report: {report_path}")
    try:
        plot_curves(report["log_history"], settings.method, plot_path)
    except Exception as error:  # optional: the run's results are already saved
        report["plot_error"] = f"{type(error).__name__}: {error}"
        print_fn(f"plot:   not drawn ({error})")
    else:
        report["plot"] = str(plot_path)
        print_fn(f"plot:   {plot_path}")
    report_path.write_text(json.dumps(report, indent=2))


def run_demo(
    settings: DemoSettings | None = None, output_dir: str | os.PathLike | None = None, print_fn=print
) -> dict:
    """Run the whole demo and return the report (also written to `demo_report.json`)."""
    from .miniatures.pipeline import evaluate_path, rl_prompts, sft_models
    from .miniatures.tasks import make_task

    settings = settings or DemoSettings()
    if settings.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {settings.method!r}.")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    output_dir = Path(output_dir or tempfile.mkdtemp(prefix="scope-trl-demo-"))
    output_dir.mkdir(parents=True, exist_ok=True)
    task = make_task(TASK["name"], student_carry_rate=TASK["student_carry_rate"])
    budget = settings.budget()
    start, timings = time.time(), {}
    print_fn(f"scope-trl demo: {settings.method} on miniature task {task.title}, offline, on CPU -> {output_dir}")

    t0 = time.time()
    paths = sft_models(task, budget, settings.seed, output_dir / "models", print_fn)
    timings["sft"] = time.time() - t0
    t0 = time.time()
    prompts, edge = rl_prompts(task, budget, paths["student"], settings.seed, output_dir / "models")
    timings["rl_prompts"] = time.time() - t0
    print_fn(
        f"[prompts] {len(prompts)} RL prompts at the student's edge (of {edge['candidates']} training problems "
        f"sampled {settings.k} times: {edge['all_wrong']} all wrong, {edge['all_correct']} all right)"
    )

    test = task.problems("test", settings.eval_problems, 0)
    t0 = time.time()
    print_fn(f"[eval] {len(test)} test problems x {settings.k} samples at temperature 1")
    metrics = {role: evaluate_path(paths[role], task, test, settings.k, settings.seed) for role in paths}
    metrics["student_before"] = metrics.pop("student")
    timings["eval_before"] = time.time() - t0
    for key in ("teacher", "student_before"):
        print_fn(
            f"  {key}: Avg@{settings.k} {metrics[key]['avg@k']:.3f}  Pass@{settings.k} {metrics[key]['pass@k']:.3f}"
        )

    result = _train(settings, task, budget, paths, prompts, test, output_dir, print_fn)
    metrics["student_after"] = result["summary"]
    timings["rl"] = result["rl_seconds"]
    timings["total"] = time.time() - start

    report = {
        "method": settings.method,
        "settings": asdict(settings),
        "task": task.title,
        "k": settings.k,
        "eval_problems": settings.eval_problems,
        "rl_prompts": edge,
        "metrics": metrics,
        "steps": settings.max_steps,
        "seconds": timings,
        "plot": None,
        "curves": result["curves"],
        "log_history": result["log_history"],
    }
    _save_report(report, settings, output_dir, print_fn)
    return report
