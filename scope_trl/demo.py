"""The embedded-default job: teacher, student and SCOPE on a built-in verifiable task, offline, on CPU.

`scope-trl demo` (the README's `make demo`) runs five stages and reports the student before and after RL:

1. **Task.** 2-digit addition (`What is 23 + 45?`, operands 0-99) answered as ` The answer is \\boxed{68}.` plus the
   EOS token. Prompts are plain strings, not chat messages: the chat template would roughly triple the sequence length
   and the cost. The tokenizer (`toy.build_tokenizer`) splits numbers into single digits, so the models really have to
   add digit by digit. A fixed set of held-out problems is never shown in SFT or RL.
2. **Teacher.** A ~0.67M-parameter Qwen3 (hidden 128, 4 layers) trained by supervised fine-tuning (a plain PyTorch loop,
   loss on the completion only: cheaper and more predictable than TRL's SFTTrainer for a model this small) until it
   is accurate when sampled at temperature 1.
3. **Student.** A ~0.12M-parameter Qwen3 (hidden 64, 2 layers) from the same tokenizer, given a third of the
   teacher's SFT steps: it learns the answer format and gets about a fifth of the samples right, so it is clearly
   weaker, yet its rollout groups mix correct and incorrect answers and both SCOPE paths (MLE on correct rollouts,
   distillation on incorrect ones) run.
4. **RL.** `--method scope` (default): `SCOPETrainer` with the teacher; `opd`: the same with `routing=False` (plain
   on-policy distillation); `grpo`: TRL's `GRPOTrainer`; `dgpo`: `DGPOTrainer` with 4 optimizer steps per generation
   batch. All use the exact-answer `boxed_answer_reward` as their only reward (SCOPE's verifier). 200 steps of 16
   prompts x 8 rollouts at a constant learning rate of 3e-4 (~0.2 s per step; SFT of the teacher dominates the run
   time). The batch is what makes the rate usable: at 4 prompts per step every method stays where it is at 1e-4,
   loses ground at 3e-4 and collapses into repeated digits at 1e-3 (a plain-PyTorch OPD loop as well).
5. **Evaluation.** k samples per held-out problem at temperature 1 (no top-k / top-p truncation) for the student before
   and after RL and for the teacher: Avg@k (mean fraction correct) and Pass@k (unbiased estimator with n = k, i.e. the
   fraction of problems with at least one correct sample). `scope_trl.evaluation` is used when it exists, else the
   minimal local estimators below.

Outputs under `--output-dir`: `demo_report.json` (settings, timings, metrics, log history), `demo_curves.png` (training
reward, `scope/teacher_kl`, route shares; needs the `plot` extra, and is skipped with a one-line message without it:
the report and the result table come first, so a failing plot loses nothing) and the SFT'd models. `--smoke` runs the
same pipeline with tiny budgets (the tests use it). The demo reports whatever it measures rather than being tuned to
show a gain; how SCOPE, its ablations and the baselines compare on this task over seeds is measured by
`benchmarks/toy_table.py` (README, Benchmarks).
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import TrainerCallback


METHODS = ("scope", "opd", "grpo", "dgpo")
TEACHER_SIZE = {"hidden_size": 128, "num_hidden_layers": 4}
STUDENT_SIZE = {"hidden_size": 64, "num_hidden_layers": 2}
MAX_OPERAND = 99
MAX_COMPLETION_LENGTH = 16  # " The answer is \boxed{198}." is 10 tokens + EOS: room for a few stray tokens
DGPO_STEPS_PER_GENERATION = 4


@dataclass
class DemoSettings:
    """The budget of one demo run; `smoke()` shrinks it to an end-to-end check of a few seconds per stage."""

    method: str = "scope"
    max_steps: int = 200
    sft_steps: int = 900  # teacher SFT steps; the student gets `student_sft_fraction` of them
    student_sft_fraction: float = 1 / 3
    sft_batch_size: int = 128
    sft_learning_rate: float = 5e-3
    # RL. Measured on this task: at 4 prompts per step the update is so noisy that 1e-4 leaves the student where it
    # is, 3e-4 makes GRPO, OPD and SCOPE lose ground and 1e-3 collapses them (and a plain-PyTorch OPD loop) into
    # repeated digits; 16 prompts per step make 3e-4 stable and let the student move.
    learning_rate: float = 3e-4
    num_generations: int = 8
    prompts_per_step: int = 16
    # SCOPEConfig.distillation_advantage_clip for --method scope / opd; None (the paper's method) by default
    distillation_advantage_clip: float | None = None
    eval_problems: int = 500
    k: int = 8
    seed: int = 0

    @property
    def student_sft_steps(self) -> int:
        return max(1, round(self.sft_steps * self.student_sft_fraction))

    def smoke(self) -> DemoSettings:
        self.max_steps, self.sft_steps, self.eval_problems, self.k = 4, 30, 8, 4
        self.num_generations, self.prompts_per_step = 4, 2
        return self


def disable_progress_bars() -> None:
    """Silence per-file progress bars (weights loading, shard writing) that would drown the metrics table."""
    from huggingface_hub.utils import disable_progress_bars as disable_hub_bars
    from transformers.utils import logging as transformers_logging

    disable_hub_bars()
    transformers_logging.disable_progress_bar()


# --------------------------------------------------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------------------------------------------------


def prompt_text(a: int, b: int) -> str:
    return f"What is {a} + {b}?"


def completion_text(answer: int | str) -> str:
    # Leading space: the tokenizer has no prefix space, so this is how the text continues after the prompt.
    return f" The answer is \\boxed{{{answer}}}."


def held_out_problems(num_problems: int, seed: int) -> list[tuple[int, int]]:
    """Distinct (a, b) pairs for evaluation; SFT and RL never draw them."""
    rng = random.Random(f"eval-{seed}")
    pairs: dict[tuple[int, int], None] = {}
    while len(pairs) < num_problems:
        pairs[(rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND))] = None
    return list(pairs)


def sample_training_pairs(rng: random.Random, count: int, exclude: set[tuple[int, int]]) -> list[tuple[int, int]]:
    pairs = []
    while len(pairs) < count:
        pair = (rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND))
        if pair not in exclude:
            pairs.append(pair)
    return pairs


def rl_dataset(num_prompts: int, seed: int, exclude: set[tuple[int, int]]):
    """TRL's prompt-only format (plain-string prompts) plus the `solution` column read by `boxed_answer_reward`."""
    from datasets import Dataset

    pairs = sample_training_pairs(random.Random(f"rl-{seed}"), num_prompts, exclude)
    return Dataset.from_dict(
        {"prompt": [prompt_text(a, b) for a, b in pairs], "solution": [str(a + b) for a, b in pairs]}
    )


