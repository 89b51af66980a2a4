"""DGPO quick start: the README's one-line swap from GRPOTrainer, as a runnable script.

Train a Hub model on DeepMath-103K with TRL's math accuracy reward (GPU):

    accelerate launch examples/dgpo_quickstart.py --model Qwen/Qwen3-0.6B --output-dir Qwen3-0.6B-DGPO

Or run it offline on CPU with the built-in tiny model and arithmetic task:

    python examples/dgpo_quickstart.py --toy --max-steps 8
"""

import argparse
import tempfile

from scope_trl import DGPOConfig, DGPOTrainer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Qwen/Qwen3-0.6B", help="Hub name or local path of the policy")
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--toy", action="store_true", help="offline: tiny local model and built-in arithmetic task")
    args = parser.parse_args()

    if args.toy:
        from scope_trl.apps.toy import build_toy_testbed, digit_fraction_reward, make_arithmetic_dataset

        model = build_toy_testbed(tempfile.mkdtemp(prefix="dgpo-toy-"))["student"]
        dataset, reward_funcs = make_arithmetic_dataset(64), digit_fraction_reward
        hardware = {
            "use_cpu": True,
            "bf16": False,
            "per_device_train_batch_size": 8,
            "num_generations": 8,
            "max_completion_length": 12,
            "learning_rate": 3e-2,
            "logging_steps": 1,
        }
    else:
        from scope_trl.data import load_math_dataset
        from scope_trl.rewards import accuracy_reward

        model, reward_funcs = args.model, accuracy_reward
        dataset = load_math_dataset("zwhe99/DeepMath-103K")  # question -> prompt, final answer -> solution
        hardware = {}

    config = DGPOConfig(
        output_dir=args.output_dir or tempfile.mkdtemp(prefix="dgpo-"),
        max_steps=args.max_steps,
        steps_per_generation=4,  # 4 optimizer steps per generation batch: DGPO acts only off-policy
        dgpo_n=1.0,
        dgpo_m=2.0,
        report_to="none",
        save_strategy="no",
        **hardware,
    )
    trainer = DGPOTrainer(model=model, reward_funcs=reward_funcs, args=config, train_dataset=dataset)
    trainer.train()
    trainer.save_model(config.output_dir)
    trainer.accelerator.end_training()  # finish the trackers (what `trainer.end()` does on transformers >= 5.18)


if __name__ == "__main__":
    main()
