"""Offline test bed: a tiny tokenizer, tiny Qwen3 students and teachers, and a built-in arithmetic task.

Nothing here touches the network. Every artefact is written with `save_pretrained`, so it loads back through
`AutoModelForCausalLM` / `AutoTokenizer` exactly like a Hub checkpoint; the trainers therefore exercise their real
`from_pretrained` code paths on local directories.

Typical use (this is what the test fixtures and the demo do):

```python
from scope_trl.apps.toy import build_toy_testbed, make_arithmetic_dataset

paths = build_toy_testbed("/tmp/toy")              # {"tokenizer": ..., "student": ..., "teacher": ...}
dataset = make_arithmetic_dataset(64, seed=0)      # columns: prompt (conversational), solution
```
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path


# ChatML, as used by Qwen models: the student and teacher share it, so the teacher scores the student's exact ids.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|pad|>"
BOXED_INSTRUCTION = "Put your final answer within \\boxed{}."

# Sizes of the built-in models. The student is deliberately weaker than the teacher.
STUDENT_SIZE = {"hidden_size": 16, "num_hidden_layers": 2}
TEACHER_SIZE = {"hidden_size": 32, "num_hidden_layers": 2}
# vLLM's CPU attention accepts only some head sizes (head_dim=16 is refused with "Unsupported CPU attention
# configuration"; 64 is accepted), so the models that vLLM serves or generates with use head_dim = 64.
VLLM_STUDENT_SIZE = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
VLLM_TEACHER_SIZE = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4}


# --------------------------------------------------------------------------------------------------------------------
# The built-in task: integer arithmetic answered in \boxed{}
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArithmeticProblem:
    question: str
    answer: str


def make_arithmetic_problems(
    num_problems: int, seed: int = 0, max_operand: int = 20, operations: str = "+-"
) -> list[ArithmeticProblem]:
    """Draw `num_problems` problems `a op b` with operands in [0, max_operand]; deterministic for a given seed."""
    if num_problems < 0:
        raise ValueError(f"num_problems must be >= 0, got {num_problems}.")
    if not operations or any(op not in "+-*" for op in operations):
        raise ValueError(f"operations must be a non-empty string over '+-*', got {operations!r}.")
    rng = random.Random(seed)
    problems = []
    for _ in range(num_problems):
        a, b, op = rng.randint(0, max_operand), rng.randint(0, max_operand), rng.choice(operations)
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        problems.append(ArithmeticProblem(question=f"What is {a} {op} {b}?", answer=str(value)))
    return problems


def make_arithmetic_dataset(
    num_problems: int,
    seed: int = 0,
    max_operand: int = 20,
    operations: str = "+-",
    conversational: bool = True,
    instruction: str | None = BOXED_INSTRUCTION,
):
    """A `datasets.Dataset` in TRL's prompt-only format plus a `solution` column.

    With `conversational=True` the prompt is a list of chat messages (the chat template is applied by TRL); otherwise it
    is a plain string, which keeps generation short and cheap on CPU.
    """
    from datasets import Dataset

    problems = make_arithmetic_problems(num_problems, seed=seed, max_operand=max_operand, operations=operations)
    texts = [p.question if not instruction else f"{p.question} {instruction}" for p in problems]
    prompts = [[{"role": "user", "content": t}] for t in texts] if conversational else texts
    return Dataset.from_dict({"prompt": prompts, "solution": [p.answer for p in problems]})


_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def extract_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (without nested braces) in `text`, stripped; None if there is none."""
    matches = _BOXED.findall(text)
    return matches[-1].strip() if matches else None


def _completion_text(completion) -> str:
    # TRL passes a list of messages for conversational prompts and a plain string otherwise.
    if isinstance(completion, list):
        return "".join(message.get("content", "") for message in completion)
    return completion


def boxed_answer_reward(completions, solution, **kwargs) -> list[float]:
    """1.0 when the last `\\boxed{}` of the completion equals the reference answer exactly, else 0.0."""
    return [float(extract_boxed(_completion_text(c)) == str(s).strip()) for c, s in zip(completions, solution)]