# --------------------------------------------------------------------------------------------------------------------
# Supervised fine-tuning (teacher and student)
# --------------------------------------------------------------------------------------------------------------------


def sft_batch(tokenizer, pairs: list[tuple[int, int]]):
    """Right-padded prompt + completion + EOS ids, with labels only on the completion (the prompt is given).

    Prompt and completion are tokenised separately, as in RL, where the model continues the prompt's own ids.
    """
    import torch

    rows, labels = [], []
    for a, b in pairs:
        prompt = tokenizer(prompt_text(a, b), add_special_tokens=False)["input_ids"]
        completion = tokenizer(completion_text(a + b), add_special_tokens=False)["input_ids"] + [
            tokenizer.eos_token_id
        ]
        rows.append(prompt + completion)
        labels.append([-100] * len(prompt) + completion)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    attention_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    label_ids = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])
    return input_ids, attention_mask, label_ids


def supervised_fine_tune(model, tokenizer, steps, batch_size, learning_rate, seed, exclude, name, print_fn):
    """A plain AdamW loop with a cosine schedule; prints the loss ten times. Fresh problems every step."""
    import torch

    rng = random.Random(f"sft-{name}-{seed}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 20)  # a short warm-up: Adam's first steps at full rate knock tiny models off course

    def lr_factor(step: int) -> float:
        return (
            step / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup + 1)))
        )

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    start, report_every = time.time(), max(1, steps // 10)
    for step in range(1, steps + 1):
        input_ids, attention_mask, labels = sft_batch(tokenizer, sample_training_pairs(rng, batch_size, exclude))
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % report_every == 0 or step == steps:
            print_fn(f"  {name} SFT step {step:4d}/{steps}  loss {loss.item():.4f}  ({time.time() - start:.0f}s)")
    model.eval()
    return model


# --------------------------------------------------------------------------------------------------------------------
# Evaluation: Avg@k and Pass@k at temperature 1
# --------------------------------------------------------------------------------------------------------------------


def _local_avg_at_k(correct_counts, num_samples: int) -> float:
    return sum(correct_counts) / (len(correct_counts) * num_samples) if correct_counts else 0.0


def _local_pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """The unbiased estimator 1 - C(n - c, k) / C(n, k) (Chen et al., 2021)."""
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


def estimators():
    """`(avg_at_k, pass_at_k, source)`: the project's `scope_trl.evaluation` when present, else the local ones."""
    try:
        from .evaluation import avg_at_k, pass_at_k

        return avg_at_k, pass_at_k, "scope_trl.evaluation"
    except ImportError:
        return _local_avg_at_k, _local_pass_at_k, "scope_trl.demo (local minimal estimators)"


def evaluate(model, tokenizer, pairs, k: int, seed: int, batch_prompts: int = 50) -> dict:
    """Sample k completions per problem at temperature 1 and score them with the exact-answer verifier."""
    import torch

    from .toy import extract_boxed

    avg_at_k, pass_at_k, _ = estimators()
    model.eval()
    tokenizer.padding_side = "left"  # generation continues the prompt's last token
    correct_counts = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)  # the same sampling noise for every model evaluated in a run
        for start in range(0, len(pairs), batch_prompts):
            chunk = pairs[start : start + batch_prompts]
            enc = tokenizer([prompt_text(a, b) for a, b in chunk], return_tensors="pt", padding=True)
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=MAX_COMPLETION_LENGTH,
                num_return_sequences=k,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for index, (a, b) in enumerate(chunk):
                samples = texts[index * k : (index + 1) * k]
                correct_counts.append(sum(extract_boxed(t) == str(a + b) for t in samples))
    return {
        "avg@k": float(avg_at_k(correct_counts, k)),
        "pass@k": float(sum(pass_at_k(k, c, k) for c in correct_counts) / len(correct_counts)),
        "correct_counts": correct_counts,
    }


