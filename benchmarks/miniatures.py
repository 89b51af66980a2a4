"""Learning-quality miniatures: small tasks where SCOPE's and DGPO's mechanisms matter, measured over seeds.

Tasks (`scope_trl.apps.miniatures.tasks`; each with its own train / validation / test problems):

    carry      A. skill gap: 8-digit addition with a carry scratchpad (16 decisive tokens); the student's SFT rarely
               carries, the teacher's always can
    slice      B. the teacher ignores carries on a 20% slice (first digit 0 or 1) that the student's SFT gets right;
               reported on the slice and on the rest
    coverage   C. many right answers: split each digit n into x + y = n; the teacher prefers one split, the student's
               SFT is diverse; Pass@j for j = 1..k and distinct correct answers per prompt
    offpolicy  D. task A with 4 and 8 optimizer steps per generation batch: GRPO's hard clip, TRL's CISPO
               (`loss_type="cispo"`) and DGPO, with the boundary-token shares

Protocol (what makes the numbers trustworthy):

- One training regime for every row, found first on task A's validation problems and recorded in the results
  (`REGIME_SEARCH`): warm-up over 10% of the steps then cosine decay, gradients clipped to 1, 200 steps of 16 prompts
  x 8 rollouts at temperature 1. Every row gets the same rollouts per optimizer step.
- RL prompts are train-split problems at each seed's student's edge of competence (of 8 samples some right and some
  wrong), the same for every row of a seed.
- The learning rate of each row is chosen from one shared grid (`--lr-grid`) on the **validation** problems, with a
  selection seed that is not one of the table's seeds; the chosen values are printed and saved. Test problems are
  used only for the table.
- Per seed: the student's SFT, the RL prompts, every RL run and the evaluation sampling; the teacher is trained once
  per task. Differences between rows are **paired by seed** with a two-sided paired t-test (`scipy.stats.ttest_rel`);
  `*` marks p < 0.05.
- Validity gates, printed with the tables; the script exits with status 1 if one fails: (1) capacity: task A's
  teacher, which has the student's architecture, reaches >= 90% test Avg@k with full SFT; (2) every teacher reaches
  >= 90% on its task (outside its slice on B); (3) on task A at least one RL row raises Avg@k above the SFT student
  with p < 0.05.

Outputs per task in `--output-dir` (default `benchmarks/results`): `miniature_<task>.md` (the table and the gates),
`miniature_<task>.json` (every per-seed number, per-step curves, settings, the learning-rate selection) and
`miniature_<task>_curves.png` (training reward, and the teacher KL or boundary-token share, mean over seeds). Results
are written after every run, so `--resume` continues an interrupted benchmark (same settings required).

    python benchmarks/miniatures.py                        # every task, 5 seeds (estimate printed first)
    python benchmarks/miniatures.py --tasks carry --seeds 5 --resume
    python benchmarks/miniatures.py --smoke --output-dir /tmp/mini   # seconds; part of the tests
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing: `python benchmarks/miniatures.py`

from scope_trl.apps.miniatures.pipeline import Budget, evaluate_path, rl_prompts, row, run_row, sft_models  # noqa: E402
from scope_trl.apps.miniatures.tasks import make_task  # noqa: E402


@dataclass(frozen=True)
class Suite:
    title: str
    task: str
    rows: tuple[str, ...]
    compare_to: tuple[str, ...]  # rows every other row is compared with, paired by seed
    task_kwargs: tuple = ()
    # SFT steps (teacher, student), fixed from the SFT'd models' validation accuracy before any RL row was run:
    # a teacher near 100% (outside its slice on B) and a student at its edge (task A's student lacks carries).
    sft_steps: tuple[int, int] = (1500, 1000)


MAIN_ROWS = ("student", "grpo", "opd", "scope", "scope_no_weights", "scope_dgpo", "dgpo", "control")
CARRY = (("student_carry_rate", 0.05),)
SUITES = {
    "carry": Suite(
        "A: carries (skill gap, 16 decisive tokens)", "carry", MAIN_ROWS, ("student", "grpo", "scope"), CARRY
    ),
    "slice": Suite(
        "B: teacher wrong on a 20% slice (routing)",
        "slice",
        ("student", "grpo", "opd", "scope", "scope_no_weights", "control"),
        ("student", "opd", "scope"),
        sft_steps=(1500, 600),
    ),
    "coverage": Suite(
        "C: many right answers (coverage)",
        "coverage",
        MAIN_ROWS,
        ("student", "grpo", "scope"),
        sft_steps=(1000, 800),
    ),
    "offpolicy": Suite(
        "D: off-policy updates on task A (4 and 8 optimizer steps per generation batch)",
        "carry",
        ("student", "grpo@4", "cispo@4", "dgpo@4", "grpo@8", "cispo@8", "dgpo@8"),
        ("student", "grpo@4", "grpo@8"),
        CARRY,
    ),
}
SELECTION_SEED = 100  # the learning rate is chosen with this seed's student and prompts, on validation problems
GATE_ACCURACY = 0.9

# The regime search that fixed the shared settings (seed 0's task-A student, Avg@8 on 500 validation problems, 200
# steps of 16 prompts x 8 rollouts, 10% warm-up then cosine, gradient clip 1, temperature 1; measured before the
# table was run, recorded here so that the results file carries it).
REGIME_SEARCH = {
    "setting": "task A (carry), seed-0 student SFT'd 1,000 steps with carry rate 0.05: Avg@8 0.222 on validation",
    "avg@8 after 200 steps (validation)": {
        "lr 1e-4": {"grpo": 0.309, "opd": 0.301, "scope": 0.306, "control": 0.314},
        "lr 3e-4": {"grpo": 0.386, "opd": 0.376, "scope": 0.385, "control": 0.407},
        "lr 1e-3": {"grpo": 0.434, "opd": 0.470, "scope": 0.455, "control": 0.469},
    },
    "reading": "every row improves at every rate, none collapses; warm-up + cosine keeps 1e-3 stable (GRPO's training "
    "reward dips for the first ~40 steps, then recovers); the grid for the per-row choice brackets the best rate",
}

# Measured CPU costs (2 cores) for the printed estimate.
COST = {"teacher_sft_step": 0.05, "student_sft_step": 0.05, "rl_step": 0.2, "rl_setup": 5.0, "edge": 35.0}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tasks", default="carry,slice,coverage,offpolicy", help=f"comma-separated: {', '.join(SUITES)}"
    )
    parser.add_argument("--seeds", type=int, default=5, help="table seeds 0..N-1 (default 5)")
    parser.add_argument("--rows", default=None, help="comma-separated subset of each task's rows (default: all)")
    parser.add_argument("--lr-grid", default="3e-4,1e-3,3e-3", help="learning rates each row chooses from")
    parser.add_argument("--max-steps", type=int, default=None, help="RL optimizer steps (default 200)")
    parser.add_argument("--eval-problems", type=int, default=None, help="test (and validation) problems (default 500)")
    parser.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results"), help="results directory")
    parser.add_argument("--cache-dir", default=str(REPO / ".miniatures_cache"), help="SFT models and RL prompts")
    parser.add_argument("--resume", action="store_true", help="keep finished (row, seed) runs of the results files")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny budgets, 1 seed, 1 learning rate; gates reported only"
    )
    parser.add_argument(
        "--replot", action="store_true", help="only redraw the curves of the tasks from their results JSON files"
    )
    args = parser.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in args.tasks if t not in SUITES]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose among {', '.join(SUITES)}")
    args.lr_grid = [float(x) for x in args.lr_grid.split(",")]
    if args.smoke:
        args.seeds, args.lr_grid = 1, args.lr_grid[:1]
    return args


def budget_from(args) -> Budget:
    budget = Budget()
    if args.smoke:
        budget = budget.smoke()
    if args.max_steps is not None:
        budget = replace(budget, rl=replace(budget.rl, max_steps=args.max_steps))
    if args.eval_problems is not None:
        budget = replace(budget, eval_problems=args.eval_problems)
    return budget


# --------------------------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------------------------


def paired(a: list[float], b: list[float]) -> dict:
    """Mean and sample std of the per-seed differences a - b, and the two-sided paired t-test's p-value."""
    from scope_trl.optional import import_optional

    stats = import_optional("scipy.stats", "the paired t-tests of benchmarks/miniatures.py")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(differences)
    std = statistics.stdev(differences) if len(differences) > 1 else float("nan")
    if len(differences) < 2 or std == 0:
        p = float("nan") if std != 0 or mean == 0 else 0.0
    else:
        p = float(stats.ttest_rel(a, b).pvalue)
    return {"mean": mean, "std": std, "p": p, "n": len(differences)}


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {spread:.3f}"


