"""The RL rows of the miniatures: one trainer factory for GRPO, CISPO, DGPO, plain OPD, SCOPE and its variants, and a
teacher-free control, all on the same prompts, rollout budget and schedule.

Every row samples `prompts_per_step x num_generations` rollouts per optimizer step for `max_steps` steps (with
`steps_per_generation = s`, one generation of s times as many rollouts feeds s optimizer steps, so the budget per
step is unchanged). The learning-rate schedule is a linear warm-up over the first `warmup_ratio` of the steps, then
cosine decay to 0; gradients are clipped to norm 1; rollouts are sampled at temperature 1. These are the knobs the
regime search of `benchmarks/miniatures.py` sets, identical for every row but for the learning rate, which each row
picks from one shared grid on the validation problems.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...routing import OPD
from ...scope_trainer import SCOPETrainer
from .sampling import sample_completions
from .tasks import Problem, Task


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    trainer: str | None  # "grpo", "dgpo", "scope", "shuffled" or "control"; None for the untouched student
    config: dict = field(default_factory=dict)  # extra config fields of the row
    steps_per_generation: int = 1  # > 1: several optimizer steps per generation batch, the ratio departs from 1
    learning_rate: float | None = None  # fixed (a stability map's cell); None: chosen on validation from the grid


# The off-policy surrogates compared in tasks D and D2: (key, label, trainer, config).
SURROGATES = (
    ("grpo", "GRPO", "grpo", {}),
    ("cispo", "CISPO", "grpo", {"loss_type": "cispo", "epsilon_high": 5.0}),  # TRL's recommended ε_max
    ("dgpo", "DGPO", "dgpo", {}),
)
STABILITY_STEPS = 8
STABILITY_LEARNING_RATES = (1e-3, 3e-3, 1e-2)
# Its extension below the first grid, where every run of the first collapsed within one generation batch.
STABILITY_LOW_LEARNING_RATES = (1e-4, 3e-4)
# The stability map's departures from the shared regime, fixed by its pilot (`benchmarks/miniatures.py --pilot`,
# boundary-token shares only): each generation batch feeds STABILITY_STEPS optimizer steps 4 times over (32 updates
# per batch), at a constant learning rate without warm-up (the DGPO paper's schedule), so that >= 5% of loss tokens
# lie beyond the trust region. Its rows therefore see a quarter of the fresh rollouts of the other tasks' rows.
STABILITY_CONFIG = {"num_iterations": 4, "lr_scheduler_type": "constant", "warmup_steps": 0}

# DGPO's soft clip only acts once the ratio departs from 1: its rows take 4 optimizer steps per generation batch (the
# DGPO paper's recipe), with the same rollouts per optimizer step as every other row.
ROWS = (
    Row("student", "student (SFT only)", None),
    Row("grpo", "GRPO", "grpo"),
    Row("opd", "OPD (same rollouts)", "scope", {"routing": False}),
    Row("scope", "SCOPE", "scope"),
    Row(
        "scope_no_weights", "SCOPE w/o weights", "scope", {"use_student_weights": False, "use_teacher_weights": False}
    ),
    Row("scope_dgpo", "SCOPE, DGPO surrogate (4 steps/gen.)", "scope", {"policy_surrogate": "dgpo"}, 4),
    Row("dgpo", "DGPO (4 steps/gen.)", "dgpo", {}, 4),
    Row("control", "teacher-free control", "control"),
    # Task E: plain OPD whose teacher reads another prompt of the batch (the same token statistics, none of the
    # problem's information), and the dual-path weights' own ablations (the paper's reversed teacher weight included).
    Row("opd_shuffled", "OPD, shuffled teacher", "shuffled", {"routing": False}),
    Row("scope_student_weights", "SCOPE, student weights only", "scope", {"use_teacher_weights": False}),
    Row("scope_teacher_weights", "SCOPE, teacher weights only", "scope", {"use_student_weights": False}),
    Row("scope_teacher_reversed", "SCOPE, teacher weight reversed", "scope", {"teacher_weight_direction": "reversed"}),
    # Task D: the off-policy regime, GRPO's hard clip against TRL's CISPO and DGPO at 4 and 8 steps per generation.
    *(
        Row(f"{name}@{steps}", f"{label}, {steps} steps/gen.", trainer, config, steps)
        for steps in (4, 8)
        for name, label, trainer, config in SURROGATES
    ),
    # The stability map (task C): each surrogate at every learning rate of a grid around the stable edge, with enough
    # updates per generation batch that many loss tokens lie beyond the trust region.
    *(
        Row(
            f"{name}@{STABILITY_STEPS}/{lr:g}",
            f"{label}, lr {lr:g}",
            trainer,
            config | STABILITY_CONFIG,
            STABILITY_STEPS,
            lr,
        )
        for lr in STABILITY_LOW_LEARNING_RATES + STABILITY_LEARNING_RATES
        for name, label, trainer, config in SURROGATES
    ),
)
ROWS_BY_KEY = {row.key: row for row in ROWS}


@dataclass
class RLSettings:
    max_steps: int = 200
    prompts_per_step: int = 16
    num_generations: int = 8
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    lr_scheduler_type: str = "cosine"
    max_grad_norm: float = 1.0
    temperature: float = 1.0
    steps_per_generation: int = 1
    seed: int = 0

    @property
    def rollouts_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations


def verifier(task: Task):
    """The task's verifier as a named TRL reward function (TRL logs it as `rewards/<name>/mean`)."""

    def reward(completions, prompts, **kwargs):
        return task.reward(completions, prompts=prompts)

    reward.__name__ = f"{task.name}_correct"
    return reward


