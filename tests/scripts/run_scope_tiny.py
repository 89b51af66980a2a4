"""A tiny SCOPE run for `accelerate launch`, used by tests/test_distributed_scope.py.

Trains `SCOPETrainer` (tiny student, tiny teacher of the offline test bed) for a few optimizer steps on the built-in
arithmetic task with a binary verifier, under whatever distribution the accelerate config selects (MULTI_CPU over
gloo, DeepSpeed ZeRO-2 / ZeRO-3 on DeepSpeed's CPU accelerator), and records what the distributed code paths did.

By default every generation batch holds `per_device_train_batch_size` rollouts per process (`steps_per_generation=1`),
so with 2 rows per process and `num_generations=4` each prompt group straddles two processes.

Every process writes `<records_dir>/rank<r>.json` with one record per generation batch (in order):

- `rewards`: the gathered verifier rewards (`trainer._last_rewards_per_func`, global, one row per function);
- `scope_weight`, `scope_route`: the local rows of the generation batch returned by `_generate_and_score_completions`;
- `prompt_ids`/`prompt_mask`/`completion_ids`/`completion_mask`/`prompts`: the local rows (`prompts` as text);
- `dual_path_weights`: the inputs (global, gathered) and the output of the trainer's `dual_path_weights` call;
- `local_student_seq_logps`: mean behaviour (π_old) log-prob of each local row, as `_weight_generation_batch` got it
  (here, with one on-policy micro-batch per generation batch, from the loss forward: `weighted_in_loss`);
  `local_teacher_seq_logps`: the same for the teacher log-probs returned by `_score_with_teacher`;
- `score_rows`: local rows `_score_with_teacher` was asked for; `teacher_calls`: one entry per teacher forward
  (forward pre-hook on the teacher's module, inside its DeepSpeed engine if any) with the `input_ids` rows it got.

The main process also writes the report `--result`: `world_size`, `distributed_type`, `zero_stage`, `use_peft`,
`global_step`, the student comparison of tests/scripts/run_dgpo_tiny.py (`params_changed`, `num_params_changed`,
`num_params_compared`, `num_frozen_params*`, `ranks_in_sync`; gathered under ZeRO-3), the same for the teacher
(`num_teacher_params`, `num_teacher_params_changed`, `teacher_in_sync`), the type of `trainer.teacher_model`, and
`log_history`.

Verifiers (`--verifier`): `contains_digit` (`scope_trl.apps.toy.contains_digit_reward`, mixed groups) or `rank0_correct`
(every rollout of process 0 is correct, the others use `contains_digit`: process 0 has nothing to distil, which
exercises the ZeRO-3 padding of the teacher scoring).

Example:

    accelerate launch --config_file accelerate_configs/zero3_cpu.yaml tests/scripts/run_scope_tiny.py \
        --model /tmp/toy/student --teacher /tmp/toy/teacher --output_dir /tmp/out --result /tmp/out/result.json \
        --records_dir /tmp/out/records
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="path of the student checkpoint")
    parser.add_argument("--teacher", required=True, help="path of the teacher checkpoint")
    parser.add_argument(
        "--teacher_in_config",
        action="store_true",
        help="pass the teacher as SCOPEConfig(teacher_model_name_or_path=...) instead of SCOPETrainer(teacher_model=...)",
    )
    parser.add_argument(
        "--teacher_server_url",
        default=None,
        help="score with the teacher on this (fake) vLLM server (teacher_model_server_url); --teacher names it",
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--result", required=True, help="where the main process writes the JSON report")
    parser.add_argument("--records_dir", required=True, help="where every process writes rank<r>.json")
    parser.add_argument("--verifier", choices=("contains_digit", "rank0_correct"), default="contains_digit")
    parser.add_argument("--use_peft", action="store_true", help="train a LoRA adapter (r=4, alpha=8, q_proj/v_proj)")
    parser.add_argument("--per_device_train_batch_size", type=int, default=2)
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument("--steps_per_generation", type=int, default=1)
    parser.add_argument("--max_steps", type=int, default=2)
    parser.add_argument("--num_prompts", type=int, default=32, help="size of the toy arithmetic dataset")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def rank0_correct_reward(completions, **kwargs):
    """Every rollout of process 0 is correct; the other processes use `contains_digit_reward`."""
    from accelerate import PartialState

    from scope_trl.apps.toy import contains_digit_reward

    if PartialState().process_index == 0:
        return [1.0] * len(completions)
    return contains_digit_reward(completions, **kwargs)


def seq_means(per_token, mask):
    mask = mask.float()
    return ((per_token.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)).tolist()


def install_recorders(trainer, records):
    """Wrap the trainer (and `scope_trl.scope_trainer.dual_path_weights`) to fill `records`, one per generation batch."""
    import torch

    import scope_trl.weights as weights_module

    current = {}  # what the generation batch in progress has captured so far

    def count_teacher_forward(module, args, kwargs):
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        current.setdefault("teacher_calls", []).append(input_ids.tolist())

    if trainer.teacher_model is not None:  # None when a server scores
        teacher_module = getattr(trainer.teacher_model, "module", trainer.teacher_model)  # inside a DeepSpeed engine
        teacher_module.register_forward_pre_hook(count_teacher_forward, with_kwargs=True)

    original_weights = weights_module.dual_path_weights  # as `path_weights` calls it

    def recording_weights(student_seq_logps, teacher_seq_logps, correct, group_size, **kwargs):
        weights = original_weights(student_seq_logps, teacher_seq_logps, correct, group_size, **kwargs)
        current["dual_path_weights"] = {
            "student_seq_logps": student_seq_logps.tolist(),
            "teacher_seq_logps": teacher_seq_logps.tolist(),
            "correct": correct.tolist(),
            "group_size": group_size,
            "kwargs": {key: value.tolist() if torch.is_tensor(value) else value for key, value in kwargs.items()},
            "output": weights.tolist(),
        }
        return weights

    weights_module.dual_path_weights = recording_weights

    original_score = trainer._score_with_teacher

    def recording_score(input_ids, attention_mask, logits_to_keep, rows, batch_size):
        teacher_logps = original_score(input_ids, attention_mask, logits_to_keep, rows, batch_size)
        current["score_rows"] = rows.nonzero().squeeze(1).tolist()
        current["teacher_logps"] = teacher_logps
        return teacher_logps

    trainer._score_with_teacher = recording_score

    # The weights need π_old: during scoring (a separate forward, or TRL's old log-probs), or in the loss forward when
    # π_old is that forward's own (one on-policy micro-batch per generation batch, as here). A record is complete
    # once `_weight_generation_batch` has run, whichever comes first.
    pending = {}

    def weighted_fields(scored, old_per_token_logps, weighted):
        return {
            "scope_weight": weighted["scope_weight"].tolist(),
            "scope_route": weighted["scope_route"].tolist(),
            "local_student_seq_logps": seq_means(torch.where(scored.mask > 0, old_per_token_logps, 0.0), scored.mask),
            "dual_path_weights": current.get("dual_path_weights"),
        }

    original_weight = trainer._weight_generation_batch

    def recording_weight(scored, old_per_token_logps):
        weighted = original_weight(scored, old_per_token_logps)
        fields = weighted_fields(scored, old_per_token_logps, weighted)
        if "record" in pending:  # weighted in the loss forward: the generation batch's record was waiting
            record = pending.pop("record")
            record.update(fields)
            records.append(record)
        else:
            pending["fields"] = fields
        return weighted

    trainer._weight_generation_batch = recording_weight

    original_generate = trainer._generate_and_score_completions

    def recording_generate(inputs):
        current.clear()
        out = original_generate(inputs)
        mask = out["completion_mask"]
        rewards = trainer._last_rewards_per_func
        record = {
            "training": trainer.model.training,
            "prompts": trainer.processing_class.batch_decode(out["prompt_ids"], skip_special_tokens=True),
            "prompt_ids": out["prompt_ids"].tolist(),
            "prompt_mask": out["prompt_mask"].tolist(),
            "completion_ids": out["completion_ids"].tolist(),
            "completion_mask": mask.tolist(),
            "rewards": [[None if math.isnan(v) else v for v in row] for row in rewards.tolist()],
            "local_teacher_seq_logps": seq_means(current["teacher_logps"], mask),
            "score_rows": current["score_rows"],
            "teacher_calls": current.get("teacher_calls", []),
            "weighted_in_loss": "scope_scored/position" in out,
        }
        if "fields" in pending:  # weighted while scoring
            record.update(pending.pop("fields"))
            records.append(record)
        else:
            pending["record"] = record
        return out

    trainer._generate_and_score_completions = recording_generate


def main(argv=None):
    args = parse_args(argv)

    import torch

    # The parameter helpers of the DGPO script (this directory is on sys.path when the script runs).
    from run_dgpo_tiny import (
        checksum,
        in_sync,
        lora_config,
        max_abs_diffs,
        snapshot,
        tiny_cpu_config,
        write_report,
        zero_stage_of,
    )

    from scope_trl import SCOPEConfig, SCOPETrainer
    from scope_trl.apps.toy import contains_digit_reward, make_arithmetic_dataset

    config = SCOPEConfig(
        **tiny_cpu_config(args),
        seed=args.seed,
        teacher_model_name_or_path=args.teacher if args.teacher_in_config or args.teacher_server_url else None,
        teacher_model_server_url=args.teacher_server_url,
    )
    peft_config = lora_config() if args.use_peft else None
    verifier = contains_digit_reward if args.verifier == "contains_digit" else rank0_correct_reward

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SCOPETrainer(
            model=args.model,
            reward_funcs=verifier,
            args=config,
            train_dataset=make_arithmetic_dataset(args.num_prompts, seed=0),
            peft_config=peft_config,
            teacher_model=None if args.teacher_in_config or args.teacher_server_url else args.teacher,
        )
    records = []
    install_recorders(trainer, records)

    # A served teacher has no weights here: a frozen stand-in keeps the report's teacher fields well defined. It is
    # zeroed, not randomly initialised, so that it is the same on every process (`teacher_in_sync`).
    served = trainer.teacher_model is None
    if served:
        teacher = torch.nn.Linear(1, 1).requires_grad_(False)
        for parameter in teacher.parameters():
            parameter.zero_()
    else:
        teacher = trainer.accelerator.unwrap_model(trainer.teacher_model)
    teacher_before = snapshot(teacher, trainable=False)
    before, frozen_before = snapshot(trainer.model, trainable=True), snapshot(trainer.model, trainable=False)
    trainer.train()
    after, frozen_after = snapshot(trainer.model, trainable=True), snapshot(trainer.model, trainable=False)
    teacher_after = snapshot(teacher, trainable=False)

    accelerator = trainer.accelerator
    rank = accelerator.process_index
    os.makedirs(args.records_dir, exist_ok=True)
    with open(os.path.join(args.records_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "world_size": accelerator.num_processes, "records": records}, f)

    diffs = max_abs_diffs(before, after)
    frozen_diffs = max_abs_diffs(frozen_before, frozen_after)
    teacher_diffs = max_abs_diffs(teacher_before, teacher_after)

    checksums = accelerator.gather(torch.tensor([checksum(after), checksum(teacher_after)], dtype=torch.float64))
    student_sums, teacher_sums = checksums.view(-1, 2).T.tolist()

    report = None
    if accelerator.is_main_process:
        report = {
            "world_size": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "zero_stage": zero_stage_of(trainer),
            "use_peft": args.use_peft,
            "steps_per_generation": trainer.args.steps_per_generation,
            "global_step": trainer.state.global_step,
            "teacher_wrapper": type(trainer.teacher_model).__name__,
            "params_changed": any(d > 0 for d in diffs.values()),
            "num_params_changed": sum(d > 0 for d in diffs.values()),
            "num_params_compared": len(diffs),
            "max_abs_param_diff": max(diffs.values(), default=0.0),
            "num_frozen_params": len(frozen_diffs),
            "num_frozen_params_changed": sum(d > 0 for d in frozen_diffs.values()),
            "num_teacher_params": len(teacher_diffs),
            "num_teacher_params_changed": sum(d > 0 for d in teacher_diffs.values()),
            "num_trainable_teacher_params": sum(p.requires_grad for p in teacher.parameters()),
            "param_checksums": student_sums,
            "ranks_in_sync": in_sync(student_sums),
            "teacher_checksums": teacher_sums,
            "teacher_in_sync": in_sync(teacher_sums),
            "log_history": trainer.state.log_history,
        }
    write_report(accelerator, report, args.result)


if __name__ == "__main__":
    from run_dgpo_tiny import exit_without_finalization

    main()
    exit_without_finalization()
