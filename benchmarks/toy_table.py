"""A seeded results table of SCOPE, its ablations and its baselines on the demo's toy task (issue 5 §3).

Every row runs on the task of `scope_trl.demo` (2-digit addition) with the demo's student, teacher and RL budget
(`DemoSettings`: 200 steps of 16 prompts x 8 rollouts at lr 3e-4), for `--seeds` seeds. Per seed, the teacher and the
student SFT are trained once and cached on disk (`--cache-dir`); every method then starts from that same student, and
every model of a seed is evaluated on the same held-out problems with the same sampling noise.

Rows (`--methods` selects a subset, by key):

    student                 the untouched student (SFT only, no RL)
    grpo                    TRL's GRPOTrainer
    opd_g2                  plain OPD (routing=False) at the paper's samples-per-step budget: the paper's OPD draws
                            G=1 completion for each of SCOPE's prompts, one eighth of SCOPE's samples. TRL needs
                            G >= 2 and without routing groups are irrelevant (method doc §13.9), so this row draws
                            G=2 for an eighth of the rollouts: 8 prompts x 2 = 16 per step against the others' 128
    opd_g8                  plain OPD with the full group (G=8, 16 prompts)
    scope                   SCOPE (paper weight directions, PPO surrogate)
    scope_no_weights        SCOPE w/o DPAW: routing with all weights 1 on both paths
    scope_student_reversed  SCOPE with the student-path (correct rollouts) weight direction reversed
    scope_teacher_reversed  SCOPE with the teacher-path (incorrect rollouts) weight direction reversed
    scope_no_teacher_weights  SCOPE with the student-path weights only (teacher-path weights all 1)
    scope_tau2              SCOPE with weight temperature 2 (the paper sweeps 0.5, 1, 2)
    dgpo                    DGPOTrainer, steps_per_generation=4 (as in the demo)
    scope_dgpo              SCOPE with policy_surrogate="dgpo" and steps_per_generation=4 (the surrogate is inert at
                            one update per generation batch)
    scope_clip1             SCOPE with distillation_advantage_clip=1.0

Output: Avg@k and Pass@k as mean ± std (sample std, ddof=1) over seeds, and the difference of each row to the
untouched student, to GRPO and to SCOPE, **paired by seed** (mean ± std of the per-seed differences), marked `*` where a
two-sided paired t-test at 5% rejects "no difference" (`paired_compare`). Pairing matters here: most of a row's spread
across seeds comes from what the rows of a seed share (the student, the held-out set, the sampling noise), and it
cancels in the per-seed differences.
`--output FILE.md` gets the Markdown table; the JSON (`--json`, default FILE.json) has every per-seed number.

    python benchmarks/toy_table.py --output toy_table.md            # the full default run (estimate printed first)
    python benchmarks/toy_table.py --smoke --output /tmp/t.md       # 1 seed, tiny budgets, all rows (~1 min)
    python benchmarks/toy_table.py --methods grpo,scope --seeds 5   # a subset
    python benchmarks/toy_table.py --learning-rate 1e-4 --prompts-per-step 4 --max-steps 300   # another budget

The default budget (5 seeds x 13 rows, demo budgets, 1,000 eval problems x 8 samples) is estimated from measured CPU
costs; the estimate is printed at start.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    demo_method: str | None  # the demo's trainer ("scope", "opd", "grpo", "dgpo"); None: no RL
    config: dict = field(default_factory=dict)  # extra SCOPEConfig / DGPOConfig fields
    paper_opd_budget: bool = False  # G=2 and one eighth of the others' rollouts per step (the paper's OPD samples)


METHODS = (
    Method("student", "student (SFT only)", None),
    Method("grpo", "GRPO", "grpo"),
    Method("opd_g2", "OPD, G=2 (paper's ⅛ samples/step)", "opd", paper_opd_budget=True),
    Method("opd_g8", "OPD, G=8", "opd"),
    Method("scope", "SCOPE", "scope"),
    Method(
        "scope_no_weights", "SCOPE w/o weights", "scope", {"use_student_weights": False, "use_teacher_weights": False}
    ),
    Method(
        "scope_student_reversed", "SCOPE, student path reversed", "scope", {"student_weight_direction": "reversed"}
    ),
    Method(
        "scope_teacher_reversed", "SCOPE, teacher path reversed", "scope", {"teacher_weight_direction": "reversed"}
    ),
    Method("scope_no_teacher_weights", "SCOPE w/o teacher weights", "scope", {"use_teacher_weights": False}),
    Method("scope_tau2", "SCOPE, τ = 2", "scope", {"scope_tau": 2.0}),
    Method("dgpo", "DGPO (4 steps/generation)", "dgpo"),
    Method("scope_dgpo", "SCOPE, DGPO surrogate (4 steps/gen.)", "scope", {"policy_surrogate": "dgpo"}),
    Method("scope_clip1", "SCOPE, distillation clip 1.0", "scope", {"distillation_advantage_clip": 1.0}),
)
METHODS_BY_KEY = {m.key: m for m in METHODS}

# Measured CPU costs (2 cores), used for the printed time estimate.
COST_TEACHER_SFT_STEP = 110 / 900
COST_STUDENT_SFT_STEP = 17 / 300
COST_RL_ROLLOUT = 1.5e-3  # per sampled completion, generation + teacher + update (200 steps x 128 in ~40 s)
COST_EVAL_SAMPLE = 2.5e-4  # per sampled completion (1,000 problems x 8 in about 2 s)
COST_RL_SETUP = 3.0  # trainer construction and model loading per RL run (a guess, not measured by the demo)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, ..., N-1)")
    parser.add_argument("--max-steps", type=int, default=None, help="RL steps (default: the demo's)")
    parser.add_argument("--learning-rate", type=float, default=None, help="RL learning rate (default: the demo's)")
    parser.add_argument(
        "--prompts-per-step", type=int, default=None, help="prompts per RL step, G rollouts each (default: the demo's)"
    )
    parser.add_argument("--sft-steps", type=int, default=None, help="teacher SFT steps; the student gets a third")
    parser.add_argument("--eval-problems", type=int, default=1000, help="held-out problems per evaluation")
    parser.add_argument("-k", type=int, default=8, help="samples per problem (Avg@k, Pass@k)")
    parser.add_argument("--methods", default="all", help=f"comma-separated keys or 'all': {', '.join(METHODS_BY_KEY)}")
    parser.add_argument("--cache-dir", default=None, help="teacher / student SFT cache (default: a temporary dir)")
    parser.add_argument("--output", default="toy_table.md", help="Markdown table")
    parser.add_argument("--json", default=None, help="per-seed numbers (default: the --output path with .json)")
    parser.add_argument("--smoke", action="store_true", help="1 seed, SFT 20 steps, 2 RL steps, 8 problems, k=2")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the (row, seed) results already in the JSON file (same settings required) and run only the missing "
        "ones: finishes an interrupted run, or adds seeds or rows to a finished one",
    )
    parser.add_argument("--verbose", action="store_true", help="print the per-step RL metrics")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.max_steps, args.sft_steps, args.eval_problems, args.k = 1, 2, 20, 8, 2
        args.prompts_per_step = 2
    keys = list(METHODS_BY_KEY) if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in keys if m not in METHODS_BY_KEY]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose among {', '.join(METHODS_BY_KEY)}")
    args.methods = keys
    if args.seeds < 1 or args.k < 1 or args.eval_problems < 1:
        parser.error("--seeds, -k and --eval-problems must be >= 1")
    return args


def base_settings(args):
    from scope_trl.demo import DemoSettings

    settings = DemoSettings(eval_problems=args.eval_problems, k=args.k)
    for name in ("max_steps", "learning_rate", "prompts_per_step", "sft_steps"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    return settings


def method_settings(method: Method, settings, seed: int):
    settings = replace(settings, method=method.demo_method or "scope", seed=seed)
    if method.paper_opd_budget:
        rollouts = settings.num_generations * settings.prompts_per_step // 8
        settings.num_generations, settings.prompts_per_step = 2, max(1, rollouts // 2)
    return settings


def estimate_seconds(settings, methods: list[Method], seeds: int) -> dict:
    """Measured per-unit costs times this run's budget (SFT not cached)."""

    def rl_seconds(method: Method) -> float:
        run = method_settings(method, settings, seed=0)
        return run.max_steps * run.prompts_per_step * run.num_generations * COST_RL_ROLLOUT + COST_RL_SETUP

    parts = {
        "teacher_sft": settings.sft_steps * COST_TEACHER_SFT_STEP,
        "student_sft": settings.student_sft_steps * COST_STUDENT_SFT_STEP,
        "rl": sum(rl_seconds(m) for m in methods if m.demo_method is not None),
        "eval": (len(methods) + 1) * settings.eval_problems * settings.k * COST_EVAL_SAMPLE,  # + the teacher
    }
    parts = {name: seconds * seeds for name, seconds in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


# --------------------------------------------------------------------------------------------------------------------
# Teacher and student: trained once per seed, cached
# --------------------------------------------------------------------------------------------------------------------


def sft_models(settings, cache_dir: Path, print_fn) -> dict[str, str]:
    """Paths of the seed's SFT'd teacher and student, training (as `run_demo` does) what the cache lacks."""
    from scope_trl.demo import STUDENT_SIZE, TEACHER_SIZE, held_out_problems, supervised_fine_tune
    from scope_trl.toy import build_tiny_model, build_tokenizer

    tokenizer = build_tokenizer()
    exclude = set(held_out_problems(settings.eval_problems, settings.seed))
    sft = {"batch_size": settings.sft_batch_size, "learning_rate": settings.sft_learning_rate, "seed": settings.seed}
    key = (
        f"seed{settings.seed}-sft{settings.sft_steps}x{settings.sft_batch_size}-lr{settings.sft_learning_rate:g}"
        f"-frac{settings.student_sft_fraction:.4f}-eval{settings.eval_problems}"
    )
    paths = {}
    for name, size, steps, model_seed in (
        ("teacher", TEACHER_SIZE, settings.sft_steps, settings.seed + 1),
        ("student", STUDENT_SIZE, settings.student_sft_steps, settings.seed),
    ):
        path = cache_dir / key / name
        if (path / "config.json").exists():
            print_fn(f"  [{name}] cached: {path}")
        else:
            import torch

            torch.manual_seed(settings.seed)
            model = build_tiny_model(tokenizer, seed=model_seed, **size)
            supervised_fine_tune(model, tokenizer, steps, exclude=exclude, name=name, print_fn=print_fn, **sft)
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
        paths[name] = str(path)
    return paths


# --------------------------------------------------------------------------------------------------------------------
# One row, one seed
# --------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def config_overrides(config: dict):
    """Let the demo's `make_trainer` build the variant: it imports its config classes from `scope_trl` at call time."""
    import scope_trl

    if not config:
        yield
        return
    saved = scope_trl.SCOPEConfig, scope_trl.DGPOConfig
    scope_trl.SCOPEConfig = functools.partial(saved[0], **config)
    scope_trl.DGPOConfig = functools.partial(saved[1], **config)
    try:
        yield
    finally:
        scope_trl.SCOPEConfig, scope_trl.DGPOConfig = saved


def run_method(method: Method, settings, paths, eval_pairs, work_dir: Path, verbose: bool) -> tuple[dict, float]:
    """Train (unless `student`) from the cached student and evaluate: (metrics, RL seconds)."""
    from transformers import AutoModelForCausalLM

    from scope_trl.demo import DGPO_STEPS_PER_GENERATION, evaluate, rl_dataset, train_rl
    from scope_trl.toy import build_tokenizer

    tokenizer = build_tokenizer()
    if method.demo_method is None:
        model, seconds = AutoModelForCausalLM.from_pretrained(paths["student"]), 0.0
    else:
        config = dict(method.config)
        if config.get("policy_surrogate") == "dgpo":
            config["steps_per_generation"] = DGPO_STEPS_PER_GENERATION
        dataset = rl_dataset(settings.max_steps * settings.prompts_per_step * 2, settings.seed, set(eval_pairs))
        start = time.time()
        with config_overrides(config):
            trainer = train_rl(
                settings, paths["student"], paths["teacher"], dataset, work_dir, print if verbose else lambda *a: None
            )
        model, seconds = trainer.model, time.time() - start
    metrics = evaluate(model, tokenizer, eval_pairs, settings.k, settings.seed)
    return metrics, seconds


# --------------------------------------------------------------------------------------------------------------------
# Statistics and report
# --------------------------------------------------------------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


# Two-sided 95% critical values of Student's t for 1..10 degrees of freedom; beyond, a Cornish-Fisher expansion
# around the normal quantile (error < 1e-4 from 11 degrees of freedom on). Hard-coded: no scipy dependency.
T_CRITICAL_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t_critical_975(df: int) -> float:
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T_CRITICAL_975):
        return T_CRITICAL_975[df - 1]
    z = 1.959964
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def paired_compare(a: list[float], b: list[float]) -> dict:
    """Row a against row b on the same seeds: the per-seed differences d = a - b and a two-sided paired t-test.

    Pairing removes what the rows of one seed share (the student, the teacher, the held-out problems and the
    sampling noise of the evaluation), which dominates the spread of each row across seeds. `significant` is
    |mean(d)| > t(0.975, n - 1) x std(d) / sqrt(n) (p < 0.05); None with fewer than 2 seeds.
    """
    if len(a) != len(b):
        raise ValueError(f"paired rows need the same seeds, got {len(a)} and {len(b)} values")
    diffs = [x - y for x, y in zip(a, b)]
    mean, std = mean_std(diffs)
    result = {"delta": mean, "std": None, "t": None, "t_critical": None, "significant": None, "per_seed": diffs}
    if len(diffs) > 1:
        critical = t_critical_975(len(diffs) - 1)
        stderr = std / math.sqrt(len(diffs))
        result |= {"std": std, "t_critical": critical, "significant": abs(mean) > critical * stderr}
        result["t"] = mean / stderr if stderr > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    return result


