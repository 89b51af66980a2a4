"""The offline test bed loads back like Hub checkpoints and its task and rewards behave as documented."""

import filecmp
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from scope_trl.apps.toy import (
    boxed_answer_reward,
    build_tiny_model,
    build_tokenizer,
    contains_digit_reward,
    digit_fraction_reward,
    extract_boxed,
    make_arithmetic_dataset,
    make_arithmetic_problems,
)


def test_models_and_tokenizer_load_through_auto_classes(toy_paths):
    student = AutoModelForCausalLM.from_pretrained(toy_paths["student"])
    teacher = AutoModelForCausalLM.from_pretrained(toy_paths["teacher"])
    tokenizer = AutoTokenizer.from_pretrained(toy_paths["student"])
    assert student.config.model_type == teacher.config.model_type == "qwen3"
    assert teacher.config.hidden_size > student.config.hidden_size
    assert sum(p.numel() for p in teacher.parameters()) > sum(p.numel() for p in student.parameters())
    assert student.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>"
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_student_and_teacher_share_one_tokenizer(toy_paths):
    assert filecmp.cmp(
        os.path.join(toy_paths["student"], "tokenizer.json"),
        os.path.join(toy_paths["teacher"], "tokenizer.json"),
        shallow=False,
    )
    assert build_tokenizer().get_vocab() == AutoTokenizer.from_pretrained(toy_paths["tokenizer"]).get_vocab()


def test_tokenizer_round_trips_and_applies_chatml(toy_paths):
    tokenizer = AutoTokenizer.from_pretrained(toy_paths["tokenizer"])
    text = "What is 12 + 7? Put your final answer within \\boxed{}. Ünïcödé ✓"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    batch = tokenizer(["a", "a longer text"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1  # left padding


def test_models_generate_and_are_seeded(toy_paths):
    tokenizer = AutoTokenizer.from_pretrained(toy_paths["tokenizer"])
    model = AutoModelForCausalLM.from_pretrained(toy_paths["student"])
    ids = tokenizer(["What is 1 + 2?"], return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=True)
    assert out.shape[1] <= ids["input_ids"].shape[1] + 5
    a, b = build_tiny_model(tokenizer, seed=3), build_tiny_model(tokenizer, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(build_tiny_model(tokenizer, seed=4).lm_head.weight, a.lm_head.weight)
    padded = build_tiny_model(tokenizer, vocab_size=len(tokenizer) + 64)
    assert padded.config.vocab_size == len(tokenizer) + 64
    with pytest.raises(ValueError, match="vocab_size"):
        build_tiny_model(tokenizer, vocab_size=10)


def test_arithmetic_task_is_deterministic_and_correct():
    problems = make_arithmetic_problems(50, seed=7, operations="+-*")
    assert problems == make_arithmetic_problems(50, seed=7, operations="+-*")
    for p in problems:
        a, op, b = p.question.removeprefix("What is ").removesuffix("?").split()
        assert int(p.answer) == eval(f"{a} {op} {b}")  # noqa: S307 - trusted, generated text
    dataset = make_arithmetic_dataset(4, seed=0)
    assert dataset.column_names == ["prompt", "solution"]
    assert dataset[0]["prompt"][0]["role"] == "user" and "\\boxed{}" in dataset[0]["prompt"][0]["content"]
    assert isinstance(make_arithmetic_dataset(2, conversational=False)[0]["prompt"], str)
    with pytest.raises(ValueError, match="operations"):
        make_arithmetic_problems(2, operations="/")


def test_rewards():
    assert extract_boxed("x \\boxed{1} then \\boxed{ 42 }") == "42"
    assert extract_boxed("no box") is None
    completions = [
        [{"role": "assistant", "content": "so \\boxed{5}"}],
        [{"role": "assistant", "content": "6"}],
        "\\boxed{7}",
    ]
    assert boxed_answer_reward(completions, solution=["5", "6", "8"]) == [1.0, 0.0, 0.0]
    assert digit_fraction_reward(["a1", "12", ""]) == [0.5, 1.0, 0.0]
    assert contains_digit_reward(["a1", "ab", [{"role": "assistant", "content": "7"}]]) == [1.0, 0.0, 1.0]
