"""A tiny DGPO run for `accelerate launch`, used by tests/test_distributed.py.

Trains `DGPOTrainer` for a few optimizer steps on the built-in arithmetic task with the dense
`digit_fraction_reward`, under whatever distribution the accelerate config selects (single CPU process, MULTI_CPU
over gloo, DeepSpeed ZeRO-2 / ZeRO-3 on DeepSpeed's CPU accelerator), then writes a JSON report on the main process:

- `world_size`, `distributed_type`, `zero_stage` (None outside DeepSpeed), `use_peft`,
  `gradient_accumulation_steps`, `steps_per_generation`, `global_step`;
- `params_changed`, `num_params_changed`, `num_params_compared`, `max_abs_param_diff`: the trainable parameters after
  training against a snapshot taken before `train()` (full tensors: under ZeRO-3 every parameter is gathered with
  `deepspeed.zero.GatheredParameters`, on every rank, since the gather is a collective);
- `num_frozen_params`, `num_frozen_params_changed`: the same comparison for the frozen parameters (the base model
  under `--use_peft`; none otherwise), which must not move;
- `ranks_in_sync`, `param_checksums`: one checksum of the (gathered) trainable parameters per rank; every rank must
  hold the same model after training (DDP keeps replicas equal, ZeRO gathers the same full tensors);
- `log_history`: `trainer.state.log_history`;
- with `--nonfinite_loss_at_step N`: `nonfinite_error` (the `NonFiniteUpdateError` message, None if nothing was
  raised), `params_finite`, and `params_equal_to_last_completed_step` (the trainable parameters after the error
  against those at the end of the last completed optimizer step).

Example:

    accelerate launch --config_file accelerate_configs/cpu_multi.yaml tests/scripts/run_dgpo_tiny.py \
        --model /tmp/toy/student --output_dir /tmp/out --result /tmp/out/result.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import warnings


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="path of the student checkpoint (save_pretrained directory)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--result", required=True, help="where the main process writes the JSON report")
    parser.add_argument("--use_peft", action="store_true", help="train a LoRA adapter (r=4, alpha=8, q_proj/v_proj)")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--per_device_train_batch_size", type=int, default=2)
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument(
        "--steps_per_generation", type=int, default=None, help="defaults to 4 x gradient_accumulation_steps"
    )
    parser.add_argument("--max_steps", type=int, default=2)
    parser.add_argument("--num_prompts", type=int, default=32, help="size of the toy arithmetic dataset")
    parser.add_argument(
        "--gradient_checkpointing",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="off by default: it only costs time on models this small",
    )
    parser.add_argument(
        "--nonfinite_loss_at_step",
        type=int,
        default=None,
        help="make the loss NaN at this optimizer step (1-based) on every process; the report records the error",
    )
    args = parser.parse_args(argv)
    if args.steps_per_generation is None:
        args.steps_per_generation = 4 * args.gradient_accumulation_steps
    return args


def _zero3_params(params):
    """Context that gathers ZeRO-3-partitioned parameters into full tensors (a no-op for ordinary parameters).

    Every rank must enter it with the same parameters in the same order: the gather is a collective.
    """
    params = [p for p in params if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def snapshot(model, trainable: bool) -> dict:
    """Full fp32 CPU copies of the trainable (or of the frozen) parameters, by name (gathered under ZeRO-3)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad == trainable]
    with _zero3_params([p for _, p in named]):
        return {name: p.detach().float().cpu().clone() for name, p in named}


def max_abs_diffs(before: dict, after: dict) -> dict:
    if set(before) != set(after):
        raise RuntimeError(f"The parameter names changed during training: {sorted(set(before) ^ set(after))}")
    return {name: (after[name] - before[name]).abs().max().item() for name in before}


def checksum(tensors: dict) -> float:
    """A float64 fingerprint of a parameter snapshot (sum and absolute sum), equal across ranks in sync."""
    return math.fsum(t.double().sum().item() + t.double().abs().sum().item() for t in tensors.values())


def in_sync(sums: list[float]) -> bool:
    return all(math.isclose(c, sums[0], rel_tol=1e-9, abs_tol=1e-9) for c in sums)


def write_report(accelerator, report: dict | None, path: str) -> None:
    """Rank 0 writes `report` as JSON; then every rank ends the run (destroys the process group)."""
    if accelerator.is_main_process:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(report, f, indent=2, default=str)
    accelerator.wait_for_everyone()
    accelerator.end_training()


