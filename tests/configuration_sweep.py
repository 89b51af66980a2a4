"""The configuration sweep's machinery (tests/test_configuration_sweep.py runs it): the factors a user sets, a
deterministic pairwise covering array over the valid combinations, the combinations the trainers must refuse, and one
combination's run with its invariants.

A combination is a dict of option values (plus the sweep's own knobs: the teacher's placement, a poisoned teacher
score). Its run, in-process on the tiny test bed:

1. build the trainer (a refusal is expected exactly where `refusal` predicts one, with that message);
2. train two optimizer steps, evaluating after the first, saving a checkpoint after the second, then stop;
3. build a fresh trainer with the same options (no evaluation or checkpoint this time) and resume from that
   checkpoint for a third step;
4. check the invariants: every training loss finite; the parameters changed; every logged metric present and finite
   where it is defined; SCOPE's live weights averaging 1 (summing to 1 under `weight_normalization="sum"`) over every
   routed subset of every prompt group, 0 on excluded rollouts; the resumed parameters, optimizer and scheduler state
   equal to the saved ones.
"""

from __future__ import annotations

import collections
import itertools
import math
import os
import random
import re
import warnings

import torch
from peft import LoraConfig
from transformers import TrainerCallback

from scope_trl.routing import EXCLUDED, MLE, OPD


# ---------------------------------------------------------------------------------------------------------------------
# The factors
# ---------------------------------------------------------------------------------------------------------------------

COMMON_FACTORS = {
    "per_device_train_batch_size": [2, 4, 6, 8],
    "per_device_eval_batch_size": [2, 4, 6, 16],
    "num_generations": [2, 3, 4],
    "num_generations_eval": [None, 2, 3, 4],
    "steps_per_generation": [1, 2, 4],
    "num_iterations": [1, 2],
    "gradient_accumulation_steps": [1, 2],
    "mask_truncated_completions": [False, True],
    "beta": [0.0, 0.02],
    "scale_rewards": ["group", "batch", "none"],
    "top_entropy_quantile": [1.0, 0.5],
    "off_policy_mask_threshold": [None, 0.5],
    "max_grad_norm": [1.0, 0.0],
    "gradient_checkpointing": [False, True],
    "peft": [False, True],  # a LoRA adapter on q_proj and v_proj
}
FACTORS = {
    "grpo": {
        **COMMON_FACTORS,
        "loss_type": ["dapo", "grpo", "bnpo", "dr_grpo", "luspo", "cispo", "sapo", "vespo"],
        "importance_sampling_level": ["token", "sequence"],
    },
    "dgpo": {
        **COMMON_FACTORS,
        "loss_type": ["dapo", "grpo", "bnpo", "dr_grpo", "luspo"],
        "importance_sampling_level": ["token", "sequence"],
        "dgpo_n": [1.0, 2.0],
        "dgpo_m": [1.0, 2.0],
    },
    "scope": {
        **COMMON_FACTORS,
        "loss_type": ["dapo"],  # SCOPE owns its aggregation (scope_loss_aggregation); other values are refused
        "scope_loss_aggregation": ["official", "per_path", "global"],
        "routing": [True, False],
        "weight_normalization": ["mean", "sum"],
        "policy_surrogate": ["ppo", "dgpo"],
        "use_student_weights": [True, False],
        "use_teacher_weights": [True, False],
        "outcome_advantage_coef": [0.0, 0.5],
        "distillation_advantage_clip": [None, 0.5],
        "teacher_temperature": [1.0, 0.7],
        "teacher": ["in_process", "offload", "server"],
        "nonfinite_teacher_scores": ["error", "exclude"],
        "poisoned_teacher_score": [False, True],  # the teacher's first scored token of each batch reads -inf
    },
}
# What each trainer must refuse at construction, beyond the divisibility rules every GRPO config enforces: one
# mutation of a valid combination per entry, with the message that must name the problem.
REFUSED_MUTATIONS = {
    "grpo": [],
    "dgpo": [{"loss_type": "cispo"}, {"loss_type": "sapo"}, {"loss_type": "vespo"}],
    "scope": [
        {"loss_type": "grpo"},
        {"importance_sampling_level": "sequence"},
        {"teacher": "offloaded_server"},
        {"teacher": "server", "teacher_temperature": 0.7},
    ],
}
SWEEP_KNOBS = ("teacher", "poisoned_teacher_score", "peft")  # not config fields


