"""Supervised fine-tuning of the miniatures' teachers and students: a plain AdamW loop on completion tokens.

A plain loop rather than TRL's `SFTTrainer`: for models of 0.1M parameters it is several times cheaper and its few
knobs (steps, batch, peak learning rate, warm-up then cosine decay, gradient clipping at 1) are all there is.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable


def sft_batch(tokenizer, examples: list[tuple[str, str]]):
    """Right-padded prompt + completion + EOS ids, labels on the completion and EOS only (-100 elsewhere).

    Prompt and completion are tokenised separately, as in RL, where the model continues the prompt's own ids.
    """
    import torch

    rows, labels = [], []
    for prompt, completion in examples:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt_ids + completion_ids)
        labels.append([-100] * len(prompt_ids) + completion_ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    label_ids = torch.tensor([label + [-100] * (width - len(label)) for label in labels])
    return input_ids, attention_mask, label_ids


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def supervised_fine_tune(
    model,
    tokenizer,
    draw_examples: Callable[[random.Random, int], list[tuple[str, str]]],
    steps: int,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    seed: int = 0,
    name: str = "model",
    print_fn=print,
):
    """Train `model` for `steps` steps on fresh batches from `draw_examples(rng, batch_size)`; returns the model."""
    import torch

    rng = random.Random(f"sft-{name}-{seed}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 20)  # Adam's first steps at full rate knock a tiny model off course
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, steps, warmup))
    model.train()
    start, report_every = time.time(), max(1, steps // 5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout-free models, but keep any stochastic layer reproducible
        for step in range(1, steps + 1):
            input_ids, attention_mask, labels = sft_batch(tokenizer, draw_examples(rng, batch_size))
            loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if step % report_every == 0 or step == steps:
                print_fn(f"  {name} SFT step {step:5d}/{steps}  loss {loss.item():.4f}  ({time.time() - start:.0f}s)")
    model.eval()
    return model