PROMPT_SELECTIONS = ("edge", "beyond_reach")


def edge_prompts(
    model,
    tokenizer,
    task: Task,
    count: int,
    seed: int,
    k: int = 8,
    max_candidates: int | None = None,
    selection: str = "edge",
) -> tuple[list[Problem], dict]:
    """`count` train-split problems at the model's edge of competence: of k samples, some right and some wrong
    (`selection="edge"`); or beyond its reach: none of k samples right (`selection="beyond_reach"`, task E).

    RL on prompts a policy always or never solves teaches it nothing through an outcome reward, so reasoning-RL
    pipelines filter their prompts by the initial policy's pass rate; every row here trains on the same filtered set.
    Task E keeps the prompts that an outcome reward cannot teach on purpose: there only a teacher's token-level signal
    says what is wrong. After `max_candidates` problems (default 50 per prompt wanted) the rest is filled with
    unfiltered train problems, so that a model that solves nothing (an untrained smoke-test model) still gets prompts.
    Returns the problems and the filter's statistics (candidates that were all right, all wrong, mixed; prompts filled
    unfiltered).
    """
    if selection not in PROMPT_SELECTIONS:
        raise ValueError(f"selection must be one of {PROMPT_SELECTIONS}, got {selection!r}.")
    max_candidates = 50 * count if max_candidates is None else max_candidates
    round_index, kept, stats = 0, [], {"candidates": 0, "all_correct": 0, "all_wrong": 0, "mixed": 0, "filled": 0}
    seen: set[str] = set()
    while len(kept) < count and stats["candidates"] < max_candidates:
        batch = min(4 * count, max_candidates - stats["candidates"])
        candidates = [p for p in task.problems("train", batch, seed * 1000 + round_index) if p.prompt not in seen]
        round_index += 1
        seen |= {p.prompt for p in candidates}
        samples = sample_completions(
            model, tokenizer, [p.prompt for p in candidates], k, task.max_completion_length, seed
        )
        for problem, completions in zip(candidates, samples):
            correct = sum(task.is_correct(problem.prompt, c) for c in completions)
            stats["candidates"] += 1
            outcome = "all_wrong" if correct == 0 else "all_correct" if correct == k else "mixed"
            stats[outcome] += 1
            if outcome == ("mixed" if selection == "edge" else "all_wrong"):
                kept.append(problem)
            if len(kept) == count:
                break
    if len(kept) < count:
        filler = [
            p for p in task.problems("train", count + len(seen), seed * 1000 + round_index) if p.prompt not in seen
        ]
        stats["filled"] = count - len(kept)
        kept += filler[: count - len(kept)]
    random.Random(seed).shuffle(kept)
    return kept, stats


def rl_dataset(problems: list[Problem]):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [p.prompt for p in problems]})