def refusal(trainer: str, combo: dict) -> str | None:
    """The message (a regex) with which building `combo` must fail, or None when it must build.

    An independent statement of the rules: the GRPO config's divisibility rules (generation and evaluation batches hold
    whole prompt groups) and the options each of our trainers does not support.
    """
    generations_eval = combo["num_generations_eval"] or combo["num_generations"]
    if combo["per_device_eval_batch_size"] % generations_eval:
        return r"eval batch size .* must be divisible by the number of generations used for evaluation"
    if (combo["per_device_train_batch_size"] * combo["steps_per_generation"]) % combo["num_generations"]:
        return r"generation_batch_size \(\d+\) must be divisible by num_generations \(\d+\)"
    if trainer == "dgpo" and combo["loss_type"] not in FACTORS["dgpo"]["loss_type"]:
        return rf"loss_type='{combo['loss_type']}' is not supported by DGPO.*use GRPOTrainer"
    if trainer == "scope" and combo["loss_type"] != "dapo":
        return rf"loss_type='{combo['loss_type']}' does not apply to SCOPE.*scope_loss_aggregation"
    if trainer == "scope" and combo.get("importance_sampling_level", "token") != "token":
        return r"importance_sampling_level must be 'token' for SCOPE"
    if trainer == "scope" and combo["teacher"] == "offloaded_server":
        return r"teacher_offload=True and a teacher server .* exclude each other"
    if trainer == "scope" and combo["teacher"] == "server" and combo["teacher_temperature"] != 1.0:
        return r"teacher_temperature=0.7 cannot be applied by a teacher server"
    return None


# ---------------------------------------------------------------------------------------------------------------------
# The covering array
# ---------------------------------------------------------------------------------------------------------------------


def _pairs(combo: dict, names: list[str]) -> set:
    return {((a, combo[a]), (b, combo[b])) for a, b in itertools.combinations(names, 2)}


def covering_array(trainer: str, rows: int, seed: int = 0, candidates: int = 30) -> list[dict]:
    """At least `rows` valid combinations covering every pair of factor levels that some valid combination holds.

    Greedy and deterministic (AETG-like): each row is the best of `candidates` random valid combinations, scored by the
    uncovered pairs it covers; once every pair is covered, the rows are random valid combinations, for variety. A
    larger `rows` extends the same sequence: the first rows do not depend on it.
    """
    factors = FACTORS[trainer]
    names = list(factors)
    rng = random.Random(f"{trainer}-{seed}")
    all_pairs = {((a, x), (b, y)) for a, b in itertools.combinations(names, 2) for x in factors[a] for y in factors[b]}
    covered, chosen, stale = set(), [], 0
    while len(chosen) < rows or (covered != all_pairs and stale < 50):
        best, best_score = None, -1
        for _ in range(candidates):
            combo = {name: rng.choice(levels) for name, levels in factors.items()}
            if refusal(trainer, combo) is not None:
                continue
            score = len(_pairs(combo, names) - covered)
            if score > best_score:
                best, best_score = combo, score
            if score == 0 and covered == all_pairs:
                break  # nothing left to cover: the first valid draw will do
        if best is None:
            continue
        if best_score == 0 and len(chosen) >= rows:
            stale += 1  # the pairs left are held by no valid combination (or rarely drawn): stop trying
            continue
        chosen.append(best)
        covered |= _pairs(best, names)
    return chosen


# The factors the validity rules read besides the pinned pair; every other factor combines freely.
RULED_FACTORS = (
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "num_generations",
    "num_generations_eval",
    "steps_per_generation",
    "teacher",
    "teacher_temperature",
)