def exit_without_finalization() -> None:
    """Leave without interpreter finalization. Once (1 launch in ~40, the very first DeepSpeed one) rank 0 aborted
    after a successful run, with "terminate called without an active exception" (SIGABRT) from native teardown code,
    which turned a finished run into a failed launch. Everything has been written and the process group destroyed by
    then, so skipping the C++ static destructors and atexit hooks loses nothing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def poison_loss(trainer, step: int) -> None:
    """Make the per-token loss NaN at optimizer step `step` (1-based), on every process."""
    original = trainer._per_token_policy_loss

    def loss(batch, inputs):
        value = original(batch, inputs)
        return value * float("nan") if trainer.state.global_step + 1 == step else value

    trainer._per_token_policy_loss = loss


def zero_stage_of(trainer):
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return None if plugin is None else int(plugin.zero_stage)


def tiny_cpu_config(args) -> dict:
    """The config fields both tiny scripts share: CPU, the toy batch layout from the command line, 8-token
    completions, a large learning rate so that 2 steps move the weights, one log entry per step, no saves."""
    return {
        "output_dir": args.output_dir,
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "num_generations": args.num_generations,
        "steps_per_generation": args.steps_per_generation,
        "max_completion_length": 8,
        "max_steps": args.max_steps,
        "learning_rate": 5e-2,
        "logging_steps": 1,
        "save_strategy": "no",
        "dataloader_num_workers": 0,
    }


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def main(argv=None):
    args = parse_args(argv)

    import torch
    from transformers import TrainerCallback

    from scope_trl import DGPOConfig, DGPOTrainer
    from scope_trl.apps.toy import digit_fraction_reward, make_arithmetic_dataset
    from scope_trl.guards import NonFiniteUpdateError

    config = DGPOConfig(
        **tiny_cpu_config(args),
        seed=0,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    peft_config = lora_config() if args.use_peft else None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DGPOTrainer(
            model=args.model,
            reward_funcs=digit_fraction_reward,
            args=config,
            train_dataset=make_arithmetic_dataset(args.num_prompts, seed=0),
            peft_config=peft_config,
        )

    # Before train(): with zero3_init_flag false, DeepSpeed has not partitioned anything yet, but the helper gathers
    # whatever is partitioned, so it is correct either way.
    before, frozen_before = snapshot(trainer.model, trainable=True), snapshot(trainer.model, trainable=False)
    nonfinite_error, last_step = None, {}
    if args.nonfinite_loss_at_step is not None:
        poison_loss(trainer, args.nonfinite_loss_at_step)
        trainer.add_callback(
            type(
                "KeepLastStep",
                (TrainerCallback,),
                {
                    "on_step_end": lambda self, a, state, control, **kw: last_step.update(
                        snapshot(trainer.model, True)
                    ),
                },
            )()
        )
    try:
        trainer.train()
    except NonFiniteUpdateError as error:
        if args.nonfinite_loss_at_step is None:
            raise
        nonfinite_error = str(error)
    after, frozen_after = snapshot(trainer.model, trainable=True), snapshot(trainer.model, trainable=False)

    accelerator = trainer.accelerator
    diffs = max_abs_diffs(before, after)
    frozen_diffs = max_abs_diffs(frozen_before, frozen_after)
    checksums = accelerator.gather(torch.tensor([checksum(after)], dtype=torch.float64)).tolist()

    report = None
    if accelerator.is_main_process:
        report = {
            "world_size": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "zero_stage": zero_stage_of(trainer),
            "use_peft": args.use_peft,
            "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
            "steps_per_generation": trainer.args.steps_per_generation,
            "global_step": trainer.state.global_step,
            "params_changed": any(d > 0 for d in diffs.values()),
            "num_params_changed": sum(d > 0 for d in diffs.values()),
            "num_params_compared": len(diffs),
            "max_abs_param_diff": max(diffs.values(), default=0.0),
            "num_frozen_params": len(frozen_diffs),
            "num_frozen_params_changed": sum(d > 0 for d in frozen_diffs.values()),
            "param_checksums": checksums,
            "ranks_in_sync": in_sync(checksums),
            "log_history": trainer.state.log_history,
            "nonfinite_error": nonfinite_error,
            "params_finite": all(bool(torch.isfinite(t).all()) for t in after.values()),
            "params_equal_to_last_completed_step": bool(last_step)
            and all(torch.equal(last_step[name], after[name]) for name in after),
        }
    write_report(accelerator, report, args.result)


if __name__ == "__main__":
    main()
    exit_without_finalization()
