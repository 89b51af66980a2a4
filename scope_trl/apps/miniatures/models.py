"""The miniatures' character-level tokenizer and model sizes.

One token per character keeps every task's token count exact (an 8-column answer is 16 tokens) and lets a model
find a digit at a fixed distance. Models are `scope_trl.apps.toy.build_tiny_model` Qwen3s, saved with `save_pretrained` so
that the trainers load them through their real `from_pretrained` path.
"""

from __future__ import annotations


SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CHARACTERS = "0123456789+-*=,;:|<>()[]{}.?!_/ " + "abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Teacher and student share the architecture (the skill gap comes from their SFT data, not their size).
MODEL_SIZE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}


def build_char_tokenizer():
    """A character-level tokenizer (`<|im_end|>` is EOS, `<|pad|>` pads on the left), deterministic."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + list(CHARACTERS))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    from ..toy import CHAT_TEMPLATE

    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        bos_token=None,
        unk_token="<|endoftext|>",
        padding_side="left",
        truncation_side="left",
        additional_special_tokens=["<|im_start|>"],
    )
    hf_tokenizer.chat_template = CHAT_TEMPLATE
    return hf_tokenizer


def build_model(tokenizer, seed: int, **size):
    """A randomly initialised Qwen3 of the miniatures' size (overridable), seeded."""
    from ..toy import build_tiny_model

    return build_tiny_model(tokenizer, seed=seed, max_position_embeddings=64, **{**MODEL_SIZE, **size})