def diff_cell(comparison: dict) -> str:
    star = "*" if comparison["p"] < 0.05 else ""
    return f"{comparison['mean']:+.3f} ± {comparison['std']:.3f}{star} (p={comparison['p']:.2g})"


# --------------------------------------------------------------------------------------------------------------------
# One task
# --------------------------------------------------------------------------------------------------------------------


def metric_views(task_name: str) -> list[tuple[str, tuple[str, ...]]]:
    """(label, path into a run's summary) of the metrics a task's table reports."""
    views = [("Avg@k", ("avg@k",)), ("Pass@k", ("pass@k",))]
    if task_name == "slice":
        views += [("Avg@k slice", ("slice", "avg@k")), ("Avg@k rest", ("rest", "avg@k"))]
    if task_name == "coverage":
        views += [("distinct correct", ("distinct_correct",)), ("Pass@1", ("pass_curve", 0))]
    return views


def pick(summary: dict, path: tuple) -> float:
    value = summary
    for key in path:
        value = value[key]
    return float(value)


def select_learning_rates(rows, task, budget, grid, cache_dir, work_root, record, save, log) -> dict[str, float]:
    """Each RL row's learning rate: the grid value with the best validation Avg@k for the selection seed."""
    chosen = record.setdefault("selection", {"seed": SELECTION_SEED, "grid": grid, "validation": {}, "chosen": {}})
    if chosen["grid"] != grid:
        raise SystemExit(f"--resume: the saved selection used the grid {chosen['grid']}, not {grid}.")
    rl_rows = [key for key in rows if row(key).trainer is not None]
    if len(grid) == 1:
        chosen["chosen"] = dict.fromkeys(rl_rows, grid[0])
        return chosen["chosen"]
    paths = sft_models(task, budget, SELECTION_SEED, cache_dir, log)
    prompts, _ = rl_prompts(task, budget, paths["student"], SELECTION_SEED, cache_dir)
    validation = task.problems("validation", budget.eval_problems, 0)
    for key in rl_rows:
        scores = chosen["validation"].setdefault(key, {})
        for lr in grid:
            if str(lr) in scores:
                continue
            settings = replace(budget.rl, learning_rate=lr, seed=SELECTION_SEED)
            with tempfile.TemporaryDirectory(dir=work_root) as work_dir:
                result = run_row(row(key), task, settings, paths, prompts, validation, budget.k, Path(work_dir), 0)
            scores[str(lr)] = result["summary"]["avg@k"]
            log(f"  [select] {key:18s} lr {lr:g}: validation Avg@{budget.k} {scores[str(lr)]:.3f}")
            save()
        chosen["chosen"][key] = float(max(scores, key=lambda lr: scores[lr]))
    log("  chosen learning rates: " + ", ".join(f"{k} {v:g}" for k, v in chosen["chosen"].items()))
    return chosen["chosen"]