def uncovered_pairs(trainer: str, rows: list[dict]) -> set:
    """The pairs of factor levels that some valid combination holds but no row of `rows` does."""
    factors = FACTORS[trainer]
    names = list(factors)
    covered = set().union(*(_pairs(combo, names) for combo in rows))
    base = rows[0]
    ruled = [name for name in RULED_FACTORS if name in factors]
    settings = [dict(zip(ruled, values)) for values in itertools.product(*(factors[name] for name in ruled))]
    missing = set()
    for a, b in itertools.combinations(names, 2):
        for x, y in itertools.product(factors[a], factors[b]):
            if ((a, x), (b, y)) in covered:
                continue
            pinned = {a: x, b: y}
            feasible = any(
                refusal(trainer, {**base, **setting, **pinned}) is None
                for setting in settings
                if all(setting.get(name, value) == value for name, value in pinned.items())
            )
            if feasible:
                missing.add(((a, x), (b, y)))
    return missing


def refused_combinations(trainer: str, valid: list[dict]) -> list[dict]:
    """Combinations the trainer must refuse: the valid rows broken one way each (the batch rules, then the trainer's
    unsupported options), deterministic."""
    breakers = [
        {"per_device_train_batch_size": 2, "steps_per_generation": 1, "num_generations": 4},
        {"per_device_train_batch_size": 4, "steps_per_generation": 1, "num_generations": 3},
        {"per_device_eval_batch_size": 2, "num_generations_eval": 4},
        {"per_device_eval_batch_size": 4, "num_generations_eval": None, "num_generations": 3},
        *REFUSED_MUTATIONS[trainer],
    ]
    refused = []
    for index, breaker in enumerate(breakers):
        combo = {**valid[index % len(valid)], **breaker}
        assert refusal(trainer, combo) is not None, (trainer, combo)
        refused.append(combo)
    return refused


def describe(combo: dict) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in combo.items())


# ---------------------------------------------------------------------------------------------------------------------
# One combination's run
# ---------------------------------------------------------------------------------------------------------------------

# Metrics that are undefined (NaN) in some batches by definition (docs/metrics.md): an empty routed subset, a batch
# without a distilled token, a sequence without loss tokens.
MAY_BE_UNDEFINED = {
    "scope/student_ppl_correct_mean",
    "scope/teacher_ppl_incorrect_mean",
    "scope/student_weight_max",
    "scope/student_weight_min",
    "scope/teacher_weight_max",
    "scope/teacher_weight_min",
    "scope/teacher_kl",
    "clip_ratio/low_min",
    "clip_ratio/high_max",
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "clip_ratio/region_mean",
    "completions/mean_terminated_length",
    "completions/min_terminated_length",
    "completions/max_terminated_length",
    "dgpo/low_weight_mean",
    "dgpo/high_weight_mean",
}
# Logged at every optimizer step (by the loss and the update), and at a step that generated (step 1 always does).
REQUIRED_STEP_METRICS = {
    "grpo": {"loss", "grad_norm", "entropy"},  # clip metrics depend on its loss_type
    "dgpo": {
        "loss",
        "grad_norm",
        "entropy",
        "policy_loss",
        "clip_ratio/region_mean",
        "nonfinite/skipped_steps",
        "nonfinite/scaler_skipped_steps",
    },
    "scope": {
        "loss",
        "grad_norm",
        "entropy",
        "policy_loss",
        "scope/mle_loss",
        "scope/opd_loss",
        "nonfinite/skipped_steps",
        "nonfinite/scaler_skipped_steps",
    },
}
# Token means, undefined at a step without any loss token (every rollout truncated under `mask_truncated_completions`).
UNDEFINED_WITHOUT_TOKENS = {"entropy", "kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"}
REQUIRED_GENERATION_METRICS = {
    "grpo": {"reward", "completions/mean_length"},
    "dgpo": {"reward", "completions/mean_length"},
    "scope": {
        "reward",
        "completions/mean_length",
        "scope/frac_correct",
        "scope/frac_incorrect",
        "scope/frac_excluded",
        "scope/frac_nonfinite_teacher",
        "teacher/score_time",
    },
}
REQUIRED_EVAL_METRICS = {
    "grpo": {"eval_loss", "eval_reward"},
    "dgpo": {"eval_loss", "eval_reward", "eval_policy_loss"},
    "scope": {"eval_loss", "eval_reward", "eval_policy_loss", "eval_scope/frac_correct", "eval_scope/opd_loss"},
}
# The completions end early often (a bias towards the end-of-sequence token), so that `mask_truncated_completions`
# keeps some of them and the terminated-length metrics are defined.
EOS_BIAS = 5.0
EOS_ID = 2  # the toy tokenizer's