# --------------------------------------------------------------------------------------------------------------------
# RL: SCOPE, OPD, GRPO or DGPO
# --------------------------------------------------------------------------------------------------------------------


# Per method, the (header, metric key, format) columns of the per-step table.
COMMON_COLUMNS = [("step", "step", "d"), ("correct", "rewards/boxed_answer_reward/mean", ".3f")]
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
    """Prints one aligned line of the method's main metrics per logged step ("-" where a metric is absent)."""

    def __init__(self, columns, print_fn=print):
        self.columns, self.print = columns, print_fn
        self.header_printed = False
        self.start = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "reward" not in logs:
            return
        if not self.header_printed:
            self.print(" ".join(header.rjust(COLUMN_WIDTH) for header, _, _ in self.columns) + "    time")
            self.header_printed = True
        values = {**logs, "step": state.global_step}
        cells = []
        for _, key, spec in self.columns:
            value = values.get(key)
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            cells.append(("-" if missing else format(value, spec)).rjust(COLUMN_WIDTH))
        self.print(" ".join(cells) + f"  {time.time() - self.start:5.0f}s")


def make_trainer(settings: DemoSettings, student_path: str, teacher_path: str, dataset, output_dir: Path, print_fn):
    from trl import GRPOConfig, GRPOTrainer

    from . import DGPOConfig, DGPOTrainer, SCOPEConfig, SCOPETrainer
    from .toy import boxed_answer_reward

    method = settings.method
    common = {
        "output_dir": str(output_dir / method),
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "disable_tqdm": True,
        "per_device_train_batch_size": settings.num_generations * settings.prompts_per_step,
        "num_generations": settings.num_generations,
        "max_completion_length": MAX_COMPLETION_LENGTH,
        "temperature": 1.0,
        "max_steps": settings.max_steps,
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": "constant",  # short run: a decaying schedule would waste the second half
        "warmup_steps": 0,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": settings.seed,
    }
    kwargs = {
        "model": student_path,
        "reward_funcs": [boxed_answer_reward],
        "train_dataset": dataset,
        "callbacks": [MetricsPrinter(COMMON_COLUMNS + METHOD_COLUMNS[method], print_fn)],
    }
    if method in ("scope", "opd"):
        clip = settings.distillation_advantage_clip
        # Passed only when set, so that a caller's pre-bound config default (benchmarks/toy_table.py) still applies.
        extra = {} if clip is None else {"distillation_advantage_clip": clip}
        args = SCOPEConfig(**common, routing=method == "scope", **extra)
        return SCOPETrainer(**kwargs, args=args, teacher_model=teacher_path)
    if method == "dgpo":
        args = DGPOConfig(**common, steps_per_generation=DGPO_STEPS_PER_GENERATION)
        return DGPOTrainer(**kwargs, args=args)
    return GRPOTrainer(**kwargs, args=GRPOConfig(**common))