def run_suite(name: str, args, budget: Budget, log) -> dict:
    suite = SUITES[name]
    task = make_task(suite.task, **dict(suite.task_kwargs))
    if not args.smoke:
        budget = replace(budget, teacher_sft_steps=suite.sft_steps[0], student_sft_steps=suite.sft_steps[1])
    rows = suite.rows if args.rows is None else tuple(k for k in suite.rows if k in args.rows.split(","))
    output_dir, cache_dir = Path(args.output_dir), Path(args.cache_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / f"miniature_{name}.json"
    settings_record = {"task": suite.task, "task_kwargs": dict(suite.task_kwargs), "budget": asdict(budget)}
    record = {"task": name, "title": suite.title, "settings": settings_record, "regime_search": REGIME_SEARCH}
    if args.resume and json_path.exists():
        saved = json.loads(json_path.read_text())
        if saved.get("settings") != settings_record:
            raise SystemExit(f"--resume: {json_path} was run with other settings; rerun without --resume.")
        record = saved
    record.setdefault("runs", {})
    record.setdefault("teacher", {})
    record.setdefault("elapsed_seconds", 0.0)
    start, elapsed_before = time.time(), record["elapsed_seconds"]

    def save():
        record["elapsed_seconds"] = elapsed_before + time.time() - start
        json_path.write_text(json.dumps(record, indent=1))

    work_root = tempfile.mkdtemp(prefix=f"mini-{name}-")
    log(f"== {name}: {suite.title}")
    rates = select_learning_rates(rows, task, budget, args.lr_grid, cache_dir, work_root, record, save, log)
    test_problems = task.problems("test", budget.eval_problems, 0)
    for seed in range(args.seeds):
        paths = sft_models(task, budget, seed, cache_dir, log)
        if str(seed) not in record["teacher"]:
            teacher = evaluate_path(paths["teacher"], task, test_problems, budget.k, seed)
            record["teacher"][str(seed)] = teacher
            log(f"  [seed {seed}] teacher: Avg@{budget.k} {teacher['avg@k']:.3f}")
        prompts, stats = rl_prompts(task, budget, paths["student"], seed, cache_dir)
        record.setdefault("edge_filter", {})[str(seed)] = stats
        for key in rows:
            runs = record["runs"].setdefault(key, {})
            if str(seed) in runs:
                continue
            lr = rates.get(key)
            settings = replace(budget.rl, learning_rate=lr or budget.rl.learning_rate, seed=seed)
            with tempfile.TemporaryDirectory(dir=work_root) as work_dir:
                result = run_row(
                    row(key), task, settings, paths, prompts, test_problems, budget.k, Path(work_dir), seed
                )
            result["learning_rate"] = lr
            del result["log_history"]  # the curves keep what the tables and plots need
            runs[str(seed)] = result
            summary = result["summary"]
            log(
                f"  [seed {seed}] {row(key).label:38s} Avg@{budget.k} {summary['avg@k']:.3f}  Pass@{budget.k} "
                f"{summary['pass@k']:.3f}  ({result['rl_seconds']:.0f}s)"
            )
            save()
    save()
    return record


# --------------------------------------------------------------------------------------------------------------------
# Tables, gates, curves
# --------------------------------------------------------------------------------------------------------------------


def seeds_of(record, key) -> list[str]:
    return sorted(record["runs"].get(key, {}), key=int)


def table(name: str, record: dict, k: int) -> str:
    suite = SUITES[name]
    views = metric_views(suite.task)
    rows = [key for key in suite.rows if key in record["runs"]]
    lines = [f"### {record['title']}", ""]
    header = ["row", "lr"] + [label.replace("@k", f"@{k}") for label, _ in views]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    boundary = name == "offpolicy"
    if boundary:  # the share of tokens beyond the trust region, where the surrogates differ
        lines[2] += " boundary tokens | CISPO-clipped tokens |"
        lines[3] += "---|---|"
    for key in rows:
        runs = record["runs"][key]
        lr = next(iter(runs.values())).get("learning_rate")
        cells = [row(key).label, "—" if lr is None else f"{lr:g}"]
        cells += [mean_std([pick(r["summary"], path) for r in runs.values()]) for _, path in views]
        if boundary:
            for curve in ("clip_ratio/region_mean", "cispo_clip_ratio"):
                values = [
                    statistics.fmean(v for v in r["curves"][curve] if v is not None)
                    for r in runs.values()
                    if any(v is not None for v in r["curves"].get(curve, []))
                ]
                cells.append(mean_std(values))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± std over {len(seeds_of(record, rows[0]))} seed(s)."]
    compared = [views[0]] + [view for view in views if view[0] in ("Avg@k slice", "Avg@k rest", "distinct correct")]
    for label, path in compared:
        for base in suite.compare_to:
            if base not in record["runs"]:
                continue
            lines += [
                "",
                f"**{label.replace('@k', f'@{k}')}, paired differences to {row(base).label}** (mean ± std of "
                "per-seed differences; `*`: two-sided paired t-test p < 0.05):",
                "",
            ]
            lines += ["| row | difference |", "|---|---|"]
            for key in rows:
                if key == base:
                    continue
                common = [s for s in seeds_of(record, key) if s in record["runs"][base]]
                a = [pick(record["runs"][key][s]["summary"], path) for s in common]
                b = [pick(record["runs"][base][s]["summary"], path) for s in common]
                lines.append(f"| {row(key).label} | {diff_cell(paired(a, b))} |")
    if suite.task == "coverage":
        lines += ["", f"Pass@j for j = 1..{k} (mean over seeds):", ""]
        lines += ["| row | " + " | ".join(f"j={j}" for j in range(1, k + 1)) + " |", "|---|" + "---|" * k]
        for key in rows:
            curves = [r["summary"]["pass_curve"] for r in record["runs"][key].values()]
            means = [statistics.fmean(c[j] for c in curves) for j in range(k)]
            lines.append(f"| {row(key).label} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    teacher = list(record["teacher"].values())
    if teacher:
        lines += [
            "",
            f"Teacher (reference): Avg@{k} {mean_std([t['avg@k'] for t in teacher])}"
            + (
                f", outside the slice {mean_std([t['rest']['avg@k'] for t in teacher])}, on the slice "
                f"{mean_std([t['slice']['avg@k'] for t in teacher])}"
                if suite.task == "slice"
                else ""
            ),
        ]
    selection = record.get("selection", {})
    if selection.get("validation"):
        lines += [
            "",
            f"Learning rates chosen on validation (selection seed {selection['seed']}): "
            + "; ".join(
                f"{row(key).label}: " + ", ".join(f"{lr} → {v:.3f}" for lr, v in scores.items())
                for key, scores in selection["validation"].items()
            ),
        ]
    return "\n".join(lines) + "\n"


def gates(records: dict[str, dict]) -> list[dict]:
    """The validity gates that the tasks run allow checking; each {"name", "value", "passed", "detail"}."""
    found = []
    carry = records.get("carry") or records.get("offpolicy")
    if carry and carry["teacher"]:
        value = statistics.fmean(t["avg@k"] for t in carry["teacher"].values())
        found.append(
            {
                "name": "1. capacity: the student's architecture, fully SFT'd (task A's teacher), >= 90% test",
                "value": value,
                "passed": value >= GATE_ACCURACY,
                "detail": f"Avg@k {value:.3f}",
            }
        )
    for name, record in records.items():
        if not record["teacher"] or name == "offpolicy":
            continue
        teachers = list(record["teacher"].values())
        value = statistics.fmean((t["rest"] if name == "slice" else t)["avg@k"] for t in teachers)
        where = " outside its slice" if name == "slice" else ""
        found.append(
            {
                "name": f"2. teacher of {name}{where} >= 90% test",
                "value": value,
                "passed": value >= GATE_ACCURACY,
                "detail": f"Avg@k {value:.3f}",
            }
        )
    if "carry" in records and "student" in records["carry"]["runs"]:
        record = records["carry"]
        best = None
        for key in SUITES["carry"].rows[1:]:
            if key not in record["runs"]:
                continue
            common = [s for s in seeds_of(record, key) if s in record["runs"]["student"]]
            comparison = paired(
                [record["runs"][key][s]["summary"]["avg@k"] for s in common],
                [record["runs"]["student"][s]["summary"]["avg@k"] for s in common],
            )
            if comparison["mean"] > 0 and (best is None or comparison["p"] < best[1]["p"]):
                best = (key, comparison)
        passed = best is not None and best[1]["p"] < 0.05
        detail = "no RL row above the student" if best is None else f"{row(best[0]).label}: {diff_cell(best[1])}"
        found.append(
            {
                "name": "3. on task A an RL row beats the SFT student (paired t-test, p < 0.05)",
                "value": None if best is None else best[1]["p"],
                "passed": passed,
                "detail": detail,
            }
        )
    return found


def plot_curves(name: str, record: dict, path: Path) -> dict[str, dict]:
    """Draw the suite's curves: one panel per metric, one colour per row in every panel (a row without data in a
    panel keeps its colour for the next), a legend in every panel naming the rows it draws. Returns, per panel, the
    colour of each row drawn and the legend's labels (what the tests check)."""
    from matplotlib.colors import to_hex

    from scope_trl.optional import import_pyplot

    plt = import_pyplot("drawing the miniatures' learning curves")
    panels = [("reward", "training reward (mean over seeds)")]
    if any("scope/teacher_kl" in r["curves"] for runs in record["runs"].values() for r in runs.values()):
        panels.append(("scope/teacher_kl", "scope/teacher_kl (distillation rows)"))
    if any("clip_ratio/region_mean" in r["curves"] for runs in record["runs"].values() for r in runs.values()):
        panels.append(("clip_ratio/region_mean", "boundary-token share"))
    palette = plt.get_cmap("tab20" if len(record["runs"]) > 10 else "tab10")
    colours = {key: to_hex(palette(index % palette.N)) for index, key in enumerate(record["runs"])}
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False)
    drawn = {}
    for ax, (key, title) in zip(axes[0], panels):
        lines = {}
        for row_key, runs in record["runs"].items():
            by_step: dict[int, list[float]] = {}
            for run in runs.values():
                curves = run["curves"]
                for step, value in zip(curves.get("step", []), curves.get(key, [])):
                    if value is not None:
                        by_step.setdefault(step, []).append(value)
            if not by_step:
                continue
            steps = sorted(by_step)
            means = [statistics.fmean(by_step[step]) for step in steps]
            window = 10  # a moving average over logged points: single steps are 128 rollouts and noisy
            smooth = [statistics.fmean(means[max(0, i - window + 1) : i + 1]) for i in range(len(means))]
            (line,) = ax.plot(steps, smooth, label=row(row_key).label, color=colours[row_key])
            lines[row(row_key).label] = to_hex(line.get_color())
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        legend = ax.legend(fontsize=7) if lines else None
        drawn[key] = {"lines": lines, "legend": [text.get_text() for text in legend.get_texts()] if legend else []}
    fig.suptitle(f"miniature {record['title']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return drawn


def estimate_minutes(args, budget: Budget) -> float:
    seconds = 0.0
    for name in args.tasks:
        rl_rows = [k for k in SUITES[name].rows if row(k).trainer is not None]
        runs = len(rl_rows) * (args.seeds + (len(args.lr_grid) if len(args.lr_grid) > 1 else 0))
        seconds += runs * (COST["rl_setup"] + budget.rl.max_steps * COST["rl_step"])
        teacher_steps, student_steps = (
            (budget.teacher_sft_steps, budget.student_sft_steps) if args.smoke else SUITES[name].sft_steps
        )
        seconds += (args.seeds + 1) * (COST["edge"] + student_steps * COST["student_sft_step"])
        seconds += teacher_steps * COST["teacher_sft_step"]
    return seconds / 60


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import warnings

    warnings.filterwarnings("ignore")
    if args.replot:
        for name in args.tasks:
            record = json.loads((Path(args.output_dir) / f"miniature_{name}.json").read_text())
            path = Path(args.output_dir) / f"miniature_{name}_curves.png"
            plot_curves(name, record, path)
            print(f"curves: {path}")
        return 0
    budget = budget_from(args)
    print(
        f"miniatures: tasks {', '.join(args.tasks)}; {args.seeds} seed(s); lr grid {args.lr_grid}; RL "
        f"{budget.rl.max_steps} steps of {budget.rl.prompts_per_step} prompts x {budget.rl.num_generations}; test "
        f"{budget.eval_problems} problems x k={budget.k}; estimated {estimate_minutes(args, budget):.0f} min on 2 CPU "
        "cores (SFT not cached)",
        flush=True,
    )

    def log(message):
        print(message, flush=True)

    records = {}
    for name in args.tasks:
        records[name] = run_suite(name, args, budget, log)
    found = gates(records)
    gate_lines = ["### Validity gates", ""] + [
        f"- {'PASS' if g['passed'] else 'FAIL'} {g['name']}: {g['detail']}" for g in found
    ]
    output_dir = Path(args.output_dir)
    for name, record in records.items():
        text = table(name, record, budget.k) + "\n" + "\n".join(gate_lines) + "\n"
        record["gates"] = found
        (output_dir / f"miniature_{name}.json").write_text(json.dumps(record, indent=1))
        (output_dir / f"miniature_{name}.md").write_text(text)
        print("\n" + text, flush=True)
    for name, record in records.items():  # optional: every result is on disk already
        path = output_dir / f"miniature_{name}_curves.png"
        try:
            plot_curves(name, record, path)
            print(f"curves: {path}")
        except Exception as error:
            print(f"curves: not drawn ({error})")
    failed = [g for g in found if not g["passed"]]
    if args.smoke:
        print("smoke run: the gates are reported, not enforced")
        return 0
    if failed:
        print(f"{len(failed)} validity gate(s) failed: the testbed measures nothing until they pass", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
