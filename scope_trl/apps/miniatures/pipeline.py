"""One miniature run, end to end: SFT of the teacher and the student, the RL prompts, an RL row, its evaluation.

`scope-trl demo` runs it once (SCOPE on task A); `benchmarks/miniatures.py` runs it for every row, seed and task.
SFT'd models and the RL prompts are cached on disk by task, role, seed and budget, so rows of a seed share them and
an interrupted benchmark resumes without retraining.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .models import build_char_tokenizer, build_model
from .rl import ROWS_BY_KEY, RLSettings, Row, edge_prompts, make_trainer, rl_dataset
from .sampling import evaluate, sample_completions
from .sft import supervised_fine_tune
from .tasks import Problem, Task


@dataclass
class Budget:
    """Everything a miniature run spends; `smoke()` shrinks it to seconds."""

    teacher_sft_steps: int = 1500
    student_sft_steps: int = 1000
    sft_batch_size: int = 128
    sft_learning_rate: float = 3e-3
    rl: RLSettings = field(default_factory=RLSettings)
    rl_prompts: int = 1600  # distinct edge-of-competence prompts; 200 steps x 16 prompts sees each twice
    eval_problems: int = 500
    k: int = 8

    def smoke(self) -> Budget:
        rl = replace(self.rl, max_steps=2, prompts_per_step=2, num_generations=4)
        return replace(
            self,
            teacher_sft_steps=20,
            student_sft_steps=10,
            sft_batch_size=16,
            rl=rl,
            rl_prompts=4,
            eval_problems=8,
            k=4,
        )


def _quiet():
    """Silence per-file progress bars and TRL's notices about its changing defaults (not the user's concern)."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def sft_models(task: Task, budget: Budget, seed: int, cache_dir: Path, print_fn=print) -> dict[str, str]:
    """Paths of the SFT'd teacher and student of `seed` (trained, or loaded from `cache_dir`).

    The teacher is trained once per task (seed 0's initialisation) and shared by every seed: the seeds vary the
    student, the RL prompts and the RL run, which is where the table's rows differ. Teacher and student start from
    different initialisations and learn from their role's SFT data (`task.sft_examples`).
    """
    tokenizer = build_char_tokenizer()
    paths = {}
    for role, steps, role_seed in (
        ("teacher", budget.teacher_sft_steps, 0),
        ("student", budget.student_sft_steps, seed),
    ):
        key = f"{task.name}-{role}-seed{role_seed}-steps{steps}-batch{budget.sft_batch_size}-lr{budget.sft_learning_rate:g}"
        path = cache_dir / key
        if not (path / "config.json").exists():
            start = time.time()
            model = build_model(tokenizer, seed=1000 + role_seed if role == "teacher" else role_seed)
            supervised_fine_tune(
                model,
                tokenizer,
                lambda rng, count, role=role: task.sft_examples(role, count, rng),
                steps,
                batch_size=budget.sft_batch_size,
                learning_rate=budget.sft_learning_rate,
                seed=role_seed,
                name=f"{task.name} {role}",
                print_fn=print_fn,
            )
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
            print_fn(f"  {task.name} {role} (seed {role_seed}): {steps} SFT steps in {time.time() - start:.0f}s")
        paths[role] = str(path)
    return paths


def rl_prompts(
    task: Task, budget: Budget, student_path: str, seed: int, cache_dir: Path, selection: str = "edge"
) -> tuple[list[Problem], dict]:
    """The RL prompts of a seed: train-split problems at its student's edge of competence, or beyond its reach
    (`selection`, see `rl.edge_prompts`)."""
    from transformers import AutoModelForCausalLM

    path = cache_dir / f"{Path(student_path).name}-{selection.replace('_', '-')}{budget.rl_prompts}-k{budget.k}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        return [Problem(**p) for p in saved["problems"]], saved["stats"]
    student = AutoModelForCausalLM.from_pretrained(student_path)
    problems, stats = edge_prompts(
        student, build_char_tokenizer(), task, budget.rl_prompts, seed, k=budget.k, selection=selection
    )
    path.write_text(json.dumps({"problems": [asdict(p) for p in problems], "stats": stats}))
    return problems, stats


