# /// script
# dependencies = [
#     "scope-trl",
#     "trl>=1.16,<1.17",
#     "peft",
#     "math-verify",
#     "trackio",
# ]
# ///
"""
Train a policy with DGPO: GRPO with DGPO's probability-gradient soft clip in place of the hard clip.

Full fine-tuning, paper recipe (DeepSeek-R1-Distill-Qwen-1.5B, 4 optimizer steps per generation batch), 8 GPUs with
DeepSpeed ZeRO-2:

    accelerate launch --config_file accelerate_configs/zero2.yaml examples/dgpo.py \\
        --config examples/configs/dgpo_r1_distill_qwen_1.5b.yaml

or, equivalently, with the command line of this package:

    scope-trl dgpo --config examples/configs/dgpo_r1_distill_qwen_1.5b.yaml --accelerate_config zero2

LoRA, 8 GPUs with DDP:

    accelerate launch --config_file accelerate_configs/multi_gpu.yaml examples/dgpo.py \\
        --model_name_or_path deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B \\
        --dataset_name zwhe99/DeepMath-103K \\
        --steps_per_generation 4 --dgpo_n 2 --dgpo_m 2 \\
        --use_peft --lora_r 64 --lora_alpha 128 --lora_target_modules all-linear \\
        --learning_rate 1e-5 \\
        --output_dir R1-Distill-Qwen-1.5B-DGPO-LoRA

Every `DGPOConfig` / `GRPOConfig` field is a flag (`--help` lists them); `--config FILE.yaml` reads them from YAML.
DGPO only differs from GRPO with several optimizer steps per generation batch (`steps_per_generation` a multiple of
`gradient_accumulation_steps`, or `num_iterations > 1`).
"""

import argparse
from dataclasses import dataclass

from scope_trl import DGPOConfig
from scope_trl.scripts.common import MathScriptArguments, run_as_script


@dataclass
class DGPOScriptArguments(MathScriptArguments):
    """Script arguments of the DGPO training script (see `MathScriptArguments`)."""


def main(script_args, training_args, model_args):
    from trl import get_peft_config, get_quantization_config

    from scope_trl import DGPOTrainer
    from scope_trl.scripts.common import load_splits, model_init_kwargs, reward_funcs_from_names, train_save_push

    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    train_dataset, eval_dataset = load_splits(script_args, training_args)
    trainer = DGPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs_from_names(script_args.reward_funcs),
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    train_save_push(trainer, script_args, training_args)


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    """The script's parser; `subparsers` must come from a parser whose sub-parsers are `TrlParser`s, as in TRL's CLI."""
    from trl import ModelConfig, TrlParser

    dataclass_types = (DGPOScriptArguments, DGPOConfig, ModelConfig)
    if subparsers is not None:
        return subparsers.add_parser("dgpo", help="Train with DGPO", dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


if __name__ == "__main__":
    run_as_script(make_parser, main, prog="scope-trl dgpo")
