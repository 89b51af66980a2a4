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
Train a student with SCOPE: correctness-routed, perplexity-weighted on-policy distillation from a teacher.

Full fine-tuning, paper recipe (Qwen3-8B teaching Qwen3-1.7B-Base on DeepMath-103K), 8 GPUs with DeepSpeed ZeRO-3
(student and teacher sharded):

    accelerate launch --config_file accelerate_configs/zero3.yaml examples/scope.py \\
        --config examples/configs/scope_qwen3_1.7b_deepmath.yaml

or, equivalently, with the command line of this package:

    scope-trl scope --config examples/configs/scope_qwen3_1.7b_deepmath.yaml --accelerate_config zero3

LoRA on the student (the teacher stays frozen and whole), 8 GPUs with DDP:

    accelerate launch --config_file accelerate_configs/multi_gpu.yaml examples/scope.py \\
        --model_name_or_path Qwen/Qwen3-1.7B-Base \\
        --teacher_model_name_or_path Qwen/Qwen3-8B \\
        --dataset_name zwhe99/DeepMath-103K \\
        --use_peft --lora_r 64 --lora_alpha 128 --lora_target_modules all-linear \\
        --learning_rate 1e-5 \\
        --output_dir Qwen3-1.7B-SCOPE-LoRA

Every `SCOPEConfig` / `GRPOConfig` field is a flag (`--help` lists them); `--config FILE.yaml` reads them from YAML.
"""

import argparse
from dataclasses import dataclass

from scope_trl import SCOPEConfig
from scope_trl.scripts.common import MathScriptArguments, run_as_script


@dataclass
class SCOPEScriptArguments(MathScriptArguments):
    """Script arguments of the SCOPE training script (see `MathScriptArguments`)."""


def main(script_args, training_args, model_args):
    from trl import get_peft_config, get_quantization_config

    from scope_trl import SCOPETrainer
    from scope_trl.scripts.common import load_splits, model_init_kwargs, reward_funcs_from_names, train_save_push

    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    train_dataset, eval_dataset = load_splits(script_args, training_args)
    trainer = SCOPETrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs_from_names(script_args.reward_funcs),
        args=training_args,  # carries the teacher: --teacher_model_name_or_path
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    train_save_push(trainer, script_args, training_args)


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    """The script's parser; `subparsers` must come from a parser whose sub-parsers are `TrlParser`s, as in TRL's CLI."""
    from trl import ModelConfig, TrlParser

    dataclass_types = (SCOPEScriptArguments, SCOPEConfig, ModelConfig)
    if subparsers is not None:
        return subparsers.add_parser("scope", help="Train with SCOPE", dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


if __name__ == "__main__":
    run_as_script(make_parser, main, prog="scope-trl scope")
