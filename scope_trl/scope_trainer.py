"""`SCOPETrainer`: correctness-routed, perplexity-weighted on-policy distillation inside TRL's GRPO pipeline.

The maths lives in pure functions (`scope_trl.routing`: routes and their statistics; `scope_trl.weights`: the
dual-path weights and the per-token advantages; `scope_trl.losses`: the surrogates); the teacher behind one interface
(`scope_trl.teacher`); the loss plumbing shared with DGPO in `scope_trl.surrogate_trainer`. This class wires them into
TRL's generation and loss steps and logs.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
import time
import warnings
from dataclasses import dataclass, fields

import torch
from transformers import PreTrainedModel
from transformers.trainer_utils import get_last_checkpoint
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id

from .aggregation import global_token_normalizer
from .checks import check_model_reference, refuse_multimodal, verifier_index, warn_unused_rewards
from .losses import boundary_regions, dgpo_terms, ppo_clip_loss
from .routing import EXCLUDED, MLE, OPD, ROUTE_NAMES, RowSummary, route_ids, route_rollouts, routing_statistics
from .scope_config import SCOPEConfig
from .surrogate_trainer import PolicyBatch, SurrogateGRPOTrainer
from .teacher import (
    VLLM_NEGATIVE_INFINITY,
    check_resumed_teacher,
    check_tokenizers_before_loading,
    load_teacher,
    teacher_card_section,
    teacher_record,
    write_teacher_record,
)
from .weights import distillation_signal, path_weights, per_token_advantages


@dataclass
class _ScoredBatch:
    """This process's rows of a generation batch, routed and scored by the teacher, before π_old is known.

    Every field is per row, (B,) or (B, T), in generation order. When π_old comes from the loss forward
    (`_old_logps_from_loss_forward`), the fields travel with the rows through TRL's shuffle as inputs named
    `scope_scored/<field>`, and `position` puts them back in generation order, which the prompt groups follow.
    """

    position: torch.Tensor  # (B,) row index in this process's generation batch
    mask: torch.Tensor  # (B, T) float, 1 on loss tokens
    teacher_logps: torch.Tensor  # (B, T) log π_T of the sampled tokens; 0 where not scored or not finite
    nonfinite_teacher: torch.Tensor  # (B,) bool, a loss token with a non-finite teacher score
    mle: torch.Tensor  # (B,) bool, on the MLE path
    opd: torch.Tensor  # (B,) bool, on the OPD path (before non-finite teacher scores take rollouts off it)
    score_seconds: torch.Tensor  # (B,) this process's teacher scoring time, on each row
    offload_seconds: torch.Tensor  # (B,) this process's teacher offload time, on each row

    PREFIX = "scope_scored/"

    def as_inputs(self) -> dict[str, torch.Tensor]:
        return {self.PREFIX + field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_inputs(cls, inputs: dict) -> _ScoredBatch:
        """The scored rows carried in `inputs` (removed from it), back in generation order."""
        carried = {field.name: inputs.pop(cls.PREFIX + field.name) for field in fields(cls)}
        order = carried["position"]
        return cls(**{name: torch.empty_like(value).index_copy_(0, order, value) for name, value in carried.items()})


class SCOPETrainer(SurrogateGRPOTrainer):
    r"""
    Trainer for SCOPE, from the paper [SCOPE: Signal-Calibrated On-Policy Distillation Enhancement with Dual-Path
    Adaptive Weighting](https://huggingface.co/papers/2604.10688).

    A [`~trl.GRPOTrainer`] with a teacher. The student samples `num_generations` rollouts per prompt; the verifier
    reward (`correctness_reward`) routes each one:

    - **incorrect** rollouts are distilled on-policy: per-token advantage w^tea · (log π_T − log π_old) on the student's
      own sampled tokens (a sampled-token reverse-KL estimate), through the `policy_surrogate` (PPO clip or DGPO);
    - **correct** rollouts are reinforced by weighted maximum likelihood, −w^stu · log π_θ per token;
    - w^tea favours low teacher perplexity, w^stu high student perplexity, each normalised within the prompt group's
      subset (`scope_trl.weights.dual_path_weights`).

    Rollouts whose verifier returned `None`, that have no loss token (truncated under `mask_truncated_completions`,
    empty, fully tool-masked) or whose teacher score is not finite (`nonfinite_teacher_scores`) are excluded from both
    paths: no term, weight subset, count or metric sees them. The reward is used only to route (no GRPO
    advantage unless `outcome_advantage_coef > 0`). Everything else of GRPO (generation with transformers or vLLM,
    batching, logging, checkpoints, PEFT, DeepSpeed) is unchanged.

    Args:
        model, reward_funcs, args, **kwargs: as for [`~trl.GRPOTrainer`]; `args` must be a [`SCOPEConfig`].
        teacher_model (`str` or [`~transformers.PreTrainedModel`], *optional*):
            The teacher, as a name or path (loaded with `args.teacher_model_init_kwargs`, by default in the training
            precision) or as a model instance. Defaults to `args.teacher_model_name_or_path`. It must share the
            student's tokenizer. It is frozen, kept in eval mode, never saved in checkpoints (only recorded in
            `scope_teacher.json`), sharded under ZeRO-3 and replicated otherwise. With a teacher server
            (`args.teacher_model_server_url` or `_host`) nothing is loaded: the server scores the incorrect rollouts
            (`scope_trl.teacher`), and `teacher_model` must be left `None`.

    Implementation notes (decisions where the paper is silent; docs/scope.md, Decisions):

    - Routing, teacher scoring, the weights and the per-token advantages are computed once per generation batch, on the
      global view of the batch (a prompt group may straddle processes), and reused by every micro-batch and iteration.
    - π_old is TRL's `old_per_token_logps` when it exists. Otherwise, when the generation batch is one on-policy
      micro-batch (`steps_per_generation=1`, `num_iterations=1`, no `off_policy_mask_threshold`), it is the loss
      forward's own detached log-probs, equal to what a separate forward would give: routing and teacher scoring
      happen at generation, the scored rows travel with the batch through TRL's shuffle (`_ScoredBatch`), and the
      weights and advantages are made in that loss forward (`_weight_in_loss_forward`). Else one no-grad student
      forward is made here, once per generation batch.
    - The teacher scores only the rollouts that need a teacher signal (the incorrect ones; all of them with
      `routing=False`). Under DeepSpeed ZeRO-3 every process makes the same number of teacher forward calls (padded with
      copies of a local row), since each call is a collective.
    - `off_policy_mask_threshold` drops a stale rollout whole when the mean of its per-token advantages is negative
      (a distillation rollout the teacher finds less likely than the student does); MLE-path rollouts are kept.
    - The teacher loads in the training precision (bf16 / fp16) unless `teacher_model_init_kwargs` sets `dtype`;
      `scope_teacher.json` in every checkpoint records it, and resuming with another teacher is an error unless
      `allow_teacher_change=True`.
    - With vLLM and `vllm_importance_sampling_correction=True`, TRL's importance-sampling ratio multiplies the per-token
      loss of both paths, as it does in GRPO; the official SCOPE run has no such correction (set it to False to match).
    """

    _tag_names = ["trl", "grpo", "scope", "distillation", "arxiv:2604.10688", "scope-trl"]
    _name = "SCOPE"
    _paper = {
        "title": "SCOPE: Signal-Calibrated On-Policy Distillation Enhancement with Dual-Path Adaptive Weighting",
        "id": "2604.10688",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @article{zheng2026scope,
                title        = {{SCOPE: Signal-Calibrated On-Policy Distillation Enhancement with Dual-Path Adaptive Weighting}},
                author       = {B. Zheng and X. Ma and Y. Liang and J. Ruan and X. Fu and K. Lin and B. Zhu and K. Zeng and X. Cai},
                year         = 2026,
                eprint       = {arXiv:2604.10688},
            }"""),
    }

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: SCOPEConfig | None = None,
        teacher_model: str | PreTrainedModel | None = None,
        **kwargs,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = SCOPEConfig(f"{model_name.split('/')[-1]}-SCOPE")
        elif not isinstance(args, SCOPEConfig):
            raise TypeError(
                f"SCOPETrainer needs a SCOPEConfig, got {type(args).__name__}. Build one with the same arguments plus "
                "the teacher, e.g. SCOPEConfig(..., teacher_model_name_or_path=...), or convert the config you have: "
                "SCOPEConfig.from_grpo_config(your_config, teacher_model_name_or_path=...)."
            )
        teacher = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        server_url = args.teacher_server_base_url
        if server_url is not None and teacher_model is not None:
            raise ValueError(
                f"A teacher was passed as `teacher_model=` and a teacher server is configured ({server_url}): choose "
                "one. With a server, name the served teacher with `teacher_model_name_or_path` (it is not loaded)."
            )
        if teacher is None and server_url is None:
            raise ValueError(
                "SCOPETrainer needs a teacher: pass `teacher_model=` (a name, a path or a model instance), set "
                "`teacher_model_name_or_path` in the SCOPEConfig, or serve it with vLLM and set "
                "`teacher_model_server_url`."
            )
        refuse_multimodal(kwargs.get("processing_class"))  # before loading anything, when it is given
        if isinstance(teacher, str) and server_url is None:
            check_model_reference(teacher, "teacher", "teacher_model / teacher_model_name_or_path")
        if isinstance(teacher, str):
            check_tokenizers_before_loading(model, teacher, kwargs.get("processing_class"), args)
        super().__init__(model, reward_funcs, args=args, **kwargs)
        refuse_multimodal(self.processing_class)

        self._verifier_index = verifier_index(self.reward_func_names, args.correctness_reward)
        warn_unused_rewards(self.reward_func_names, self._verifier_index, args)
        self._last_rewards_per_func = None
        self._warned_nonfinite_teacher = False
        # The log-prob function is looked up at each call, so that a subclass or a wrapper of the trainer's reaches the
        # teacher's forwards too, as it reaches the student's.
        self.teacher = load_teacher(
            teacher,
            args,
            self.accelerator,
            self.model,
            self.processing_class,
            lambda *args, **kwargs: self._get_per_token_logps_and_entropies(*args, **kwargs),
        )
        self.teacher_record = teacher_record(self.teacher, args)

    @property
    def teacher_model(self) -> torch.nn.Module | None:
        """The prepared teacher in the training processes; None when a server scores."""
        return self.teacher.model

    # ---------------------------------------------------------------------------------------------------------------
    # The teacher's identity in checkpoints, on resume and in the model card (scope_trl.teacher)
    # ---------------------------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        checkpoint = resume_from_checkpoint
        if isinstance(checkpoint, bool) and checkpoint:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        if checkpoint:
            check_resumed_teacher(checkpoint, self.teacher_record, self.args)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict=None):
        # Every save goes through here: the final model and each checkpoint (under DeepSpeed too).
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            write_teacher_record(output_dir if output_dir is not None else self.args.output_dir, self.teacher_record)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        card = os.path.join(self.args.output_dir, "README.md")
        if self.is_world_process_zero() and os.path.isfile(card):
            with open(card, "a") as f:
                f.write(teacher_card_section(self.teacher_record))

    # ---------------------------------------------------------------------------------------------------------------
    # Generation: route, score with the teacher, weight
    # ---------------------------------------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards_per_func = rewards  # (N_global, n_funcs), gathered; NaN where a function returned None
        return rewards

    def _score_with_teacher(self, input_ids, attention_mask, logits_to_keep, rows, batch_size) -> torch.Tensor:
        """Teacher log-probs of the completion tokens of the selected local `rows` (B, C); 0 on the other rows, -inf
        where the teacher cannot score a token. Called on every process (some placements score collectively)."""
        return self.teacher.score(input_ids, attention_mask, logits_to_keep, rows, batch_size)

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        batch_size = (
            self.args.per_device_train_batch_size if self.model.training else self.args.per_device_eval_batch_size
        )
        scored = self._route_and_score(out, batch_size)
        out["outcome_advantages"] = out["advantages"]  # GRPO's (B,), used only when outcome_advantage_coef > 0

        # π_old: TRL's old log-probs when it computed them; else the loss forward's own log-probs when this generation
        # batch is one on-policy micro-batch (π_old = π_θ there, so the weights wait for that forward); else one
        # no-grad forward of the current student, here.
        old_per_token_logps = out.get("old_per_token_logps")
        if old_per_token_logps is None and self._old_logps_from_loss_forward():
            out.update(scored.as_inputs())
            out["advantages"] = torch.zeros_like(scored.mask)  # replaced in `_policy_batch`, before anything reads it
            return out
        if old_per_token_logps is None:
            checkpointing = (
                disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs)
                if self.args.gradient_checkpointing
                else contextlib.nullcontext()  # the context walks every module: skip it when there is nothing to undo
            )
            input_ids, attention_mask = self._sequences(out)
            with torch.no_grad(), checkpointing:
                old_per_token_logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, input_ids, attention_mask, scored.mask.size(1), batch_size=batch_size
                )
        out.update(self._weight_generation_batch(scored, old_per_token_logps))
        return out

    @staticmethod
    def _sequences(out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt and completion ids and attention mask of the generation batch's rows, as the student sees them."""
        input_ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        return input_ids, torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)

    def _route_and_score(self, out: dict, batch_size: int) -> _ScoredBatch:
        """Route this process's rows (from the gathered verdicts) and score the OPD path's with the teacher."""
        args = self.args
        mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
        mask = mask.float()
        loss_token = mask > 0
        rows = mask.size(0)
        local = slice(self.accelerator.process_index * rows, (self.accelerator.process_index + 1) * rows)
        has_tokens = self.accelerator.gather(loss_token.any(1))
        verdicts = self._last_rewards_per_func[:, self._verifier_index]
        mle, opd = route_rollouts(verdicts, has_tokens, args.routing, args.correctness_threshold)
        if self.model.training and has_tokens.any() and not (mle | opd).any():
            verifier = self.reward_func_names[self._verifier_index]
            self._warn_untrainable(
                f"the verifier {verifier!r} returned None for every rollout, which excludes them all"
            )

        start = time.perf_counter()
        teacher_logps = self._score_with_teacher(*self._sequences(out), mask.size(1), opd[local], batch_size)
        score_seconds = time.perf_counter() - start
        # A non-finite teacher score never reaches the loss: its rollout leaves the OPD path (or we stop). A log-prob
        # at or below vLLM's stand-in for -inf counts too, whichever placement scored it, so that a served and an
        # in-process teacher route the same rollouts (NaN fails the comparison as well).
        nonfinite = (loss_token & ~(teacher_logps > VLLM_NEGATIVE_INFINITY)).any(1)
        per_row = torch.ones(rows, device=mask.device)
        return _ScoredBatch(
            position=torch.arange(rows, device=mask.device),
            mask=mask,
            teacher_logps=torch.where(loss_token & ~nonfinite.unsqueeze(1), teacher_logps, 0.0),
            nonfinite_teacher=nonfinite,
            mle=mle[local],
            opd=opd[local],
            score_seconds=per_row * score_seconds,
            offload_seconds=per_row * self.teacher.offload_seconds,
        )

    def _old_logps_from_loss_forward(self) -> bool:
        """Whether π_old of the generation batch being scored can be the loss forward's own (detached) log-probs.

        True in training when the generation batch is a single micro-batch used once (`steps_per_generation=1`,
        `num_iterations=1`) and TRL computed no old log-probs: the loss forward then runs on the very parameters that
        sampled, so a separate no-grad forward would give the same values. Not with `off_policy_mask_threshold`, whose
        mask (computed before the weights could be) needs the advantages.
        """
        return (
            self.model.training
            and self.args.steps_per_generation == 1
            and self.num_iterations == 1
            and self.off_policy_mask_threshold is None
        )

    def _weight_generation_batch(self, scored: _ScoredBatch, old_per_token_logps: torch.Tensor) -> dict:
        """The generation batch's weights, per-token advantages, routes and token counts from π_old (this process's
        rows, in generation order); logs the generation batch's metrics. Returns the entries of the micro-batch inputs.
        """
        args = self.args
        mask = scored.mask
        old_per_token_logps = torch.where(mask > 0, old_per_token_logps.float(), 0.0)
        signal = distillation_signal(scored.teacher_logps, old_per_token_logps, args.distillation_advantage_clip)
        tokens = mask.sum(1)
        lengths = tokens.clamp(min=1.0)
        rows = RowSummary(
            student_seq_logps=old_per_token_logps.sum(1) / lengths,
            teacher_seq_logps=scored.teacher_logps.sum(1) / lengths,
            nonfinite_teacher=scored.nonfinite_teacher,
            mle=scored.mle,
            opd=scored.opd,
            tokens=tokens,
            teacher_kl_sum=((old_per_token_logps - scored.teacher_logps) * mask).sum(1),
            signal_mean=(signal * mask).sum(1) / lengths,
            score_seconds=scored.score_seconds,
            offload_seconds=scored.offload_seconds,
        ).gathered(self.accelerator.gather)
        nonfinite = rows.nonfinite_teacher.bool()
        mle, opd = rows.mle.bool(), rows.opd.bool() & ~nonfinite  # a non-finite score takes its rollout off the path
        group_size = self.num_generations if self.model.training else self.num_generations_eval
        weights = path_weights(
            rows.student_seq_logps,
            rows.teacher_seq_logps,
            mle,
            opd,
            group_size,
            routing=args.routing,
            **args.weight_options,
        )
        local = slice(self.accelerator.process_index * len(tokens), (self.accelerator.process_index + 1) * len(tokens))
        self._log_generation_batch(group_size, rows, mle, opd, weights, scored_on_opd=rows.opd.sum())
        # Global token counts, the same on every process (the gathered counts are whole numbers: exact in float32).
        num_tokens_mle, num_tokens_opd = (rows.tokens * mle).sum(), (rows.tokens * opd).sum()
        return {
            "advantages": per_token_advantages(weights[local], signal, mle[local], opd[local]).detach(),
            "scope_route": route_ids(mle, opd)[local],
            "scope_weight": weights[local],
            "scope_num_tokens_mle": num_tokens_mle,
            "scope_num_tokens_opd": num_tokens_opd,
            "num_items_in_batch": num_tokens_mle + num_tokens_opd,  # every routed token: the normaliser
        }

    def _log_generation_batch(self, group_size, rows: RowSummary, mle, opd, weights, scored_on_opd) -> None:
        """The generation batch's metrics and completions-table columns, in one host transfer; applies
        `nonfinite_teacher_scores`."""
        stats = routing_statistics(group_size, mle, opd, weights, rows)
        stats["scope/frac_nonfinite_teacher"] = rows.nonfinite_teacher.mean()
        stats["teacher/score_time"] = rows.score_seconds.max()
        if self.args.teacher_offload:
            stats["teacher/offload_time"] = rows.offload_seconds.max()
        stats["num_nonfinite"], stats["num_scored"] = rows.nonfinite_teacher.sum(), scored_on_opd
        # The completions table's columns: route, weight, and in TRL's `advantage` column what SCOPE trains on
        # instead of GRPO's outcome advantage (the weight on the MLE path, the mean per-token advantage on the OPD
        # path, 0 for an excluded rollout).
        route = route_ids(mle, opd)
        trained_on = torch.where(mle, weights, torch.where(opd, weights * rows.signal_mean, 0.0))
        columns = torch.stack([route.float(), weights, trained_on])
        flat = torch.cat([torch.stack([value.float() for value in stats.values()]), columns.flatten()]).tolist()
        values = dict(zip(stats, flat[: len(stats)]))
        num_nonfinite, num_scored = int(values.pop("num_nonfinite")), int(values.pop("num_scored"))
        if num_nonfinite:
            self._on_nonfinite_teacher_scores(num_nonfinite, num_scored)
        metrics = self._metrics["train" if self.model.training else "eval"]
        for name, value in values.items():
            metrics[name].append(value)
        count = route.numel()
        self._log_completion_columns(*(flat[len(stats) + i * count : len(stats) + (i + 1) * count] for i in range(3)))

    def _on_nonfinite_teacher_scores(self, count: int, scored: int) -> None:
        """Apply `nonfinite_teacher_scores` to a generation batch in which `count` scored rollouts are non-finite."""
        message = (
            f"The teacher gave a non-finite log-prob (-inf, NaN, or at most {VLLM_NEGATIVE_INFINITY}) to a loss token "
            f"of {count} of the {scored} rollouts it scored at step {self.state.global_step} (a token it gives "
            "probability 0, an id outside its vocabulary, or an fp16 overflow)."
        )
        if self.args.nonfinite_teacher_scores == "error":
            raise ValueError(
                f"{message} Such a score would make the loss NaN. Check the teacher's dtype and vocabulary, or set "
                "nonfinite_teacher_scores='exclude' to drop those rollouts from the OPD path."
            )
        if not self._warned_nonfinite_teacher:
            warnings.warn(
                f"{message} Those rollouts leave the OPD path (nonfinite_teacher_scores='exclude'); "
                "scope/frac_nonfinite_teacher counts them at every step. This warning is shown once.",
                UserWarning,
                stacklevel=2,
            )
            self._warned_nonfinite_teacher = True

    def _log_completion_columns(self, routes: list[float], weights: list[float], trained_on: list[float]) -> None:
        """The completions table (`log_completions=True`): SCOPE's route and weight per rollout of the global batch,
        and `trained_on` in place of the outcome advantages TRL has just appended to its `advantage` column."""
        # TRL's buffers keep the last generation batch's worth of rows: an evaluation batch can be larger, so only
        # the rows it kept (the last ones) are rewritten.
        logged = self._logs["advantages"]
        kept = min(len(logged), len(trained_on))
        for offset, value in enumerate(trained_on[len(trained_on) - kept :]):
            logged[len(logged) - kept + offset] = value
        self._logs["extra"]["scope_route"].extend(ROUTE_NAMES[int(r)] for r in routes)
        self._logs["extra"]["scope_weight"].extend(weights)

    # ---------------------------------------------------------------------------------------------------------------
    # The loss
    # ---------------------------------------------------------------------------------------------------------------

    def _policy_batch(self, model, inputs) -> PolicyBatch:
        batch = super()._policy_batch(model, inputs)
        if _ScoredBatch.PREFIX + "position" in inputs:  # π_old is this forward's (`_old_logps_from_loss_forward`)
            self._weight_in_loss_forward(batch, inputs)
        # Excluded rollouts (no verdict, no loss token, a non-finite teacher score) take no part in any term, metric
        # or count.
        batch.mask = batch.mask * (inputs["scope_route"] != EXCLUDED).unsqueeze(1)
        # The OPD path's surrogate acts on tokens beyond the trust region once the ratio departs from 1
        # (num_iterations > 1, steps_per_generation > gradient_accumulation_steps): GRPO's clip_ratio/* metrics.
        opd_tokens = batch.mask * (inputs["scope_route"] == OPD).unsqueeze(1)
        low, high = boundary_regions(batch.log_ratio, batch.advantages, self.epsilon_low, self.epsilon_high)
        self._log_boundary_metrics(low, high, opd_tokens, batch.mode)
        return batch

    def _weight_in_loss_forward(self, batch: PolicyBatch, inputs: dict) -> None:
        """Weight the generation batch with this micro-batch's own log-probs as π_old, then fill `inputs` and `batch`
        as `_generate_and_score_completions` would have. TRL shuffled the rows; the scored rows carried in `inputs`
        say where each stood in the generation batch, whose order the prompt groups follow."""
        order = inputs[_ScoredBatch.PREFIX + "position"]
        scored = _ScoredBatch.from_inputs(inputs)
        old_per_token_logps = torch.empty_like(batch.per_token_logps).index_copy_(
            0, order, batch.per_token_logps.detach()
        )
        weighted = self._weight_generation_batch(scored, old_per_token_logps)
        for key, value in weighted.items():
            inputs[key] = value[order] if value.dim() > 0 else value
        batch.advantages = inputs["advantages"]

    def _surrogate_loss(self, log_ratio: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
        """Per-token loss of the OPD path (and of the outcome term) under the selected surrogate."""
        if self.args.policy_surrogate == "dgpo":
            terms = dgpo_terms(
                log_ratio, advantages, self.epsilon_low, self.epsilon_high, n=self.args.dgpo_n, m=self.args.dgpo_m
            )
            return -advantages * terms.surrogate
        return ppo_clip_loss(log_ratio, advantages, self.epsilon_low, self.epsilon_high)

    def _per_token_policy_loss(self, batch: PolicyBatch, inputs: dict) -> torch.Tensor:
        """SCOPE's objective (paper Eq. 6) per token, pre-scaled so that one global token normaliser serves all terms.

        The base class divides the summed loss by norm(N_all), the routed token count; a term whose divisor is
        norm(N_c) or norm(N_w) (`scope_loss_aggregation`) is therefore scaled here by N_all / N_c or N_all / N_w.
        """
        args = self.args
        route = inputs["scope_route"].unsqueeze(1)
        on_mle, on_opd = (route == MLE).float(), (route == OPD).float()
        num_all = inputs["num_items_in_batch"].clamp(min=1.0)
        num_mle = inputs["scope_num_tokens_mle"].clamp(min=1.0)
        num_opd = inputs["scope_num_tokens_opd"].clamp(min=1.0)
        mle_scale = 1.0 if args.scope_loss_aggregation == "global" else num_all / num_mle
        opd_scale = num_all / num_opd if args.scope_loss_aggregation == "per_path" else 1.0

        # MLE path: plain weighted NLL, -w_stu · log π_θ (no ratio, no clip), as in the official code.
        mle = -batch.advantages * batch.per_token_logps * on_mle * (args.mle_coef * mle_scale)
        # OPD path: the distillation advantage through the selected surrogate.
        opd = self._surrogate_loss(batch.log_ratio, batch.advantages) * on_opd * (args.opd_coef * opd_scale)
        per_token_loss = mle + opd
        if args.outcome_advantage_coef > 0:
            outcome = inputs["outcome_advantages"].unsqueeze(1)
            per_token_loss = per_token_loss + args.outcome_advantage_coef * self._surrogate_loss(
                batch.log_ratio, outcome
            ) * (on_mle + on_opd)

        normalizer = global_token_normalizer(
            inputs["num_items_in_batch"],
            self.accelerator.num_processes,
            self._accumulation_steps(batch.training),
            args.steps_per_generation,
            training=batch.training,
        )
        terms = torch.stack([(term.detach() * batch.mask).sum() for term in (mle, opd)]) / normalizer
        mle_loss, opd_loss = self.accelerator.gather(terms).view(-1, 2).mean(0).tolist()  # one collective, one sync
        metrics = self._metrics[batch.mode]
        metrics["scope/mle_loss"].append(mle_loss)
        metrics["scope/opd_loss"].append(opd_loss)
        return per_token_loss
