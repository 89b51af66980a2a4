"""Teacher scoring never materialises a batch × length × vocabulary tensor (the measured memory is
`benchmarks/teacher_memory.py`)."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from scope_trl import SCOPETrainer

from .helpers import build_trainer


class LargestAllocation(TorchDispatchMode):
    """Records the largest tensor any operator allocates (views of existing storage do not count)."""

    def __init__(self):
        super().__init__()
        self.numel, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and not tensor._is_view() and tensor.numel() > self.numel:
                self.numel, self.op = tensor.numel(), str(func)
        return out


def test_teacher_scoring_allocates_no_batch_by_length_by_vocabulary_tensor(
    student_path, teacher_path, toy_dataset, tmp_path, monkeypatch
):
    import trl.kernels.chunked_logprob as kernel
    import trl.trainer.utils as trl_utils

    # TRL's fused head projects tiles of 4,096 tokens x 32,768 vocabulary columns: larger than the whole of this tiny
    # test bed. Shrink the tiles to keep real proportions (tiles much smaller than batch x length x vocabulary).
    monkeypatch.setattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", 64)
    monkeypatch.setattr(kernel, "TOKEN_CHUNK_SIZE", 16)
    trainer = build_trainer(SCOPETrainer, student_path, toy_dataset, tmp_path, teacher=teacher_path)
    batch, prompt, length = 4, 6, 48
    vocabulary = trainer.teacher_model.config.vocab_size
    input_ids = torch.randint(5, 300, (batch, prompt + length), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(input_ids)
    rows = torch.ones(batch, dtype=torch.bool)
    full = batch * length * vocabulary

    with torch.no_grad(), LargestAllocation() as scoring:
        scores = trainer._score_with_teacher(input_ids, attention_mask, length, rows, batch)
    assert scores.shape == (batch, length) and torch.isfinite(scores).all()
    assert scoring.numel < full / 4, (scoring.op, scoring.numel, full)

    # The same scores from full logits, and the watch does see that path's B x T x V allocation.
    with torch.no_grad(), LargestAllocation() as naive:
        logits = trainer.teacher_model(input_ids=input_ids, attention_mask=attention_mask).logits[:, prompt - 1 : -1]
        reference = logits.float().log_softmax(-1).gather(-1, input_ids[:, prompt:, None]).squeeze(-1)
    assert naive.numel >= full
    torch.testing.assert_close(scores, reference, rtol=1e-4, atol=1e-4)