REFERENCES = ("student", "grpo", "scope")  # the rows every other row is compared with


def summarize(results: dict, methods: list[Method]) -> dict:
    summary = {}
    for method in methods:
        rows = results[method.key]
        entry = {}
        for metric in ("avg@k", "pass@k"):
            values = [r[metric] for r in rows]
            entry[metric] = dict(zip(("mean", "std"), mean_std(values)))
            for reference in REFERENCES:
                if reference in results and reference != method.key and results[reference]:
                    ref_values = [r[metric] for r in results[reference]]
                    entry[metric][f"vs_{reference}"] = paired_compare(values, ref_values)
        summary[method.key] = entry
    return summary


REFERENCE_LABELS = {"student": "student", "grpo": "GRPO", "scope": "SCOPE"}


def markdown_table(summary: dict, methods: list[Method], k: int, seeds: int, teacher: list[dict]) -> str:
    def cell(stats: dict) -> str:
        return f"{stats['mean']:.3f}" + ("" if math.isnan(stats["std"]) else f" ± {stats['std']:.3f}")

    def delta(stats: dict, reference: str) -> str:
        comparison = stats.get(f"vs_{reference}")
        if comparison is None:
            return "—"
        spread = "" if comparison["std"] is None else f" ± {comparison['std']:.3f}"
        return f"{comparison['delta']:+.3f}{spread}" + ("*" if comparison["significant"] else "")

    references = [r for r in REFERENCES if any(f"vs_{r}" in summary[m.key]["avg@k"] for m in methods)]
    columns = [f"Avg@{k}", f"Pass@{k}"]
    columns += [f"ΔAvg vs {REFERENCE_LABELS[r]}" for r in references]
    columns += [f"ΔPass vs {REFERENCE_LABELS[r]}" for r in references]
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method in methods:
        s = summary[method.key]
        cells = [cell(s["avg@k"]), cell(s["pass@k"])]
        cells += [delta(s["avg@k"], r) for r in references]
        cells += [delta(s["pass@k"], r) for r in references]
        lines.append(f"| {method.label} | " + " | ".join(cells) + " |")
    teacher_avg = mean_std([t["avg@k"] for t in teacher])
    teacher_pass = mean_std([t["pass@k"] for t in teacher])
    notes = [
        "",
        f"Avg@{k}, Pass@{k}: mean ± std (ddof=1) over {seeds} seed(s). Δ: paired by seed, mean ± std of the per-seed "
        f"differences; `*`: a two-sided paired t-test rejects no difference at 5%"
        + (
            " (not computable with one seed)."
            if seeds < 2
            else f" (|mean| > {t_critical_975(seeds - 1):.3f} × std/√{seeds})."
        ),
        f"Teacher (reference, not a row): Avg@{k} {teacher_avg[0]:.3f}, Pass@{k} {teacher_pass[0]:.3f}.",
    ]
    return "\n".join(lines) + "\n" + "\n".join(notes) + "\n"