class _Stop(TrainerCallback):
    """Evaluate after step 1; stop after step 2 (whose checkpoint is saved first, as an interrupted run's would be)."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            control.should_evaluate = True
        if state.global_step == 2:
            control.should_save, control.should_training_stop = True, True


class _AtTrainBegin(TrainerCallback):
    """The state a resumed trainer starts from: after the checkpoint is loaded, before its first step."""

    def __init__(self, trainer):
        self.trainer, self.state = trainer, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.state = training_state(self.trainer)


def training_state(trainer) -> dict:
    optimizer = trainer.optimizer.state_dict()
    return {
        "global_step": trainer.state.global_step,
        "parameters": {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad},
        "optimizer": {
            k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()} for k, s in optimizer["state"].items()
        },
        "scheduler": trainer.lr_scheduler.state_dict(),
    }


def _config(trainer: str, combo: dict, output_dir: str, server_url: str | None, teacher_path: str, resumed: bool):
    from trl import GRPOConfig

    from scope_trl import DGPOConfig, SCOPEConfig

    options = {name: value for name, value in combo.items() if name not in SWEEP_KNOBS}
    kwargs = {
        "output_dir": output_dir,
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "disable_tqdm": True,
        "max_completion_length": 6,
        "max_steps": 3,
        "logging_steps": 1,
        "learning_rate": 5e-2,
        "seed": 0,
        "save_strategy": "steps",
        "save_steps": 1000,  # the checkpoint at step 2 is asked for by `_Stop`
        "eval_strategy": "steps",
        "eval_steps": 1000,  # the evaluation after step 1 too
        "generation_kwargs": {"sequence_bias": {(EOS_ID,): EOS_BIAS}},
        **options,
    }
    if resumed:
        kwargs.update(save_strategy="no", eval_strategy="no")
    config_class = {"grpo": GRPOConfig, "dgpo": DGPOConfig, "scope": SCOPEConfig}[trainer]
    if trainer == "scope":
        kwargs["teacher_model_name_or_path"] = teacher_path
        if combo["teacher"] in ("server", "offloaded_server"):
            kwargs["teacher_model_server_url"] = server_url
        kwargs["teacher_offload"] = combo["teacher"] in ("offload", "offloaded_server")
    return config_class(**kwargs)


LORA = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def build(trainer: str, combo: dict, paths: dict, output_dir: str, server_url: str | None, datasets, resumed=False):
    from trl import GRPOTrainer

    from scope_trl import DGPOTrainer, SCOPETrainer
    from scope_trl.apps.toy import contains_digit_reward, digit_fraction_reward

    trainer_class = {"grpo": GRPOTrainer, "dgpo": DGPOTrainer, "scope": SCOPETrainer}[trainer]
    # SCOPE routes on a verdict (binary); GRPO's advantages need rewards that differ within a group (dense).
    reward = contains_digit_reward if trainer == "scope" else digit_fraction_reward
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = _config(trainer, combo, output_dir, server_url, paths["teacher"], resumed)
        built = trainer_class(
            model=paths["student"],
            reward_funcs=reward,
            args=args,
            train_dataset=datasets[0],
            eval_dataset=datasets[1],
            peft_config=LORA if combo["peft"] else None,
        )
    _record_signal(built)
    if trainer == "scope":
        built._sweep_batches = []
        _record_weights(built)
        if combo["poisoned_teacher_score"]:
            _poison_teacher(built)
    return built


def _record_signal(trainer) -> None:
    """`trainer._sweep_signal`: whether a training micro-batch had a loss token with a non-zero advantage (else the
    surrogate's gradient is zero, and so may the update be: all rewards of every group equal, every rollout
    truncated under `mask_truncated_completions`); `trainer._sweep_tokens`: the loss tokens of each step."""
    trainer._sweep_signal = False
    trainer._sweep_tokens = collections.Counter()  # loss tokens per optimizer step
    original = trainer._compute_loss

    def recording(model, inputs):
        loss = original(model, inputs)
        if model.training:  # read after the loss: SCOPE may fill the advantages in its loss forward
            advantages, mask = inputs["advantages"], inputs["completion_mask"].bool()
            if "tool_mask" in inputs:
                mask = mask & inputs["tool_mask"].bool()
            if "scope_route" in inputs:  # SCOPE's loss tokens are those of routed rollouts
                mask = mask & (inputs["scope_route"] != EXCLUDED).unsqueeze(1)
            advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
            trainer._sweep_signal |= bool(((advantages != 0) & mask).any())
            trainer._sweep_tokens[trainer.state.global_step + 1] += int(mask.sum())
        return loss

    trainer._compute_loss = recording


def _record_weights(trainer) -> None:
    """Keep every generation batch's routes and live weights (global view: one process)."""
    original = trainer._weight_generation_batch

    def recording(scored, old_per_token_logps):
        weighted = original(scored, old_per_token_logps)
        mode, group_size = (
            ("train", trainer.num_generations) if trainer.model.training else ("eval", trainer.num_generations_eval)
        )
        trainer._sweep_batches.append(
            (mode, group_size, weighted["scope_route"].clone(), weighted["scope_weight"].clone())
        )
        return weighted

    trainer._weight_generation_batch = recording


