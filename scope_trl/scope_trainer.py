"""`SCOPETrainer`: correctness-routed, perplexity-weighted on-policy distillation inside TRL's GRPO pipeline."""

from __future__ import annotations

import contextlib
import json
import os
import textwrap
import time
import warnings
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, ProcessorMixin
from transformers.trainer_utils import get_last_checkpoint
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id

from .aggregation import global_token_normalizer
from .checks import check_model_reference
from .losses import boundary_regions, dgpo_terms, ppo_clip_loss
from .scope_config import SCOPEConfig
from .surrogate_trainer import PolicyBatch, SurrogateGRPOTrainer
from .teacher import (
    VLLM_NEGATIVE_INFINITY,
    check_resumed_teacher,
    check_tokenizers_before_loading,
    load_teacher,
    weights_fingerprint,
)
from .weights import dual_path_weights


# Route of a rollout, as stored per row in the generation batch (`scope_path`).
EXCLUDED, CORRECT, INCORRECT = 0, 1, 2
ROUTE_NAMES = {EXCLUDED: "excluded", CORRECT: "mle", INCORRECT: "opd"}


@dataclass
class _ScoredBatch:
    """A generation batch routed and scored by the teacher, waiting for π_old to be weighed. Tensors are this
    process's rows in generation order (B, T), except the routing booleans, which are global (N,)."""

    mode: str
    group_size: int
    process_slice: slice
    mask: torch.Tensor
    loss_token: torch.Tensor
    teacher_logps: torch.Tensor
    local_nonfinite: torch.Tensor
    correct: torch.Tensor
    incorrect: torch.Tensor
    valid: torch.Tensor
    seconds: tuple[float, float]  # teacher scoring and host-device transfer, this process


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
      happen at generation, the weights and advantages in that loss forward (`_weigh_with_loss_forward`). Else one
      no-grad student forward is made here, once per generation batch.
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
        self._refuse_multimodal(kwargs.get("processing_class"))  # before loading anything, when it is given
        if isinstance(teacher, str) and server_url is None:
            check_model_reference(teacher, "teacher", "teacher_model / teacher_model_name_or_path")
        if isinstance(teacher, str):
            check_tokenizers_before_loading(model, teacher, kwargs.get("processing_class"), args)
        super().__init__(model, reward_funcs, args=args, **kwargs)
        self._refuse_multimodal(self.processing_class)

        self._verifier_index = self._resolve_verifier(args.correctness_reward)
        self._warn_unused_rewards()
        self._last_rewards_per_func = None
        self._warned_nonfinite_teacher = False
        self._pending_batch: _ScoredBatch | None = None  # scored, waiting for the loss forward's π_old
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
        self.teacher_record = self._teacher_record()

    @property
    def teacher_model(self) -> torch.nn.Module | None:
        """The prepared teacher in the training processes; None when a server scores."""
        return self.teacher.model

    # ---------------------------------------------------------------------------------------------------------------
    # Construction
    # ---------------------------------------------------------------------------------------------------------------

    @staticmethod
    def _refuse_multimodal(processing_class) -> None:
        if isinstance(processing_class, ProcessorMixin):
            raise ValueError(
                f"SCOPETrainer does not support vision-language models ({type(processing_class).__name__}): the "
                "behaviour and teacher forwards see token ids only, so π_old, the perplexity weights and the "
                "teacher's scores would ignore the images that the loss forward sees. Use a text-only student and "
                "teacher (and a tokenizer as processing_class)."
            )

    def _resolve_verifier(self, correctness_reward: str | None) -> int:
        names = self.reward_func_names
        if correctness_reward is None:
            return 0
        if correctness_reward in names:
            return names.index(correctness_reward)
        if str(correctness_reward).isdigit() and int(correctness_reward) < len(names):
            return int(correctness_reward)
        raise ValueError(
            f"correctness_reward={correctness_reward!r} names no reward function of this trainer. Use one of the names "
            f"{names} or a position from 0 to {len(names) - 1}."
        )

    def _warn_unused_rewards(self) -> None:
        """SCOPE trains on the verifier's routing; the other reward functions act only through the outcome term. Say so
        at construction rather than let a format reward, say, be computed, logged and silently never trained on."""
        names = self.reward_func_names
        if len(names) < 2 or self.args.outcome_advantage_coef > 0:
            return
        verifier = names[self._verifier_index]
        others = [name for index, name in enumerate(names) if index != self._verifier_index]
        if not self.args.routing:
            message = f"routing=False distils every rollout: none of the reward functions {names} trains"
        else:
            chosen = (
                "correctness_reward"
                if self.args.correctness_reward is not None
                else "the first reward function; correctness_reward chooses another"
            )
            message = (
                f"SCOPE routes rollouts on the verifier {verifier!r} ({chosen}); the other reward functions {others} "
                "are computed and logged but train only through outcome_advantage_coef > 0 (GRPO's outcome advantage, "
                "weighted by reward_weights), which is 0"
            )
        warnings.warn(f"{message}.", UserWarning, stacklevel=3)

    def _teacher_record(self) -> dict:
        """What identifies the teacher, written into every checkpoint and the model card."""
        placement = self.teacher.record()
        record = {"name_or_path": self.teacher.name, "revision": self.args.teacher_model_revision}
        record.update(commit_hash=placement["commit_hash"], dtype=placement["dtype"])
        record["fingerprint"] = weights_fingerprint(self.teacher.name)
        record["temperature"] = self.args.teacher_temperature
        if "server_url" in placement:
            record["server_url"] = placement["server_url"]
        return record

    # ---------------------------------------------------------------------------------------------------------------
    # The teacher's identity in checkpoints, on resume and in the model card
    # ---------------------------------------------------------------------------------------------------------------

    TEACHER_RECORD_NAME = "scope_teacher.json"

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        checkpoint = resume_from_checkpoint
        if isinstance(checkpoint, bool) and checkpoint:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        if checkpoint:
            check_resumed_teacher(checkpoint, self.TEACHER_RECORD_NAME, self.teacher_record, self.args)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _write_teacher_record(self, directory: str) -> None:
        if self.args.should_save:
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, self.TEACHER_RECORD_NAME), "w") as f:
                json.dump(self.teacher_record, f, indent=2)

    def _save(self, output_dir: str | None = None, state_dict=None):
        # Every save goes through here: the final model and each checkpoint (under DeepSpeed too).
        super()._save(output_dir, state_dict)
        self._write_teacher_record(output_dir if output_dir is not None else self.args.output_dir)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        card = os.path.join(self.args.output_dir, "README.md")
        if not self.is_world_process_zero() or not os.path.isfile(card):
            return
        record = self.teacher_record
        lines = ["", "## Teacher", "", "Trained by SCOPE with this teacher (also in `scope_teacher.json`):", ""]
        lines += [f"- {key}: `{value}`" for key, value in record.items() if value is not None]
        with open(card, "a") as f:
            f.write("\n".join(lines) + "\n")

    # ---------------------------------------------------------------------------------------------------------------
    # Once per generation batch: route, score with the teacher, weight, build per-token advantages
    # ---------------------------------------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards_per_func = rewards  # (N_global, n_funcs), gathered; NaN where a function returned None
        return rewards

    def _route(self, rewards_per_func: torch.Tensor, has_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(correct, valid) booleans over the global batch, from the verifier column of the gathered rewards.

        A rollout is valid when it has at least one loss token (`has_tokens`: truncated completions under
        `mask_truncated_completions=True`, empty completions and fully tool-masked ones have none) and, with routing,
        its verifier did not return None. Invalid rollouts belong to no path, subset, count or metric (§13.5).
        """
        verifier = rewards_per_func[:, self._verifier_index]
        if not self.args.routing:  # plain OPD: the verifier is not consulted, every rollout with tokens is distilled
            return torch.zeros_like(has_tokens), has_tokens
        valid = has_tokens & ~torch.isnan(verifier)
        return valid & (verifier >= self.args.correctness_threshold), valid

    def _score_with_teacher(self, input_ids, attention_mask, logits_to_keep, rows, batch_size) -> torch.Tensor:
        """Teacher log-probs of the completion tokens of the selected local `rows` (B, C); 0 on the other rows, -inf
        where the teacher cannot score a token. Called on every process (some placements score collectively)."""
        return self.teacher.score(input_ids, attention_mask, logits_to_keep, rows, batch_size)

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        args = self.args
        training = self.model.training
        mode = "train" if training else "eval"
        group_size = self.num_generations if training else self.num_generations_eval
        batch_size = args.per_device_train_batch_size if training else args.per_device_eval_batch_size

        completion_ids, completion_mask = out["completion_ids"], out["completion_mask"]
        local_rows, logits_to_keep = completion_ids.shape
        mask = completion_mask if "tool_mask" not in out else completion_mask * out["tool_mask"]
        mask = mask.float()
        loss_token = mask > 0
        rank = self.accelerator.process_index
        process_slice = slice(rank * local_rows, (rank + 1) * local_rows)
        input_ids = torch.cat([out["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([out["prompt_mask"], completion_mask], dim=1)

        has_tokens = self.accelerator.gather(loss_token.any(1))
        correct, valid = self._route(self._last_rewards_per_func, has_tokens)
        incorrect = valid & ~correct
        if training and has_tokens.any() and not valid.any():
            verifier = self.reward_func_names[self._verifier_index]
            self._warn_untrainable(
                f"the verifier {verifier!r} returned None for every rollout, which excludes them all"
            )

        start = time.perf_counter()
        teacher_logps = self._score_with_teacher(
            input_ids, attention_mask, logits_to_keep, incorrect[process_slice], batch_size
        )
        score_time = time.perf_counter() - start
        # A non-finite teacher score never reaches the loss: its rollout leaves the distillation path (or we stop).
        # A log-prob at or below vLLM's stand-in for -inf counts too, whichever placement scored it, so that a served
        # and an in-process teacher route the same rollouts (NaN fails the comparison as well).
        local_nonfinite = (loss_token & ~(teacher_logps > VLLM_NEGATIVE_INFINITY)).any(1)
        teacher_logps = torch.where(loss_token & ~local_nonfinite.unsqueeze(1), teacher_logps, 0.0)
        scored = _ScoredBatch(
            mode=mode,
            group_size=group_size,
            process_slice=process_slice,
            mask=mask,
            loss_token=loss_token,
            teacher_logps=teacher_logps,
            local_nonfinite=local_nonfinite,
            correct=correct,
            incorrect=incorrect,
            valid=valid,
            seconds=(score_time, self.teacher.offload_seconds),
        )
        out["outcome_advantages"] = out["advantages"]  # GRPO's (B,), used only when outcome_advantage_coef > 0

        # π_old: TRL's old log-probs when it computed them; else the loss forward's own log-probs when this generation
        # batch is one on-policy micro-batch (π_old = π_θ there, so the weights wait for that forward); else one
        # no-grad forward of the current student, here.
        behaviour_logps = out.get("old_per_token_logps")
        if behaviour_logps is None and self._behaviour_from_loss_forward():
            self._pending_batch = scored
            out["advantages"] = torch.zeros_like(mask)  # replaced in `_policy_batch`, before anything reads it
            out["scope_row"] = torch.arange(local_rows, device=mask.device)  # follows TRL's shuffle of the rows
            return out
        if behaviour_logps is None:
            checkpointing = (
                disable_gradient_checkpointing(self.model, args.gradient_checkpointing_kwargs)
                if args.gradient_checkpointing
                else contextlib.nullcontext()  # the context walks every module: skip it when there is nothing to undo
            )
            with torch.no_grad(), checkpointing:
                behaviour_logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
                )
        out.update(self._weigh_generation_batch(scored, behaviour_logps))
        return out

    def _behaviour_from_loss_forward(self) -> bool:
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

    def _weigh_generation_batch(self, scored: _ScoredBatch, behaviour_logps: torch.Tensor) -> dict:
        """The generation batch's weights, per-token advantages, routes and token counts from π_old (this process's
        rows, in generation order); logs the generation batch's metrics. Returns the entries of the micro-batch inputs.
        """
        args = self.args
        mask, loss_token, teacher_logps = scored.mask, scored.loss_token, scored.teacher_logps
        process_slice = scored.process_slice
        behaviour_logps = torch.where(loss_token, behaviour_logps.float(), 0.0)

        # The per-token distillation signal, before the teacher weight multiplies it.
        log_ratio_to_teacher = teacher_logps - behaviour_logps
        if args.distillation_advantage_clip is not None:
            bound = args.distillation_advantage_clip
            log_ratio_to_teacher = log_ratio_to_teacher.clamp(-bound, bound)

        # Everything the weights, counts and metrics need from the other processes, in one collective: per row, the
        # mean student and teacher log-probs, the non-finite flag, the loss-token count, the summed log π_old − log π_T
        # (the teacher KL), the mean distillation signal (completions table), this process's scoring seconds.
        row_tokens = mask.sum(1)
        lengths = row_tokens.clamp(min=1.0)
        score_time, offload_time = scored.seconds
        per_row = torch.stack(
            [
                behaviour_logps.sum(1) / lengths,
                teacher_logps.sum(1) / lengths,
                scored.local_nonfinite.float(),
                row_tokens,
                ((behaviour_logps - teacher_logps) * mask).sum(1),
                (log_ratio_to_teacher * mask).sum(1) / lengths,
                torch.full_like(row_tokens, score_time),
                torch.full_like(row_tokens, offload_time),
            ],
            dim=1,
        )
        gathered = self.accelerator.gather(per_row).unbind(1)
        student_seq_logps, teacher_seq_logps, nonfinite, all_row_tokens, row_kl, mean_signal = gathered[:6]
        score_times, offload_times = gathered[6:]
        nonfinite = nonfinite.bool()
        correct = scored.correct
        incorrect, valid = scored.incorrect & ~nonfinite, scored.valid & ~nonfinite
        local_correct, local_incorrect = correct[process_slice], incorrect[process_slice]

        if args.routing:
            weights = dual_path_weights(
                student_seq_logps,
                teacher_seq_logps,
                correct,
                scored.group_size,
                tau=args.scope_tau,
                valid=valid,
                student_direction=args.student_weight_direction,
                teacher_direction=args.teacher_weight_direction,
                normalization=args.weight_normalization,
                use_student_weights=args.use_student_weights,
                use_teacher_weights=args.use_teacher_weights,
            )
        else:
            weights = valid.float()  # plain OPD: every rollout weighs 1
        local_weights = weights[process_slice]

        # Per-token advantages, constant for every micro-batch and iteration of this generation batch.
        distillation = local_weights.unsqueeze(1) * log_ratio_to_teacher
        reinforcement = local_weights.unsqueeze(1).expand_as(distillation)
        advantages = torch.where(
            local_correct.unsqueeze(1), reinforcement, torch.where(local_incorrect.unsqueeze(1), distillation, 0.0)
        )
        path = torch.where(local_correct, CORRECT, torch.where(local_incorrect, INCORRECT, EXCLUDED))
        # Global token counts, the same on every process (the gathered counts are whole numbers: exact in float32).
        num_tokens_correct = (all_row_tokens * correct).sum()
        num_tokens_incorrect = (all_row_tokens * incorrect).sum()

        # One host transfer for every metric of the generation batch.
        stats = self._routing_stats(
            scored.group_size, correct, incorrect, weights, student_seq_logps, teacher_seq_logps
        )
        # Sampled-token reverse-KL estimate on the distillation path: mean of log π_old − log π_T over its tokens.
        stats["scope/teacher_kl"] = (row_kl * incorrect).sum() / num_tokens_incorrect  # NaN when nothing is distilled
        stats["scope/frac_nonfinite_teacher"] = nonfinite.float().mean()
        stats["teacher/score_time"] = score_times.max()
        if args.teacher_offload:
            stats["teacher/offload_time"] = offload_times.max()
        stats["num_nonfinite"], stats["num_scored"] = nonfinite.sum(), scored.incorrect.sum()
        # The completions table's columns: route, weight, and in TRL's `advantage` column what SCOPE trains on
        # instead of GRPO's outcome advantage (the weight on the MLE path, the mean per-token advantage on the
        # distillation path, 0 for an excluded rollout).
        route = torch.where(correct, CORRECT, torch.where(incorrect, INCORRECT, EXCLUDED))
        trained_on = torch.where(correct, weights, torch.where(incorrect, weights * mean_signal, 0.0))
        columns = torch.stack([route.float(), weights, trained_on])
        flat = torch.cat([torch.stack([value.float() for value in stats.values()]), columns.flatten()]).tolist()
        values = dict(zip(stats, flat[: len(stats)]))
        num_nonfinite, num_scored = int(values.pop("num_nonfinite")), int(values.pop("num_scored"))
        if num_nonfinite:
            self._on_nonfinite_teacher_scores(num_nonfinite, num_scored)
        metrics = self._metrics[scored.mode]
        for name, value in values.items():
            metrics[name].append(value)
        rows = route.numel()
        self._log_completion_columns(*(flat[len(stats) + i * rows : len(stats) + (i + 1) * rows] for i in range(3)))
        return {
            "advantages": advantages.detach(),
            "scope_path": path,
            "scope_weight": local_weights,
            "scope_num_tokens_correct": num_tokens_correct,
            "scope_num_tokens_incorrect": num_tokens_incorrect,
            "num_items_in_batch": num_tokens_correct + num_tokens_incorrect,  # every routed token: the normaliser
        }

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
                "nonfinite_teacher_scores='exclude' to drop those rollouts from the distillation path."
            )
        if not self._warned_nonfinite_teacher:
            warnings.warn(
                f"{message} Those rollouts leave the distillation path (nonfinite_teacher_scores='exclude'); "
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

    @staticmethod
    def _routing_stats(group_size, correct, incorrect, weights, student_seq_logps, teacher_seq_logps) -> dict:
        """Routing and weight statistics of a generation batch as 0-d tensors (NaN for an empty subset), from global
        tensors (the same on every process); no host transfer here."""
        nan = torch.tensor(float("nan"), device=weights.device)

        def subset_mean(values, members):
            return torch.where(members, values, 0.0).sum() / members.sum()  # 0 / 0 = NaN for an empty subset

        def subset_extreme(values, members, reduce, fill):
            return torch.where(members.any(), reduce(torch.where(members, values, fill)), nan)

        student_ppl, teacher_ppl = torch.exp(-student_seq_logps), torch.exp(-teacher_seq_logps)
        return {
            "scope/frac_correct": correct.float().mean(),
            "scope/frac_incorrect": incorrect.float().mean(),
            "scope/frac_excluded": (~(correct | incorrect)).float().mean(),
            "scope/frac_groups_all_correct": correct.view(-1, group_size).all(1).float().mean(),
            "scope/frac_groups_all_incorrect": incorrect.view(-1, group_size).all(1).float().mean(),
            "scope/student_ppl_correct_mean": subset_mean(student_ppl, correct),
            "scope/teacher_ppl_incorrect_mean": subset_mean(teacher_ppl, incorrect),
            "scope/student_weight_max": subset_extreme(weights, correct, torch.max, float("-inf")),
            "scope/student_weight_min": subset_extreme(weights, correct, torch.min, float("inf")),
            "scope/teacher_weight_max": subset_extreme(weights, incorrect, torch.max, float("-inf")),
            "scope/teacher_weight_min": subset_extreme(weights, incorrect, torch.min, float("inf")),
        }

    # ---------------------------------------------------------------------------------------------------------------
    # The loss
    # ---------------------------------------------------------------------------------------------------------------

    def _policy_batch(self, model, inputs) -> PolicyBatch:
        batch = super()._policy_batch(model, inputs)
        if "scope_row" in inputs:  # π_old is this forward's (`_behaviour_from_loss_forward`): weigh the batch now
            self._weigh_with_loss_forward(batch, inputs)
        # Excluded rollouts (no verdict, no loss token, a non-finite teacher score) take no part in any term, metric
        # or count.
        batch.mask = batch.mask * (inputs["scope_path"] != EXCLUDED).unsqueeze(1)
        # The distillation path's surrogate acts on tokens beyond the trust region once the ratio departs from 1
        # (num_iterations > 1, steps_per_generation > gradient_accumulation_steps): GRPO's clip_ratio/* metrics.
        distillation_tokens = batch.mask * (inputs["scope_path"] == INCORRECT).unsqueeze(1)
        low, high = boundary_regions(batch.log_ratio, batch.advantages, self.epsilon_low, self.epsilon_high)
        self._log_boundary_metrics(low, high, distillation_tokens, batch.mode)
        return batch

    def _weigh_with_loss_forward(self, batch: PolicyBatch, inputs: dict) -> None:
        """Complete the pending generation batch with this micro-batch's own log-probs as π_old, then fill `inputs`
        and `batch` as `_generate_and_score_completions` would have. TRL shuffled the rows: `scope_row` holds each
        row's position in the generation batch, whose order the group layout and the pending tensors follow."""
        order = inputs.pop("scope_row")
        scored, self._pending_batch = self._pending_batch, None
        behaviour_logps = torch.empty_like(batch.per_token_logps).index_copy_(0, order, batch.per_token_logps.detach())
        weighed = self._weigh_generation_batch(scored, behaviour_logps)
        for key, value in weighed.items():
            inputs[key] = value[order] if value.dim() > 0 else value
        batch.advantages = inputs["advantages"]

    def _surrogate_loss(self, log_ratio: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
        """Per-token loss of the distillation path (and of the outcome term) under the selected surrogate."""
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
        path = inputs["scope_path"].unsqueeze(1)
        correct, incorrect = (path == CORRECT).float(), (path == INCORRECT).float()
        num_all = inputs["num_items_in_batch"].clamp(min=1.0)
        num_correct = inputs["scope_num_tokens_correct"].clamp(min=1.0)
        num_incorrect = inputs["scope_num_tokens_incorrect"].clamp(min=1.0)
        mle_scale = 1.0 if args.scope_loss_aggregation == "global" else num_all / num_correct
        opd_scale = num_all / num_incorrect if args.scope_loss_aggregation == "per_path" else 1.0

        # Correct path: plain weighted NLL, -w_stu · log π_θ (no ratio, no clip), as in the official code.
        mle = -batch.advantages * batch.per_token_logps * correct * (args.mle_coef * mle_scale)
        # Incorrect path: the distillation advantage through the selected surrogate.
        opd = self._surrogate_loss(batch.log_ratio, batch.advantages) * incorrect * (args.opd_coef * opd_scale)
        per_token_loss = mle + opd
        if args.outcome_advantage_coef > 0:
            outcome = inputs["outcome_advantages"].unsqueeze(1)
            per_token_loss = per_token_loss + args.outcome_advantage_coef * self._surrogate_loss(
                batch.log_ratio, outcome
            ) * (correct + incorrect)

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