def train_rl(settings, student_path, teacher_path, dataset, output_dir, print_fn):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRL's notices about defaults it is changing, not the user's concern here
        trainer = make_trainer(settings, student_path, teacher_path, dataset, output_dir, print_fn)
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        trainer.train()
    return trainer


# --------------------------------------------------------------------------------------------------------------------
# Report: plot, JSON, summary table
# --------------------------------------------------------------------------------------------------------------------


def plot_curves(log_history: list[dict], method: str, path: Path) -> None:
    """Training reward, teacher KL and route shares per step (the last two exist only for scope / opd).

    Needs matplotlib (extra `plot`); raises `MissingOptionalDependency` naming the install command without it.
    """
    from .optional import import_optional

    matplotlib = import_optional("matplotlib", "drawing the demo's training curves")
    matplotlib.use("Agg")  # headless: no display on CI machines
    plt = import_optional("matplotlib.pyplot", "drawing the demo's training curves")

    entries = [e for e in log_history if "reward" in e]
    steps = [e["step"] for e in entries]
    panels = [
        ("training reward (exact answer)", [("reward", "reward")]),
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
    fig.suptitle(f"scope-trl demo: {method} on 2-digit addition")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_table(metrics: dict, k: int) -> str:
    rows = [("student before", "student_before"), ("student after", "student_after"), ("teacher", "teacher")]
    lines = [f"{'':16s} {f'Avg@{k}':>8s} {f'Pass@{k}':>8s}"]
    lines += [f"{label:16s} {metrics[key]['avg@k']:8.3f} {metrics[key]['pass@k']:8.3f}" for label, key in rows]
    return "\n".join(lines)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------------------------------


def run_demo(
    settings: DemoSettings | None = None, output_dir: str | os.PathLike | None = None, print_fn=print
) -> dict:
    """Run the whole demo and return the report (also written to `demo_report.json`)."""
    import torch

    from .toy import build_tiny_model, build_tokenizer

    settings = settings or DemoSettings()
    if settings.method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {settings.method!r}.")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    disable_progress_bars()
    output_dir = Path(output_dir or tempfile.mkdtemp(prefix="scope-trl-demo-"))
    output_dir.mkdir(parents=True, exist_ok=True)
    start, timings = time.time(), {}
    print_fn(f"scope-trl demo: {settings.method} on 2-digit addition, offline, on CPU -> {output_dir}")
    print_fn(f"evaluation estimators: {estimators()[2]}")

    torch.manual_seed(settings.seed)
    tokenizer = build_tokenizer()
    eval_pairs = held_out_problems(settings.eval_problems, settings.seed)
    exclude = set(eval_pairs)
    sft = {"batch_size": settings.sft_batch_size, "learning_rate": settings.sft_learning_rate, "seed": settings.seed}

    paths, models = {}, {}
    for name, size, steps, model_seed in (
        ("teacher", TEACHER_SIZE, settings.sft_steps, settings.seed + 1),
        ("student", STUDENT_SIZE, settings.student_sft_steps, settings.seed),
    ):
        t0 = time.time()
        model = build_tiny_model(tokenizer, seed=model_seed, **size)
        print_fn(f"[{name}] {count_parameters(model):,} parameters, {steps} SFT steps of {settings.sft_batch_size}")
        supervised_fine_tune(model, tokenizer, steps, exclude=exclude, name=name, print_fn=print_fn, **sft)
        paths[name] = str(output_dir / f"{name}_sft")
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
        timings[f"{name}_sft"] = time.time() - t0
        models[name] = model
    teacher, student = models["teacher"], models["student"]

    t0 = time.time()
    print_fn(f"[eval] {settings.eval_problems} held-out problems x {settings.k} samples at temperature 1")
    metrics = {"teacher": evaluate(teacher, tokenizer, eval_pairs, settings.k, settings.seed)}
    metrics["student_before"] = evaluate(student, tokenizer, eval_pairs, settings.k, settings.seed)
    timings["eval_before"] = time.time() - t0
    for key in ("teacher", "student_before"):
        print_fn(
            f"  {key}: Avg@{settings.k} {metrics[key]['avg@k']:.3f}  Pass@{settings.k} {metrics[key]['pass@k']:.3f}"
        )

    t0 = time.time()
    clip = settings.distillation_advantage_clip
    print_fn(
        f"[{settings.method}] {settings.max_steps} steps of {settings.prompts_per_step} prompts x "
        f"{settings.num_generations} rollouts, lr {settings.learning_rate:g}"
        + (
            ""
            if clip is None or settings.method not in ("scope", "opd")
            else f", distillation advantage clip {clip:g}"
        )
    )
    dataset = rl_dataset(settings.max_steps * settings.prompts_per_step * 2, settings.seed, exclude)
    trainer = train_rl(settings, paths["student"], paths["teacher"], dataset, output_dir, print_fn)
    timings["rl"] = time.time() - t0

    t0 = time.time()
    metrics["student_after"] = evaluate(trainer.model, tokenizer, eval_pairs, settings.k, settings.seed)
    timings["eval_after"] = time.time() - t0
    timings["total"] = time.time() - start

    # The results reach the disk and the screen before any optional step, so a failing plot loses nothing.
    plot_path, report_path = output_dir / "demo_curves.png", output_dir / "demo_report.json"
    report = {
        "method": settings.method,
        "settings": asdict(settings),
        "task": f"a + b with a, b in [0, {MAX_OPERAND}], plain prompts, answer in \\boxed{{}}",
        "parameters": {"teacher": count_parameters(teacher), "student": count_parameters(student)},
        "k": settings.k,
        "eval_problems": settings.eval_problems,
        "estimators": estimators()[2],
        "metrics": metrics,
        "steps": trainer.state.global_step,
        "seconds": timings,
        "plot": None,
        "log_history": trainer.state.log_history,
    }
    report_path.write_text(json.dumps(report, indent=2))
    print_fn("")
    print_fn(summary_table(metrics, settings.k))
    print_fn(
        f"total {timings['total']:.0f}s ("
        + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items() if k != "total")
        + ")"
    )
    print_fn(f"report: {report_path}")

    try:
        plot_curves(trainer.state.log_history, settings.method, plot_path)
    except Exception as error:  # optional: the run's results are already saved
        report["plot_error"] = f"{type(error).__name__}: {error}"
        print_fn(f"plot:   not drawn ({error})")
    else:
        report["plot"] = str(plot_path)
        print_fn(f"plot:   {plot_path}")
    report_path.write_text(json.dumps(report, indent=2))
    return report