def _poison_teacher(trainer) -> None:
    """The teacher's first scored loss token of every batch reads -inf (a token it gives probability 0)."""
    teacher = trainer.teacher
    original = teacher.score

    def score(input_ids, attention_mask, logits_to_keep, rows, batch_size):
        scores = original(input_ids, attention_mask, logits_to_keep, rows, batch_size)
        selected = rows.nonzero().squeeze(1)
        if selected.numel():
            scores = scores.clone()
            scores[selected[0], 0] = float("-inf")
            trainer._sweep_poisoned = True
        return scores

    teacher.score = score


def run(trainer: str, combo: dict, paths: dict, workdir: str, server_url: str | None, datasets) -> str:
    """Run one combination and check its invariants; returns "refused", "stopped" (a poisoned teacher score under
    nonfinite_teacher_scores='error' stopped it, as asked), "passed", or "passed without signal" (no loss token had a
    non-zero advantage, so the parameters were not required to move); raises AssertionError naming what broke."""
    expected = refusal(trainer, combo)
    try:
        first = build(trainer, combo, paths, workdir, server_url, datasets)
    except ValueError as error:
        assert expected is not None, f"refused, but valid: {error}"
        assert re.search(expected, str(error)), f"refused with {str(error)!r}; expected /{expected}/"
        return "refused"
    assert expected is None, f"built, but must be refused with /{expected}/"

    first.add_callback(_Stop())
    before = {n: p.detach().clone() for n, p in first.model.named_parameters() if p.requires_grad}
    try:
        first.train()
    except ValueError as error:
        if (
            trainer == "scope"
            and combo["nonfinite_teacher_scores"] == "error"
            and getattr(first, "_sweep_poisoned", 0)
        ):
            assert "nonfinite_teacher_scores='exclude'" in str(error), str(error)
            return "stopped"
        raise
    if trainer == "scope" and combo["poisoned_teacher_score"] and combo["nonfinite_teacher_scores"] == "error":
        assert not getattr(first, "_sweep_poisoned", False), "a poisoned teacher score did not stop the run"
    assert first.state.global_step == 2
    saved = training_state(first)
    checkpoint = os.path.join(workdir, "checkpoint-2")
    assert os.path.isdir(checkpoint), os.listdir(workdir)
    changed = [n for n, p in saved["parameters"].items() if not torch.equal(before[n], p)]
    if first._sweep_signal:
        assert changed, "no parameter changed in two optimizer steps, although some loss token had an advantage"

    # Resumed without evaluations or saves (the first part checked those): the resume is what is under test.
    second = build(trainer, combo, paths, workdir, server_url, datasets, resumed=True)
    begin = _AtTrainBegin(second)
    second.add_callback(begin)
    second.train(resume_from_checkpoint=checkpoint)
    assert second.state.global_step == 3
    check_resumed(saved, begin.state)

    tokenless = {step for step in (1, 2, 3) if not (first._sweep_tokens + second._sweep_tokens)[step]}
    check_metrics(trainer, second.state.log_history, tokenless)  # the checkpoint's history, then step 3
    if trainer == "scope":
        check_weights(combo, first._sweep_batches + second._sweep_batches)
    return "passed" if first._sweep_signal else "passed without signal"