class TeacherFreeControlTrainer(SCOPETrainer):
    """The teacher-free control: SCOPE's routing and MLE path, with a fixed advantage −1 on every token of an
    incorrect rollout instead of the teacher's log-ratio (negative-sample reinforcement, arXiv 2608.31046).

    If SCOPE does not beat it, what helps is the routing, not the teacher. The teacher is never called; pass the
    student as `teacher_model` to satisfy the constructor. The fixed value −1 matches the MLE path's per-token +1.
    """

    NEGATIVE_ADVANTAGE = -1.0

    def _score_with_teacher(self, input_ids, attention_mask, logits_to_keep, rows, batch_size):
        return torch.zeros(input_ids.size(0), logits_to_keep, device=input_ids.device)

    def _weight_generation_batch(self, scored, old_per_token_logps):
        # Where SCOPE's per-token advantages are made, at generation or in the loss forward (`SCOPETrainer` docs).
        weighted = super()._weight_generation_batch(scored, old_per_token_logps)
        opd = (weighted["scope_route"] == OPD).unsqueeze(1)
        weighted["advantages"] = torch.where(opd, self.NEGATIVE_ADVANTAGE, weighted["advantages"])
        return weighted


class ShuffledTeacherTrainer(SCOPETrainer):
    """The shuffled-teacher control: the teacher scores each rollout's completion after the prompt of the next prompt
    group of the generation batch (the last group takes the first's), so its signal keeps the teacher's token
    statistics and loses the problem's information.

    If OPD does not beat it, what helps is not the teacher's knowledge of the problem. The prompt columns (ids and
    mask, left-padded alike) move together, so prompts of different lengths stay well-formed.
    """

    def _score_with_teacher(self, input_ids, attention_mask, logits_to_keep, rows, batch_size):
        prompt_length = input_ids.size(1) - logits_to_keep
        shift = self.num_generations if input_ids.size(0) > self.num_generations else 0
        if shift == 0:
            raise ValueError("The shuffled-teacher control needs at least two prompt groups per process.")
        input_ids, attention_mask = input_ids.clone(), attention_mask.clone()
        for tensor in (input_ids, attention_mask):
            tensor[:, :prompt_length] = tensor[:, :prompt_length].roll(-shift, dims=0)
        return super()._score_with_teacher(input_ids, attention_mask, logits_to_keep, rows, batch_size)


def make_trainer(
    row: Row,
    settings: RLSettings,
    task: Task,
    student_path: str,
    teacher_path: str,
    dataset,
    output_dir: str | Path,
    callbacks=(),
):
    """The trainer of `row` with the shared settings; TRL's own `GRPOTrainer` for the GRPO and CISPO rows."""
    from trl import GRPOConfig, GRPOTrainer

    from ... import DGPOConfig, DGPOTrainer, SCOPEConfig

    common = {
        "output_dir": str(output_dir),
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "disable_tqdm": True,
        "per_device_train_batch_size": settings.rollouts_per_step,
        "num_generations": settings.num_generations,
        "steps_per_generation": settings.steps_per_generation,
        "max_completion_length": task.max_completion_length,
        "temperature": settings.temperature,
        "max_steps": settings.max_steps,
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": settings.lr_scheduler_type,
        "warmup_steps": settings.warmup_ratio,  # a float in [0, 1) is a ratio of max_steps (transformers 5)
        "max_grad_norm": settings.max_grad_norm,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": settings.seed,
        "beta": 0.0,
    }
    kwargs = {
        "model": student_path,
        "reward_funcs": [verifier(task)],
        "train_dataset": dataset,
        "callbacks": list(callbacks),
    }
    fields = common | row.config  # a row may override a shared setting (the stability map's schedule)
    if row.trainer == "grpo":
        return GRPOTrainer(**kwargs, args=GRPOConfig(**fields))
    if row.trainer == "dgpo":
        return DGPOTrainer(**kwargs, args=DGPOConfig(**fields))
    if row.trainer == "scope":
        return SCOPETrainer(**kwargs, args=SCOPEConfig(**fields), teacher_model=teacher_path)
    if row.trainer == "shuffled":
        return ShuffledTeacherTrainer(**kwargs, args=SCOPEConfig(**fields), teacher_model=teacher_path)
    if row.trainer == "control":
        args = SCOPEConfig(**fields, use_teacher_weights=False)
        return TeacherFreeControlTrainer(**kwargs, args=args, teacher_model=student_path)
    raise ValueError(f"Row {row.key!r} has no trainer (trainer={row.trainer!r}).")