def resumed_results(json_path: Path, settings_record: dict, methods: list[Method], seeds: int):
    """The per-seed results of an earlier run of the same settings: (results, teacher results, seconds spent)."""
    previous = json.loads(json_path.read_text())
    if previous.get("settings") != settings_record:
        changed = sorted(
            name
            for name in set(settings_record) | set(previous.get("settings", {}))
            if settings_record.get(name) != previous.get("settings", {}).get(name)
        )
        raise SystemExit(
            f"--resume: {json_path} was written with other settings (differences: {', '.join(changed)}); "
            "run with the same budget flags, or drop --resume (or pick another --output) to start afresh."
        )
    per_seed = previous.get("per_seed", {})
    results = {m.key: [r for r in per_seed.get(m.key, []) if r["seed"] < seeds] for m in methods}
    teacher = [t for t in previous.get("teacher", []) if t["seed"] < seeds]
    return results, teacher, float(previous.get("elapsed_seconds", 0.0))


# --------------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import warnings

    from scope_trl.demo import disable_progress_bars, evaluate, held_out_problems

    warnings.filterwarnings("ignore")
    disable_progress_bars()
    methods = [METHODS_BY_KEY[key] for key in args.methods]
    settings = base_settings(args)
    output = Path(args.output)
    json_path = Path(args.json) if args.json else output.with_suffix(".json")
    temporary = tempfile.TemporaryDirectory(prefix="toy-table-")
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(temporary.name) / "cache"
    estimate = estimate_seconds(settings, methods, args.seeds)
    print(
        f"toy table: {len(methods)} rows x {args.seeds} seed(s); RL {settings.max_steps} steps of "
        f"{settings.prompts_per_step} prompts x {settings.num_generations} at lr {settings.learning_rate:g}; "
        f"teacher SFT {settings.sft_steps} steps, student {settings.student_sft_steps}; "
        f"eval {settings.eval_problems} problems x k={settings.k}"
    )
    print(
        f"estimated time on 2 CPU cores (measured costs, SFT not cached): {estimate['total'] / 60:.1f} min ("
        + ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in estimate.items() if name != "total")
        + " min)",
        flush=True,
    )

    start = time.time()
    results: dict[str, list[dict]] = {m.key: [] for m in methods}
    teacher_results: list[dict] = []
    previous_seconds = 0.0
    settings_record = asdict(settings) | {"method": None, "seed": None}
    if args.resume and json_path.exists():
        results, teacher_results, previous_seconds = resumed_results(json_path, settings_record, methods, args.seeds)
        done = sum(len(rows) for rows in results.values())
        print(f"resuming from {json_path}: {done} (row, seed) result(s) kept", flush=True)
    report = {
        "settings": settings_record,
        "seeds": list(range(args.seeds)),
        "k": settings.k,
        "eval_problems": settings.eval_problems,
        "methods": {m.key: {"label": m.label, "trainer": m.demo_method, "config": m.config} for m in methods},
        "significance_rule": "paired by seed: |mean(d)| > t(0.975, n-1) * std(d) / sqrt(n), d = a - b, std ddof=1",
        "estimate_seconds": estimate,
    }
    for seed in range(args.seeds):
        todo = [m for m in methods if not any(r["seed"] == seed for r in results[m.key])]
        if not todo and any(t["seed"] == seed for t in teacher_results):
            print(f"[seed {seed}] every row resumed from {json_path}", flush=True)
            continue
        seed_settings = replace(settings, seed=seed)
        print(f"[seed {seed}] teacher and student SFT (cache: {cache_dir})", flush=True)
        paths = sft_models(seed_settings, cache_dir, print)
        eval_pairs = held_out_problems(settings.eval_problems, seed)
        if not any(t["seed"] == seed for t in teacher_results):
            from transformers import AutoModelForCausalLM

            from scope_trl.toy import build_tokenizer

            teacher = AutoModelForCausalLM.from_pretrained(paths["teacher"])
            metrics = evaluate(teacher, build_tokenizer(), eval_pairs, settings.k, seed)
            teacher_results.append({"seed": seed, "avg@k": metrics["avg@k"], "pass@k": metrics["pass@k"]})
            print(f"  teacher: Avg@{settings.k} {metrics['avg@k']:.3f}  Pass@{settings.k} {metrics['pass@k']:.3f}")
        for method in todo:
            t0 = time.time()
            with tempfile.TemporaryDirectory(prefix=f"{method.key}-") as work_dir:
                metrics, rl_seconds = run_method(
                    method, method_settings(method, settings, seed), paths, eval_pairs, Path(work_dir), args.verbose
                )
            results[method.key].append(
                {"seed": seed, "avg@k": metrics["avg@k"], "pass@k": metrics["pass@k"], "rl_seconds": rl_seconds}
            )
            print(
                f"  {method.label:40s} Avg@{settings.k} {metrics['avg@k']:.3f}  Pass@{settings.k} "
                f"{metrics['pass@k']:.3f}  ({time.time() - t0:.0f}s)",
                flush=True,
            )
            elapsed = previous_seconds + time.time() - start
            report |= {"per_seed": results, "teacher": teacher_results, "elapsed_seconds": elapsed}
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(report, indent=2))  # partial results survive an interrupted run

    for rows in (*results.values(), teacher_results):
        rows.sort(key=lambda r: r["seed"])  # resumed and new results in seed order: the pairing is by position
    summary = summarize(results, methods)
    table = markdown_table(summary, methods, settings.k, args.seeds, teacher_results)
    report |= {"per_seed": results, "teacher": teacher_results, "summary": summary}
    report["elapsed_seconds"] = previous_seconds + time.time() - start
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table)
    json_path.write_text(json.dumps(report, indent=2))
    print("\n" + table)
    print(
        f"elapsed {(time.time() - start) / 60:.1f} min in this run, {report['elapsed_seconds'] / 60:.1f} min in all "
        f"(estimated {estimate['total'] / 60:.1f} min)"
    )
    print(f"table: {output}\njson:  {json_path}")
    temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