def check_resumed(saved: dict, resumed: dict) -> None:
    assert resumed["global_step"] == saved["global_step"], (resumed["global_step"], saved["global_step"])
    for name, value in saved["parameters"].items():
        assert torch.equal(resumed["parameters"][name], value), f"resumed parameter {name} differs from the saved one"
    assert resumed["optimizer"].keys() == saved["optimizer"].keys(), "the resumed optimizer state has other entries"
    for key, state in saved["optimizer"].items():
        for field, value in state.items():
            other = resumed["optimizer"][key][field]
            same = torch.equal(other.to(value.device), value) if torch.is_tensor(value) else other == value
            assert same, f"resumed optimizer state {key}/{field} differs from the saved one"
    assert resumed["scheduler"] == saved["scheduler"], (resumed["scheduler"], saved["scheduler"])


def check_metrics(trainer: str, history: list[dict], tokenless: set[int]) -> None:
    """Required metrics present and every defined one finite; at a step without loss tokens (`tokenless`) our
    trainers leave the token means out (undefined) rather than log 0 or None."""
    steps = [
        entry for entry in history if "loss" in entry and "eval_loss" not in entry and "train_runtime" not in entry
    ]
    evals = [entry for entry in history if "eval_loss" in entry]
    assert len(steps) == 3, f"{len(steps)} training log entries for 3 steps"
    assert [entry["step"] for entry in evals] == [1], "one evaluation, after step 1"
    for entry in steps:
        required = REQUIRED_STEP_METRICS[trainer] | (
            REQUIRED_GENERATION_METRICS[trainer] if entry["step"] == 1 else set()
        )
        if entry["step"] in tokenless and trainer != "grpo":  # TRL logs 0 over an empty set
            undefined = UNDEFINED_WITHOUT_TOKENS & entry.keys()
            assert not undefined, f"{sorted(undefined)} logged at step {entry['step']}, which had no loss token"
            required = required - UNDEFINED_WITHOUT_TOKENS
        missing = required - entry.keys()
        assert not missing, f"training metrics missing at step {entry['step']}: {sorted(missing)}"
        assert math.isfinite(entry["loss"]), f"training loss {entry['loss']} at step {entry.get('step')}"
    for entry in evals:
        missing = REQUIRED_EVAL_METRICS[trainer] - entry.keys()
        assert not missing, f"evaluation metrics missing at step {entry['step']}: {sorted(missing)}"
    for entry in steps + evals:
        for key, value in entry.items():
            name = key.removeprefix("eval_")
            if not isinstance(value, (int, float)) or name in MAY_BE_UNDEFINED:
                continue
            assert math.isfinite(value), f"{key} = {value} at step {entry.get('step')}"


def check_weights(combo: dict, batches: list) -> None:
    """SCOPE's live weights: per prompt group and routed subset, mean 1 (sum 1 under "sum"); 0 on excluded rollouts;
    1 for every member of a path whose weights are off, and everywhere without routing."""
    assert batches, "no generation batch was weighted"
    for mode, group_size, path, weight in batches:
        assert (weight[path == EXCLUDED] == 0).all(), f"{mode}: an excluded rollout has weight {weight}"
        for group_path, group_weight in zip(path.view(-1, group_size), weight.view(-1, group_size), strict=True):
            for route in (MLE, OPD):
                members = group_weight[group_path == route]
                if not members.numel():
                    continue
                weighted = combo["use_student_weights"] if route == MLE else combo["use_teacher_weights"]
                if not combo["routing"] or not weighted:  # every member weighs 1
                    assert combo["routing"] or route == OPD, (mode, route)
                    assert torch.equal(members, torch.ones_like(members)), f"{mode}: subset weights {members}"
                    continue
                total = members.sum().item()
                target = 1.0 if combo["weight_normalization"] == "sum" else float(members.numel())
                assert math.isclose(total, target, rel_tol=1e-5), f"{mode}: subset weights {members.tolist()}"
