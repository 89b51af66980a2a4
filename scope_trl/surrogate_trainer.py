"""The shared loss plumbing of our trainers: a `GRPOTrainer` whose per-token policy surrogate is pluggable.

TRL's `GRPOTrainer._compute_loss` hard-codes its surrogates and raises on any other `loss_type`, so a trainer that
changes the surrogate has to own the whole method. `SurrogateGRPOTrainer` owns it once, for every trainer of this
package, and splits it into steps a subclass can replace:

1. `_policy_batch`: the student forward (fused LM head, chunked), old log-probs, log-ratio (token or sequence level),
   the high-entropy mask, the off-policy sequence mask and the reference KL, gathered into a `PolicyBatch`;
2. `_per_token_policy_loss`: **the only abstract step**, the surrogate (DGPO's soft clip, SCOPE's two paths, ...);
3. `_apply_token_weights`: GRPO's post-multipliers (off-policy mask, entropy mask, vLLM importance-sampling ratio)
   and `+ beta * KL`;
4. `_aggregate`: token aggregation with global counts, already divided for gradient accumulation
   (`scope_trl.aggregation`);
5. `_add_regularizers`: the entropy bonus (static or adaptive, as in GRPO) and the MoE auxiliary loss;
6. `_log_policy_metrics`: `kl`, `entropy` and `policy_loss`, which is **always** logged (GRPO only logs it with an
   entropy bonus).

Every metric is reduced across processes before it is recorded, and every collective runs on every process in the
same order, whatever the data (ZeRO-3 and DDP deadlock otherwise).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import dataclass
from unittest import mock

import torch
from trl import GRPOTrainer
from trl.trainer.utils import get_config_model_id, is_async_callable, nanmax, nanmin

from .aggregation import aggregate_token_loss
from .checks import (
    check_model_reference,
    check_prompt_column,
    check_reward_columns,
    check_trackers,
    explain_load_failure,
    prefer_safetensors,
    raised_while_loading,
)
from .guards import NonFiniteUpdateError, checked_reward_function
from .losses import LOG_RATIO_CLAMP


CPU = torch.device("cpu")
# The inputs of a vision-language batch that the student's forward takes besides the token ids (TRL 1.16's names).
MULTIMODAL_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)


def sequence_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 1) advantage of each sequence: GRPO's (B, 1) as is; a per-token (B, T) one as its mean over the
    sequence's loss tokens (0 for a sequence without any).

    The off-policy sequence mask (DeepSeek-V3.2, TRL's `get_off_policy_mask`) drops a stale sequence whose advantage
    is negative; for per-token advantages (SCOPE) the sign of the sequence's mean decides, so that the mask stays a
    sequence mask instead of dropping some tokens of a rollout and keeping others.
    """
    if advantages.size(-1) == 1:
        return advantages
    tokens = mask.sum(-1, keepdim=True)
    return torch.where(mask > 0, advantages, 0.0).sum(-1, keepdim=True) / tokens.clamp(min=1.0)


@dataclass
class PolicyBatch:
    """What the policy loss of one micro-batch needs, computed once by `SurrogateGRPOTrainer._policy_batch`.

    Shapes: B rows, T completion positions. Tensors marked (B, T | 1) are (B, 1) under
    `importance_sampling_level="sequence"`.
    """

    per_token_logps: torch.Tensor  # (B, T) log π_θ at the sampling temperature; carries the gradient
    old_per_token_logps: torch.Tensor  # (B, T) log π_old; detached
    log_ratio: torch.Tensor  # (B, T | 1) log π_θ - log π_old, token level or the sequence's mean
    advantages: torch.Tensor  # (B, 1) or (B, T)
    mask: torch.Tensor  # (B, T) 1 on loss tokens (completion mask times tool mask)
    entropies: torch.Tensor  # (B, T) per-token entropies of the policy, from the fused head
    entropy_mask: torch.Tensor | None  # (B, T) bool, `top_entropy_quantile < 1`
    off_policy_mask: torch.Tensor | None  # (B, 1) 1 = keep, `off_policy_mask_threshold`
    per_token_kl: torch.Tensor | None  # (B, T) k3 KL to the reference model, `beta != 0`
    aux_loss: torch.Tensor | None  # MoE load-balancing loss
    training: bool

    @property
    def mode(self) -> str:
        return "train" if self.training else "eval"


class SurrogateGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` with a replaceable per-token surrogate; subclasses implement `_per_token_policy_loss`.

    Everything GRPO offers around the surrogate keeps its GRPO meaning: `loss_type` selects the token aggregation
    (`dapo`, `grpo`, `bnpo`, `dr_grpo`, `luspo`), `beta` adds the reference KL, `top_entropy_quantile` masks
    low-entropy tokens, `off_policy_mask_threshold` drops stale negative-advantage sequences, `entropy_coef` /
    `use_adaptive_entropy` add the entropy bonus, and with vLLM the loss is multiplied by TRL's
    `importance_sampling_ratio` when `vllm_importance_sampling_correction=True`.
    """

    def __init__(self, model, reward_funcs=None, args=None, **kwargs):
        # Mistakes TRL would report late or obliquely are refused here, before any model loads (scope_trl.checks).
        check_trackers(None if args is None else args.report_to)
        check_prompt_column(kwargs.get("train_dataset"), "training")
        if kwargs.get("eval_dataset") is not None:
            check_prompt_column(kwargs["eval_dataset"], "evaluation")
        user_init_kwargs = None if args is None else args.model_init_kwargs
        if isinstance(model, str):
            check_model_reference(model, "student", "model")
            if args is not None:  # TRL reads the field while loading; the user's config is restored right after
                args.model_init_kwargs = prefer_safetensors(user_init_kwargs)
        try:
            super().__init__(model, reward_funcs, args=args, **kwargs)
        except OSError as error:
            if not (isinstance(model, str) and raised_while_loading(error)):
                raise
            raise explain_load_failure(error, model, "student", "model", "model_init_kwargs") from error
        finally:
            if args is not None:
                args.model_init_kwargs = user_init_kwargs
        for split, dataset in (("training", self.train_dataset), ("evaluation", self.eval_dataset)):
            if dataset is not None:
                check_reward_columns(self.reward_funcs, self.reward_func_names, dataset, split)
        if self.args.nonfinite_updates == "skip" and self.is_deepspeed_enabled:
            raise ValueError(
                "nonfinite_updates='skip' is not supported under DeepSpeed: its engine applies the update inside "
                "backward, before a step could be dropped (DeepSpeed skips fp16 overflow steps itself). Use "
                "nonfinite_updates='error', which stops the run at the first non-finite loss or gradient norm."
            )
        self._nonfinite_loss = None  # device flag over the micro-batches of the current optimizer step (no sync)
        self._skip_optimizer_step = False
        self._skipped_steps = 0
        self._scaler_skipped_steps = 0
        self._warned_untrainable = False
        # Failing user reward functions name themselves and a completion (model rewards and async ones are TRL's).
        self.reward_funcs = [
            func
            if isinstance(func, torch.nn.Module) or is_async_callable(func)
            else checked_reward_function(func, name)
            for func, name in zip(self.reward_funcs, self.reward_func_names, strict=True)
        ]

    def _load_optimizer_and_scheduler(self, checkpoint):
        # On resume, transformers before 5.18 loads a multi-process run's optimizer state onto `args.device`, which
        # accelerate names `cpu:0` on CPU: a location `torch.load` cannot restore to. "cpu" is the same memory.
        device = self.args.device
        if checkpoint is None or device.type != "cpu" or device.index is None:
            return super()._load_optimizer_and_scheduler(checkpoint)
        with mock.patch.object(type(self.args), "device", new_callable=mock.PropertyMock, return_value=CPU):
            return super()._load_optimizer_and_scheduler(checkpoint)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        card = os.path.join(self.args.output_dir, "README.md")
        if not self.is_world_process_zero() or not os.path.isfile(card):
            return
        # TRL names the base model by its Hub id only: for a local directory, or no path at all, its template writes
        # "a fine-tuned version of [None](https://huggingface.co/None)". Name the directory instead (not its full
        # path, which would publish the trainer's file system), and link nowhere.
        source = get_config_model_id(self.model.config)
        if source and not os.path.isdir(source):
            return  # a Hub id: TRL's link is right
        if source:
            base = f"`{os.path.basename(os.path.normpath(source))}` (loaded from a local directory)"
        else:
            base = "a model without a Hub id"
        with open(card) as f:
            text = f.read()
        fixed = text.replace("[None](https://huggingface.co/None)", base)
        if fixed != text:
            with open(card, "w") as f:
                f.write(fixed)

    # ---------------------------------------------------------------------------------------------------------------
    # The loss
    # ---------------------------------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        batch = self._policy_batch(model, inputs)
        per_token_loss = self._per_token_policy_loss(batch, inputs)
        per_token_loss = self._apply_token_weights(per_token_loss, batch, inputs)
        loss, policy_loss = self._aggregate(per_token_loss, batch, inputs)
        loss = self._add_regularizers(loss, batch)
        self._log_policy_metrics(batch, policy_loss)
        if batch.training:
            bad = ~torch.isfinite(loss.detach())
            self._nonfinite_loss = bad if self._nonfinite_loss is None else self._nonfinite_loss | bad
            if self.is_deepspeed_enabled and self.accelerator.sync_gradients:
                # DeepSpeed's engine applies the update inside this micro-batch's backward: check the loss before it.
                self._check_update(None, before_engine_step=True)
        return loss

    # ---------------------------------------------------------------------------------------------------------------
    # Non-finite updates never reach the weights silently (`nonfinite_updates`, scope_trl.guards)
    # ---------------------------------------------------------------------------------------------------------------

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if getattr(optimizer.step, "_nonfinite_guard", False):
            return optimizer
        step = optimizer.step

        @functools.wraps(step)
        def guarded_step(*args, **kwargs):
            if self._skip_optimizer_step:  # decided by `_check_update` for this very step, on every process
                self._skip_optimizer_step = False
                return None
            return step(*args, **kwargs)

        guarded_step._nonfinite_guard = True
        optimizer.step = guarded_step
        return optimizer

    def _get_grad_norm(self, model, grad_norm=None):
        # transformers calls this once per optimizer step, after clipping and right before `optimizer.step()`.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        self._check_update(grad_norm)
        return grad_norm

    def _deepspeed_engine(self):
        wrapped = self.accelerator.deepspeed_engine_wrapped if self.is_deepspeed_enabled else None
        return None if wrapped is None else wrapped.engine

    def _loss_scaler_dropped_update(self) -> bool:
        """Whether an fp16 loss scaler drops this step's update on its own (its gradients overflowed): torch's
        `GradScaler` (fp16 without DeepSpeed; asked after it unscaled the gradients), or DeepSpeed's fp16 engine,
        which has already stepped and says whether it applied the update."""
        engine = self._deepspeed_engine()
        if engine is not None:
            return engine.fp16_enabled() and not engine.was_step_applied()
        scaler = self.accelerator.scaler
        return scaler is not None and scaler.is_enabled()

    def _check_update(self, grad_norm, before_engine_step: bool = False) -> None:
        """Decide this optimizer step's fate from its loss (every micro-batch's) and its gradient norm: apply it, let the
        loss scaler drop it, skip it, or raise. Semantics: docs/reliability.md, "Non-finite updates".

        One host sync per optimizer step; the decision is reduced over processes so that every process skips (or
        raises) together. Under DeepSpeed it runs twice: on the loss before the engine's step (`before_engine_step`),
        then on the gradient norm after it.
        """
        device = self.accelerator.device
        loss_flag = self._nonfinite_loss if self._nonfinite_loss is not None else torch.tensor(False, device=device)
        self._nonfinite_loss = None
        norm = torch.as_tensor(0.0 if grad_norm is None else grad_norm, device=device, dtype=torch.float32)
        flags = torch.stack([loss_flag.float().to(device), (~torch.isfinite(norm)).float()])
        loss_bad, norm_bad = (self.accelerator.reduce(flags, reduction="sum") > 0).tolist()
        # Set at every step, whether or not the optimizer's `step` is reached (a loss scaler may not call it).
        self._skip_optimizer_step = False
        if before_engine_step and not loss_bad:
            return
        if norm_bad and not loss_bad and self._loss_scaler_dropped_update():
            # Routine in fp16: the scaler drops the update and lowers its scale. Its business, counted apart.
            self._scaler_skipped_steps += 1
            norm_bad = False
        if not (loss_bad or norm_bad):
            self._log_skip_counts()
            return
        what = {(True, True): "loss and the gradient norm are", (True, False): "loss is"}.get(
            (loss_bad, norm_bad), "gradient norm is"
        )
        where = f"{self._name} (scope-trl), optimizer step {self.state.global_step + 1}"
        if self.args.nonfinite_updates == "error":
            engine = None if before_engine_step else self._deepspeed_engine()
            if engine is not None and engine.was_step_applied():
                applied = (
                    "DeepSpeed's engine had applied this update before its gradient norm could be read, so the "
                    "weights may hold non-finite values"
                )
            elif engine is not None:
                applied = "DeepSpeed's engine did not apply the update (it drops steps whose gradients are not finite)"
            else:
                applied = "the update was not applied"
            number = "" if before_engine_step else f" (grad norm {float(norm):g})"
            raise NonFiniteUpdateError(
                f"{where}: the {what} not finite{number}; {applied}. Common causes: a learning rate too high, a reward "
                "or teacher score that is NaN/inf, fp16 overflow. Resume from the last checkpoint with a lower "
                "learning rate, or set nonfinite_updates='skip' to drop such steps and keep training."
            )
        self._skip_optimizer_step = True
        self._skipped_steps += 1
        self._log_skip_counts()
        warnings.warn(f"{where}: the {what} not finite; this update is skipped (nonfinite_updates='skip').")

    def _log_skip_counts(self) -> None:
        metrics = self._metrics["train"]
        metrics["nonfinite/skipped_steps"].append(self._skipped_steps)
        metrics["nonfinite/scaler_skipped_steps"].append(self._scaler_skipped_steps)

    def _accumulation_steps(self, training: bool) -> int:
        """Micro-batches per optimizer step (Trainer sets the attribute once training starts; eval never accumulates)."""
        return self.current_gradient_accumulation_steps if training else 1

    def _per_token_policy_loss(self, batch: PolicyBatch, inputs: dict) -> torch.Tensor:
        """Return the per-token loss to minimise, shape (B, T) or (B, 1). Subclasses log their own metrics here."""
        raise NotImplementedError

    def _policy_batch(self, model, inputs: dict) -> PolicyBatch:
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]

        per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            **{key: inputs.get(key) for key in MULTIMODAL_KEYS},
        )

        entropy_mask = None
        if self.top_entropy_quantile < 1.0:
            entropy_mask = self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)

        advantages = inputs["advantages"]
        if advantages.dim() == 1:  # GRPO's (B,) sequence advantages; subclasses may pass per-token (B, T) ones
            advantages = advantages.unsqueeze(1)

        # Absent when every optimizer step is on-policy (TRL skips the extra forward): then π_old = π_θ exactly.
        old_per_token_logps = inputs.get("old_per_token_logps")
        if old_per_token_logps is None:
            old_per_token_logps = per_token_logps.detach()

        off_policy_mask = None
        if self.off_policy_mask_threshold is not None:
            # The sampler's own log-probs (vLLM) see both drift sources: optimizer steps and engine mismatch.
            sampling_logps = inputs.get("sampling_per_token_logps", old_per_token_logps)
            off_policy_mask = self.get_off_policy_mask(
                sequence_advantages(advantages, mask),
                per_token_logps,
                sampling_logps,
                mask,
                self.off_policy_mask_threshold,
            )

        log_ratio = per_token_logps - old_per_token_logps
        if self.importance_sampling_level == "sequence":
            log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
        elif self.importance_sampling_level != "token":
            raise ValueError(
                f"Unknown importance_sampling_level {self.importance_sampling_level!r}; use 'token' or 'sequence'."
            )

        per_token_kl = None
        if self.beta != 0.0:
            ref_minus_logp = inputs["ref_per_token_logps"] - per_token_logps
            per_token_kl = torch.exp(ref_minus_logp) - ref_minus_logp - 1  # k3 estimator, >= 0
            if self.args.use_bias_correction_kl:
                per_token_kl = per_token_kl * torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))

        return PolicyBatch(
            per_token_logps=per_token_logps,
            old_per_token_logps=old_per_token_logps,
            log_ratio=log_ratio,
            advantages=advantages,
            mask=mask,
            entropies=entropies,
            entropy_mask=entropy_mask,
            off_policy_mask=off_policy_mask,
            per_token_kl=per_token_kl,
            aux_loss=aux_loss,
            training=self.model.training,
        )

    def _apply_token_weights(self, per_token_loss: torch.Tensor, batch: PolicyBatch, inputs: dict) -> torch.Tensor:
        if batch.off_policy_mask is not None:
            per_token_loss = per_token_loss * batch.off_policy_mask
        if batch.entropy_mask is not None:
            per_token_loss = per_token_loss * batch.entropy_mask
        if self.use_vllm and self.vllm_importance_sampling_correction:
            per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]
        if batch.per_token_kl is not None:
            per_token_loss = per_token_loss + self.beta * batch.per_token_kl
        return per_token_loss

    def _aggregate(self, per_token_loss: torch.Tensor, batch: PolicyBatch, inputs: dict):
        return aggregate_token_loss(
            per_token_loss,
            batch.mask,
            self.loss_type,
            num_items_in_batch=inputs.get("num_items_in_batch"),
            num_processes=self.accelerator.num_processes,
            gradient_accumulation_steps=self._accumulation_steps(batch.training),
            steps_per_generation=self.args.steps_per_generation,
            max_completion_length=self.max_completion_length,
            training=batch.training,
        )

    def _add_regularizers(self, loss: torch.Tensor, batch: PolicyBatch) -> torch.Tensor:
        accumulation = self._accumulation_steps(batch.training)
        if self._entropy_bonus_enabled:
            loss = loss - self._entropy_bonus(batch) / accumulation
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * batch.aux_loss / accumulation
            self._metrics[batch.mode]["aux_loss"].append(self.accelerator.gather(batch.aux_loss).mean().item())
        return loss

    def _entropy_bonus(self, batch: PolicyBatch) -> torch.Tensor:
        """coef · mean entropy over the tokens the policy term acts on (GRPO's `entropy_coef` semantics).

        The coefficient is the one fixed at the end of the previous optimizer step, so all micro-batches of a step
        apply the same bonus. In adaptive mode the bonus is active only while the last measured entropy is at or
        below `entropy_target`, and the coefficient moves by `entropy_coef_delta` within
        [`entropy_coef_min`, `entropy_coef_max`] after each step, from the exact window-global token mean entropy.
        """
        active = batch.mask if batch.entropy_mask is None else batch.mask * batch.entropy_mask
        mean_entropy = (batch.entropies * active).sum() / active.sum().clamp(min=1.0)
        coef = self.entropy_coef
        if self.use_adaptive_entropy and self._last_world_entropy > self.args.entropy_target:
            coef = 0.0
        if batch.training and self.use_adaptive_entropy:
            stats = torch.stack([(batch.entropies * active).sum(), active.sum()]).detach()
            window = stats if self._entropy_window_stats is None else self._entropy_window_stats + stats
            self._entropy_window_stats = window
            if self.accelerator.sync_gradients:
                totals = self.accelerator.reduce(window, reduction="sum")
                self._last_world_entropy = (totals[0] / totals[1].clamp(min=1.0)).item()
                step = self.args.entropy_coef_delta
                if self._last_world_entropy <= self.args.entropy_target:
                    self.entropy_coef = min(self.entropy_coef + step, self.args.entropy_coef_max)
                else:
                    self.entropy_coef = max(self.entropy_coef - step, self.args.entropy_coef_min)
                self._entropy_window_stats = None
        if batch.training and self.accelerator.sync_gradients:
            self._metrics["train"]["entropy_coef"].append(self.entropy_coef)
        return coef * mean_entropy

    # ---------------------------------------------------------------------------------------------------------------
    # Metrics
    # ---------------------------------------------------------------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self._check_trainable(out)
        return out

    def _check_trainable(self, out: dict) -> None:
        """Warn (once per run) when a training generation batch has no loss token on any process: its steps then
        train nothing, with loss and gradient norm 0, which would otherwise pass unnoticed."""
        mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
        if self.accelerator.reduce(mask.sum().float(), reduction="sum").item() > 0:
            return
        clipped = self._metrics["train"]["completions/clipped_ratio"]  # TRL's, over every process
        if self.args.mask_truncated_completions and clipped and clipped[-1] == 1.0:
            reason = (
                f"every completion reached max_completion_length={self.args.max_completion_length} without an "
                "end-of-sequence token, and mask_truncated_completions=True leaves truncated completions out of the "
                "loss. Raise max_completion_length, or set mask_truncated_completions=False"
            )
        else:
            reason = "no completion has a token left to train on (empty, truncated or tool-masked)"
        self._warn_untrainable(reason)

    def _warn_untrainable(self, reason: str) -> None:
        if not self._warned_untrainable and self.accelerator.is_main_process:
            warnings.warn(
                f"The generation batch of step {self.state.global_step + 1} trains nothing: {reason}. Its loss and "
                "gradient norm are 0. This warning is shown once per run.",
                UserWarning,
                stacklevel=2,
            )
        self._warned_untrainable = True

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # A metric undefined in every batch since the last log (an empty set: NaN each time) is left out of this
        # entry: TRL would log it as None, which trackers such as TensorBoard warn about at every step.
        metrics = self._metrics["train" if self.model.training else "eval"]
        for key in [key for key, values in metrics.items() if all(math.isnan(value) for value in values)]:
            del metrics[key]
        super().log(logs, start_time)

    def _log_policy_metrics(self, batch: PolicyBatch, policy_loss: torch.Tensor) -> None:
        metrics = self._metrics[batch.mode]
        pairs = [(batch.entropies, batch.mask)]
        if batch.per_token_kl is not None:
            pairs.append((batch.per_token_kl, batch.mask))
        entropy, *kl = self._global_masked_means(*pairs)
        metrics["entropy"].append(entropy)
        if kl:
            metrics["kl"].append(kl[0])
        metrics["policy_loss"].append(self.accelerator.gather(policy_loss).nanmean().item())

    def _log_boundary_metrics(self, low: torch.Tensor, high: torch.Tensor, mask: torch.Tensor, mode: str) -> None:
        """TRL's `clip_ratio/*` metrics from the LN / HP token masks (`scope_trl.losses.boundary_regions`): shares of
        LN, HP and either among the `mask` tokens of every process, and the per-sequence extremes (two collectives,
        two host transfers)."""
        metrics = self._metrics[mode]
        low, high = low.float(), high.float()
        low_mean, high_mean, region_mean = self._global_masked_means(
            (low, mask), (high, mask), (torch.maximum(low, high), mask)
        )
        metrics["clip_ratio/low_mean"].append(low_mean)
        metrics["clip_ratio/high_mean"].append(high_mean)
        metrics["clip_ratio/region_mean"].append(region_mean)
        per_sequence = self._gathered_sequence_means((low, high), mask)
        low_min, high_max = torch.stack([nanmin(per_sequence[:, 0]), nanmax(per_sequence[:, 1])]).tolist()
        metrics["clip_ratio/low_min"].append(low_min)
        metrics["clip_ratio/high_max"].append(high_max)

    def _global_masked_means(self, *pairs: tuple[torch.Tensor, torch.Tensor]) -> list[float]:
        """For each `(values, mask)` pair, the mean of `values` over the masked entries of every process, all in one
        reduction; NaN when no process has any: the mean of an empty set is undefined (never a fake 0), and `log`
        leaves a metric that stayed undefined out of the logs.

        `values` of shape (B, 1) are per-sequence quantities (sequence-level importance sampling): they are averaged
        over the sequences that have at least one masked token.
        """
        sums = []
        for values, mask in pairs:
            if values.dim() == 2 and values.size(1) == 1 and mask.size(1) != 1:
                mask = (mask.sum(-1, keepdim=True) > 0).to(mask.dtype)
            values, mask = torch.broadcast_tensors(values.detach().float(), mask.float())
            sums += [(values * mask).sum(), mask.sum()]
        totals = self.accelerator.reduce(torch.stack(sums), reduction="sum").tolist()
        return [total / count if count > 0 else float("nan") for total, count in zip(totals[::2], totals[1::2])]

    def _gathered_sequence_means(self, values: tuple[torch.Tensor, ...], mask: torch.Tensor) -> torch.Tensor:
        """(N_global, len(values)): each sequence's masked mean of each tensor, gathered over processes in one
        collective; NaN for a sequence without masked token (for `nanmin` / `nanmax`)."""
        columns = [v.squeeze(1).float() if v.size(1) == 1 else (v * mask).sum(-1) / mask.sum(-1) for v in values]
        return self.accelerator.gather(torch.stack(columns, dim=1).detach().float())