# The sampling seed that decides which test problems are beyond a student's reach: not an evaluation seed, so the
# student row's own test samples do not define the subset they are scored on (which would pin it at 0).
REACH_SEED_OFFSET = 10_000


def beyond_reach(task: Task, student_path: str, problems: list[Problem], k: int, seed: int) -> list[bool]:
    """For each problem: whether none of k samples of the SFT student at `student_path` is correct (task E's subset
    of the test problems), sampled with a seed of its own."""
    from transformers import AutoModelForCausalLM

    _quiet()
    student = AutoModelForCausalLM.from_pretrained(student_path)
    samples = sample_completions(
        student,
        build_char_tokenizer(),
        [p.prompt for p in problems],
        k,
        task.max_completion_length,
        REACH_SEED_OFFSET + seed,
    )
    return [not any(task.is_correct(p.prompt, c) for c in completions) for p, completions in zip(problems, samples)]


# The training curves kept per run: TRL's mean training reward and the mechanisms' own signals.
CURVE_KEYS = ("reward", "scope/teacher_kl", "clip_ratio/region_mean", "cispo_clip_ratio", "entropy")


def run_row(
    row: Row,
    task: Task,
    settings: RLSettings,
    paths: dict[str, str],
    prompts: list[Problem],
    eval_problems: list[Problem],
    k: int,
    work_dir: Path,
    eval_seed: int,
    callbacks=(),
    subsets: dict[str, list[bool]] | None = None,
) -> dict:
    """Train `row` from the student (no RL for the `student` row) and evaluate the result on `eval_problems`.

    Returns `{"summary": Evaluation.summary(), "curves": {"step": [optimizer steps], key: [value or None per step]},
    "rl_seconds": float, "log_history": [TRL's log entries]}`; the summary is None when `eval_problems` is empty.
    """
    from transformers import AutoModelForCausalLM
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    _quiet()
    tokenizer = build_char_tokenizer()
    curves: dict[str, list] = {}
    history: list[dict] = []
    start = time.time()
    if row.trainer is None:
        model = AutoModelForCausalLM.from_pretrained(paths["student"])
    else:
        settings = replace(settings, steps_per_generation=row.steps_per_generation)
        # One generation batch holds steps_per_generation x prompts_per_step prompts: a smaller prompt set (a smoke
        # budget) would give TRL's sampler no full batch at all, so repeat it.
        needed = settings.steps_per_generation * settings.prompts_per_step
        prompts = prompts * -(-needed // max(1, len(prompts)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TRL's notices about its changing defaults
            trainer = make_trainer(
                row, settings, task, paths["student"], paths["teacher"], rl_dataset(prompts), work_dir, callbacks
            )
            trainer.remove_callback(PrinterCallback)
            trainer.remove_callback(ProgressCallback)
            trainer.train()
        model = trainer.model
        history = trainer.state.log_history
        # One entry per logged optimizer step. TRL logs the reward only on steps that generate (every
        # steps_per_generation-th), the clip shares on every step: keep the step numbers to align them.
        steps = [entry for entry in history if "loss" in entry and "step" in entry]
        curves = {key: [entry.get(key) for entry in steps] for key in CURVE_KEYS}
        curves = {key: values for key, values in curves.items() if any(v is not None for v in values)}
        curves["step"] = [entry["step"] for entry in steps]
    rl_seconds = time.time() - start
    summary = None
    if eval_problems:  # none: a pilot that reads only the training curves
        summary = evaluate(model, tokenizer, task, eval_problems, k, seed=eval_seed, subsets=subsets).summary()
    return {"summary": summary, "curves": curves, "rl_seconds": rl_seconds, "log_history": history}


def evaluate_path(path: str, task: Task, problems: list[Problem], k: int, seed: int, subsets=None) -> dict:
    """`Evaluation.summary()` of the model saved at `path` (the teacher, a student before RL)."""
    from transformers import AutoModelForCausalLM

    _quiet()
    model = AutoModelForCausalLM.from_pretrained(path)
    return evaluate(model, build_char_tokenizer(), task, problems, k, seed=seed, subsets=subsets).summary()


def row(key: str) -> Row:
    if key not in ROWS_BY_KEY:
        raise ValueError(f"Unknown row {key!r}; choose among {', '.join(ROWS_BY_KEY)}.")
    return ROWS_BY_KEY[key]