def contains_digit_reward(completions, **kwargs) -> list[float]:
    """1.0 when the completion contains a digit, else 0.0: a binary stand-in verifier that untrained models satisfy
    about half of the time, so SCOPE's routing sees mixed groups (both paths) from the first step."""
    return [float(any(ch.isdigit() for ch in _completion_text(c))) for c in completions]


def digit_fraction_reward(completions, **kwargs) -> list[float]:
    """The share of the completion's characters that are digits: a dense, easily learnt shaping signal.

    Untrained tiny models almost never produce a correct answer, so a binary reward has no variance within a group and
    GRPO-style methods receive no gradient. This reward always varies, which makes it the right signal for smoke tests
    and for the short demo run.
    """
    rewards = []
    for completion in completions:
        text = _completion_text(completion)
        rewards.append(sum(ch.isdigit() for ch in text) / max(len(text), 1))
    return rewards


# --------------------------------------------------------------------------------------------------------------------
# Tokenizer and models
# --------------------------------------------------------------------------------------------------------------------


def _tokenizer_corpus() -> list[str]:
    problems = make_arithmetic_problems(400, seed=1234, max_operand=99, operations="+-*")
    corpus = [f"{p.question} {BOXED_INSTRUCTION} The answer is \\boxed{{{p.answer}}}." for p in problems]
    corpus += [
        "user assistant system",
        "Hello world, solve the problem step by step.",
        "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) { } \\boxed",
    ] * 20
    return corpus


def build_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer with the ChatML template, `<|im_end|>` as EOS, `<|pad|>` as pad, left padding.

    BPE training is deterministic, so every call yields byte-identical tokenizers.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=None,
        unk_token=None,
        padding_side="left",
        truncation_side="left",
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    hf_tokenizer.chat_template = CHAT_TEMPLATE
    return hf_tokenizer


def build_tiny_model(
    tokenizer,
    hidden_size: int = 16,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    seed: int = 0,
    max_position_embeddings: int = 512,
    vocab_size: int | None = None,
):
    """A randomly initialised Qwen3 causal LM sized for CPU tests.

    `vocab_size` may exceed `len(tokenizer)` to mimic checkpoints whose embedding matrix is padded (as in the Qwen2.5
    family); the extra rows are never produced by the tokenizer.
    """
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    if hidden_size % num_attention_heads:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})."
        )
    vocab_size = vocab_size or len(tokenizer)
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size ({vocab_size}) must be >= the tokenizer's size ({len(tokenizer)}).")
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=hidden_size // num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # The seed must govern the initial weights; fork the RNG so callers' random state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=True
    )
    return model


def save_tiny_model(out_dir: str | os.PathLike, tokenizer, **model_kwargs) -> str:
    """Build a tiny model with `build_tiny_model` and save it with its tokenizer to `out_dir`; returns the path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(tokenizer, **model_kwargs)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return str(out_dir)


def build_toy_testbed(root: str | os.PathLike, vllm_compatible: bool = False) -> dict[str, str]:
    """Build the shared tokenizer, a student (hidden 16) and a larger teacher (hidden 32) under `root`.

    With `vllm_compatible=True` the models have the head size vLLM's CPU backend accepts (64): a student of hidden 128
    and a teacher of hidden 256, still tiny. Returns a mapping with the paths `tokenizer`, `student` and `teacher`.
    Building takes a few seconds on CPU.
    """
    root = Path(root)
    tokenizer = build_tokenizer()
    tokenizer_dir = root / "tokenizer"
    tokenizer.save_pretrained(tokenizer_dir)
    student_size, teacher_size = (
        (VLLM_STUDENT_SIZE, VLLM_TEACHER_SIZE) if vllm_compatible else (STUDENT_SIZE, TEACHER_SIZE)
    )
    return {
        "tokenizer": str(tokenizer_dir),
        "student": save_tiny_model(root / "student", tokenizer, seed=0, **student_size),
        "teacher": save_tiny_model(root / "teacher", tokenizer, seed=1, **teacher_size),
    }
