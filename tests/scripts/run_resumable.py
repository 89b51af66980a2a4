"""A small SCOPE or DGPO run that saves checkpoints, can hang after one (to be killed) and can resume from the last.

Used by tests/test_kill_resume.py under `accelerate launch`:

- `--hang_after_step N`: after the checkpoint of step N is on disk, write `<output_dir>/hanging-N` and sleep, so the
  test can SIGKILL the launcher's process group at a known point, as a crash or a preempted node would;
- `--resume`: `trainer.train(resume_from_checkpoint=True)` (the last checkpoint in `output_dir`);
- at the end the main process writes `--result`: the per-step losses (the log history, restored from the checkpoint
  when resuming), the steps this process ran, and the final trainable parameters' checksum (the parameters
  themselves go to `<output_dir>/final_params.pt`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--trainer", choices=["scope", "dgpo"], required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--max_steps", type=int, default=6)
    parser.add_argument("--hang_after_step", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from transformers import TrainerCallback

    from scope_trl import DGPOConfig, DGPOTrainer, SCOPEConfig, SCOPETrainer
    from scope_trl.apps.toy import contains_digit_reward, make_arithmetic_dataset

    class HangAfterCheckpoint(TrainerCallback):
        def on_save(self, train_args, state, control, **kwargs):
            if state.global_step == args.hang_after_step and state.is_world_process_zero:
                with open(os.path.join(args.output_dir, f"hanging-{state.global_step}"), "w") as f:
                    f.write("checkpoint written\n")
            if state.global_step == args.hang_after_step:
                time.sleep(3600)  # every process stops here; the test kills them

    common = {
        "output_dir": args.output_dir,
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "steps_per_generation": 2,  # generation batches end on even steps, where the checkpoints are
        "max_completion_length": 8,
        "max_steps": args.max_steps,
        "learning_rate": 5e-2,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 2,
        "seed": 0,
        "dataloader_num_workers": 0,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = make_arithmetic_dataset(64, seed=0)
        if args.trainer == "scope":
            trainer = SCOPETrainer(
                args.model,
                contains_digit_reward,
                args=SCOPEConfig(**common),
                train_dataset=dataset,
                teacher_model=args.teacher,
            )
        else:
            trainer = DGPOTrainer(args.model, contains_digit_reward, args=DGPOConfig(**common), train_dataset=dataset)
    steps_run = []

    class RecordSteps(TrainerCallback):
        def on_step_end(self, train_args, state, control, **kwargs):
            steps_run.append(state.global_step)

    trainer.add_callback(HangAfterCheckpoint())
    trainer.add_callback(RecordSteps())
    trainer.train(resume_from_checkpoint=True if args.resume else None)

    params = [p.detach().double() for p in trainer.model.parameters() if p.requires_grad]
    checksum = math.fsum(p.sum().item() + p.abs().sum().item() for p in params)
    if trainer.accelerator.is_main_process:
        torch.save([p.float() for p in params], os.path.join(args.output_dir, "final_params.pt"))
        losses = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e and "step" in e}
        with open(args.result, "w") as f:
            report = {"losses": losses, "checksum": checksum, "global_step": trainer.state.global_step}
            json.dump(report | {"steps_run": steps_run}, f)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # see run_dgpo_tiny.py: skip native teardown, everything is written
