"""Colocated vLLM on CPU, made to follow the trainer: what the real-vLLM tests need, and why.

These tests have no GPU, so TRL's colocated vLLM (`use_vllm=True, vllm_mode="colocate"`) runs vLLM's CPU build,
which differs from a GPU engine in three ways that matter to a trainer:

1. **Linear layers cannot be reloaded.** After loading a model, the CPU build repacks the weight of every linear layer
   for its own GEMM kernels and drops the original (`UnquantizedLinearMethod.process_weights_after_loading` calls
   `dispatch_cpu_unquantized_gemm(layer, remove_weight=True)`). TRL pushes the trainer's weights into a colocated
   engine with `load_weights`, which then fails at the first sync: `'Parameter' object has no attribute
   'weight_loader'`. vLLM has its own switch for layers it leaves unpacked: a linear layer with
   `_cpu_skip_gemm_dispatch = True` keeps its weight and computes with plain `F.linear`; we set it on every one.
2. **The LM head samples from a stale copy (a silent trap).** The head (`UnquantizedEmbeddingMethod.
   process_weights_after_loading`) keeps its weight, so `load_weights` succeeds, but it also packs a *copy* and
   computes the logits from the copy, which no `load_weights` refreshes. Every other layer then follows the trainer
   while the head stays at the initial weights: nothing fails, yet vLLM's sampling log-probs drift away from the
   trainer's step after step. So the head's `cpu_linear` becomes plain `F.linear` on the live weight
   (`lm_head_unpacked=False` keeps vLLM's behaviour, to show the trap).
3. **A float32 model runs in bfloat16.** vLLM's `dtype="auto"` downcasts a float32 checkpoint to the platform's first
   supported dtype, bfloat16 on CPU, and TRL does not pass a dtype. The tiny float32 test models would then sample
   with ~1e-3 log-prob errors that grow as the policy sharpens, too coarse to tell "in sync" from "slightly stale".
   The engine is built in float32 (`dtype="float32"`), so that vLLM's log-probs match the trainer's to ~1e-6.

`colocated_vllm_on_cpu()` applies all three while a trainer builds its engine (the first two act at load time only:
the engine keeps its unpacked layers afterwards) and sets `VLLM_CPU_KVCACHE_SPACE=1` (GiB), which keeps the KV cache
small (the CPU build otherwise reserves `vllm_gpu_memory_utilization` of the host's memory). On leaving, it also
restores the rendezvous variables TRL sets for the engine (`RANK`, `WORLD_SIZE`, `MASTER_PORT`, ...), so that they do
not leak into later tests of the session (subprocess launches among them). None of this is needed on a GPU, where
vLLM samples from the very tensors `load_weights` writes.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch


# Set while an engine is built: the KV cache size (here), and TRL's rendezvous variables for vLLM's launcher.
ENVIRONMENT = ("VLLM_CPU_KVCACHE_SPACE", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def colocated_vllm_on_cpu(lm_head_unpacked: bool = True, dtype: str | None = "float32", kv_cache_gib: int = 1):
    """Within the block, colocated vLLM engines load with reloadable linear layers, an LM head that computes with its
    live weight (unless `lm_head_unpacked=False`), in `dtype` (`None`: vLLM's choice), with a `kv_cache_gib` cache."""
    import trl.generation.vllm_generation as vllm_generation
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    linear_after_loading = UnquantizedLinearMethod.process_weights_after_loading
    head_after_loading = UnquantizedEmbeddingMethod.process_weights_after_loading
    engine_class = vllm_generation.LLM

    def linear_unpacked(self, layer):
        layer._cpu_skip_gemm_dispatch = True  # vLLM's own switch: keep the weight, compute with F.linear
        return linear_after_loading(self, layer)

    def head_unpacked(self, layer):
        layer.cpu_linear = torch.nn.functional.linear  # logits from the live (reloadable) weight, no packed copy

    saved_environment = {name: os.environ.get(name) for name in ENVIRONMENT}
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
    UnquantizedLinearMethod.process_weights_after_loading = linear_unpacked
    if lm_head_unpacked:
        UnquantizedEmbeddingMethod.process_weights_after_loading = head_unpacked
    if dtype is not None:
        vllm_generation.LLM = functools.partial(engine_class, dtype=dtype)
    try:
        yield
    finally:
        UnquantizedLinearMethod.process_weights_after_loading = linear_after_loading
        UnquantizedEmbeddingMethod.process_weights_after_loading = head_after_loading
        vllm_generation.LLM = engine_class
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
