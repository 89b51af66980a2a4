"""Configuration of `SCOPETrainer`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from .guards import GuardConfigMixin
from .losses import check_dgpo_exponents, check_trust_region
from .weights import DIRECTIONS, NORMALIZATIONS


SCOPE_AGGREGATIONS = ("official", "per_path", "global")
POLICY_SURROGATES = ("ppo", "dgpo")
NONFINITE_TEACHER_POLICIES = ("exclude", "error")


@dataclass
class SCOPEConfig(GuardConfigMixin, GRPOConfig):
    r"""
    Configuration class for the [`SCOPETrainer`].

    [`SCOPEConfig`] inherits every parameter of [`~trl.GRPOConfig`] (generation, vLLM, batching, logging, ...) and adds
    the teacher, the routing and the Dual-Path Adaptive Weighting of [SCOPE](https://huggingface.co/papers/2604.10688).
    GRPO defaults that already match the paper are kept: no reference model (`beta=0.0`), one iteration per
    generation batch (`num_iterations=1`), no entropy bonus. Inherited parameters keep their GRPO meaning, except:

    - `loss_type` does not apply: SCOPE owns its aggregation (`scope_loss_aggregation`). Only its default `"dapo"`
      is accepted, so a config copied from GRPO with another value fails loudly instead of being silently ignored.
    - `importance_sampling_level` must be `"token"`: the distillation advantage is per token.
    - `delta` and `use_liger_kernel` are rejected, as in [`DGPOConfig`].
    - `epsilon` / `epsilon_high` are the clip range of the OPD path's surrogate.

    Parameters:
        > Parameters that control the teacher

        teacher_model_name_or_path (`str`, *optional*):
            Hub name or local path of the teacher, loaded like the student. May be left `None` when a model instance
            is passed to the trainer as `teacher_model`; the trainer refuses to start without a teacher. The teacher
            must use the student's tokenizer (same token-to-id map); a larger, padded embedding matrix is fine.
        teacher_model_revision (`str`, *optional*):
            Revision (branch, tag or commit) of the teacher.
        teacher_model_init_kwargs (`str` or `dict[str, Any]`, *optional*):
            Keyword arguments for `from_pretrained` when the teacher is given by name. `dtype` defaults to the
            training precision: `bfloat16` with `bf16=True`, `float16` with `fp16=True`, else the student's dtype (a
            teacher loaded in float32 by default would cost twice the memory of a bf16 one on every GPU).
        teacher_temperature (`float`, *optional*, defaults to `1.0`):
            Temperature applied to the teacher's logits when scoring (the official code scores at 1.0). Student
            log-probs are always at the sampling `temperature`, as in TRL.
        nonfinite_teacher_scores (`str`, *optional*, defaults to `"exclude"`):
            What a rollout whose teacher log-prob is `-inf` or `NaN` on one of its loss tokens does (a token the
            teacher gives probability 0, an id outside the teacher's vocabulary, an fp16 overflow). `"exclude"`: the
            rollout leaves the OPD path (no loss, no weight, no count; `scope/frac_nonfinite_teacher` counts
            it and the first occurrence is warned about), so a non-finite score never reaches the loss. `"error"`:
            raise, naming the step and the number of rollouts.
        allow_teacher_change (`bool`, *optional*, defaults to `False`):
            Every checkpoint records its teacher (`scope_teacher.json`: name or path, revision, commit, dtype). Resuming
            from a checkpoint whose teacher differs from this run's raises an error naming both, unless this is `True`.
        teacher_offload (`bool`, *optional*, defaults to `False`):
            The teacher rests on CPU and moves to the accelerator once per generation batch to score the incorrect
            rollouts, then back: its memory is free during generation and the optimizer step, at the cost of one
            transfer each way per generation batch (`teacher/offload_time`). Not with DeepSpeed or FSDP.
        teacher_model_server_url (`str`, *optional*):
            Base URL of a vLLM server that hosts the teacher (`vllm serve <teacher>`, e.g. `"http://10.0.0.2:8000"`).
            The teacher is then not loaded in the training processes: each process sends the token ids of its
            incorrect rollouts to the server, which returns the teacher's log-prob of every sampled token (TRL's
            `VLLMClient.get_sequence_logprobs`). Overrides `teacher_model_server_host` and `teacher_model_server_port`.
            `teacher_model_name_or_path`, when also given, names the served teacher for the tokenizer check and the
            checkpoint record; it is not loaded. Needs `teacher_temperature=1.0` and `teacher_offload=False`.
        teacher_model_server_host (`str`, *optional*):
            Host of the teacher's vLLM server, used with `teacher_model_server_port` when `teacher_model_server_url`
            is not set. `None` with no URL: the teacher runs in the training processes.
        teacher_model_server_port (`int`, *optional*, defaults to `8000`):
            Port of the teacher's vLLM server, used with `teacher_model_server_host`.
        teacher_model_server_timeout (`float`, *optional*, defaults to `240.0`):
            Seconds to wait for the teacher's server to answer its health check at start-up before failing.
        teacher_model_server_request_timeout (`float`, *optional*, defaults to `300.0`):
            Seconds one scoring request may take (connecting, or waiting for the answer) before it counts as failed
            and is retried. A server that stalls therefore costs at most (1 + retries) times this, plus the back-off.
        teacher_model_server_max_retries (`int`, *optional*, defaults to `3`):
            Retries of a scoring request after a connection error, a timeout or a 5xx answer (500, 502, 503, 504): the
            first at once, then after 2, 4, ... seconds. When a request still fails, every training process stops
            with the same error, which names the failed process and the server's answer.

        > Parameters that control routing and the Dual-Path Adaptive Weighting

        correctness_reward (`str`, *optional*):
            The reward function that acts as verifier and routes rollouts: its name (as in the `rewards/<name>/mean`
            metric) or its position, e.g. `"0"`. Defaults to the first reward function. Other reward functions do not
            influence routing.
        correctness_threshold (`float`, *optional*, defaults to `1.0`):
            A rollout is correct when its verifier reward is >= this value. A verifier returning `None` excludes the
            rollout from both paths.
        routing (`bool`, *optional*, defaults to `True`):
            Route by correctness. `False` sends every rollout to the OPD path, unweighted, with no MLE term:
            plain on-policy distillation (the paper's OPD baseline).
        scope_tau (`float`, *optional*, defaults to `1.0`):
            DPAW temperature τ > 0 (the paper sweeps 0.5, 1, 2). Smaller values give more peaked weights.
        use_student_weights (`bool`, *optional*, defaults to `True`):
            Weight correct rollouts by the student's perplexity; `False` gives them weight 1.
        use_teacher_weights (`bool`, *optional*, defaults to `True`):
            Weight incorrect rollouts by the teacher's perplexity; `False` gives them weight 1.
        student_weight_direction (`str`, *optional*, defaults to `"paper"`):
            `"paper"` favours correct rollouts with HIGH student perplexity (Eq. 4); `"reversed"` favours low
            perplexity (what the released run scripts do).
        teacher_weight_direction (`str`, *optional*, defaults to `"paper"`):
            `"paper"` favours incorrect rollouts with LOW teacher perplexity (Eq. 5); `"reversed"` the opposite.
        weight_normalization (`str`, *optional*, defaults to `"mean"`):
            `"mean"`: weights average to 1 within each subset of a group (official code); `"sum"`: they sum to 1
            (the paper's softmax). A singleton subset gets 1 either way.

        > Parameters that control the loss

        policy_surrogate (`str`, *optional*, defaults to `"ppo"`):
            Surrogate of the OPD path (and of the optional outcome term): `"ppo"` (PPO clip with `epsilon` /
            `epsilon_high`) or `"dgpo"` (DGPO's soft clip with `dgpo_n` / `dgpo_m`). Both reduce to -A·∇log π at
            one update per generation batch. The MLE path is always plain weighted NLL (no ratio, no clip).
        dgpo_n (`float`, *optional*, defaults to `1.0`):
            DGPO's left decay exponent, used with `policy_surrogate="dgpo"`. Must be >= 0.
        dgpo_m (`float`, *optional*, defaults to `2.0`):
            DGPO's right root order, used with `policy_surrogate="dgpo"`. Must be >= 1.
        scope_loss_aggregation (`str`, *optional*, defaults to `"official"`):
            Token divisors of the two terms, from global token counts of the generation batch: `"official"` (OPD
            term over all routed tokens, MLE term over correct-path tokens, as the official code), `"per_path"` (each
            term over its own path's tokens) or `"global"` (both over all routed tokens: one token mean).
        mle_coef (`float`, *optional*, defaults to `1.0`):
            Coefficient of the MLE path's weighted MLE term, >= 0.
        opd_coef (`float`, *optional*, defaults to `1.0`):
            Coefficient of the OPD path's distillation term, >= 0.
        outcome_advantage_coef (`float`, *optional*, defaults to `0.0`):
            When > 0, GRPO's group-normalised outcome advantage times this coefficient is added to every routed
            rollout through the same surrogate: an RL + distillation hybrid. 0 is the paper's method.
        distillation_advantage_clip (`float`, *optional*):
            When set to c > 0, the per-token distillation signal log π_T − log π_old is clamped to [−c, c] before the
            teacher weight multiplies it. A near-deterministic teacher gives the student's wrong tokens log-probs of
            −10 to −15, so a few tokens dominate the update; verl offers similar clamps.
            `None` (default) leaves the paper's method unchanged.
        > Parameters that control the guards

        nonfinite_updates (`str`, *optional*, defaults to `"error"`):
            A NaN or infinite loss or gradient norm at an optimizer step: `"error"` raises `NonFiniteUpdateError`
            before the update (the weights stay as they were); `"skip"` drops that update, counts it in
            `nonfinite/skipped_steps` and keeps training (not supported under DeepSpeed). See `scope_trl.guards`.
    """

    _VALID_DICT_FIELDS = GRPOConfig._VALID_DICT_FIELDS + ["teacher_model_init_kwargs"]

    # Parameters that control the teacher
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub name or local path of the teacher. It must share the student's tokenizer. May be None when "
            "a model instance is passed to the trainer as `teacher_model`."
        },
    )
    teacher_model_revision: str | None = field(
        default=None,
        metadata={"help": "Revision of the teacher model (branch name, tag or commit hash)."},
    )
    teacher_model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `AutoModelForCausalLM.from_pretrained` when the teacher is given by name; "
            "`dtype` defaults to the training precision (bfloat16 with bf16=True, float16 with fp16=True, else the "
            "student's dtype)."
        },
    )
    teacher_temperature: float = field(
        default=1.0,
        metadata={"help": "Temperature applied to the teacher's logits when scoring the student's tokens (> 0)."},
    )
    nonfinite_teacher_scores: str = field(
        default="exclude",
        metadata={
            "help": "A rollout with a -inf or NaN teacher log-prob on a loss token: 'exclude' (it leaves the "
            "OPD path, counted in scope/frac_nonfinite_teacher, warned once) or 'error' (raise)."
        },
    )
    allow_teacher_change: bool = field(
        default=False,
        metadata={
            "help": "Allow resuming from a checkpoint recorded with another teacher (by default an error names both)."
        },
    )
    teacher_offload: bool = field(
        default=False,
        metadata={
            "help": "Keep the teacher on CPU between generation batches and move it to the accelerator only to score, "
            "once per generation batch: its memory is free during generation and the optimizer step, for one "
            "host-to-device transfer each way per generation batch. Not with DeepSpeed or FSDP, which place the "
            "teacher themselves (ZeRO-3 shards it instead)."
        },
    )
    teacher_model_server_url: str | None = field(
        default=None,
        metadata={
            "help": "Base URL of a vLLM server hosting the teacher (e.g. 'http://10.0.0.2:8000'). The teacher is then "
            "not loaded locally: the incorrect rollouts' token ids are scored by the server. Overrides "
            "teacher_model_server_host and teacher_model_server_port."
        },
    )
    teacher_model_server_host: str | None = field(
        default=None,
        metadata={
            "help": "Host of the teacher's vLLM server, used with teacher_model_server_port when "
            "teacher_model_server_url is not set. None and no URL: the teacher runs in the training processes."
        },
    )
    teacher_model_server_port: int = field(
        default=8000,
        metadata={"help": "Port of the teacher's vLLM server, used with teacher_model_server_host."},
    )
    teacher_model_server_timeout: float = field(
        default=240.0,
        metadata={"help": "Seconds to wait for the teacher's vLLM server to be up at start-up before failing."},
    )
    teacher_model_server_request_timeout: float = field(
        default=300.0,
        metadata={
            "help": "Seconds one scoring request to the teacher's vLLM server may take before it counts as failed "
            "and is retried."
        },
    )
    teacher_model_server_max_retries: int = field(
        default=3,
        metadata={
            "help": "Retries of a scoring request after a connection error, a timeout or a 5xx answer, with back-off "
            "(at once, then 2, 4, ... s). A request that still fails stops every training process with the same "
            "error."
        },
    )

    # Parameters that control routing and the Dual-Path Adaptive Weighting
    correctness_reward: str | None = field(
        default=None,
        metadata={
            "help": "Name or position (e.g. '0') of the reward function used as verifier for routing. Defaults to "
            "the first reward function."
        },
    )
    correctness_threshold: float = field(
        default=1.0,
        metadata={"help": "A rollout is correct when its verifier reward is >= this threshold."},
    )
    routing: bool = field(
        default=True,
        metadata={
            "help": "Route rollouts by correctness. False sends every rollout to the OPD path with weight 1 "
            "and no MLE term (plain on-policy distillation, the paper's OPD baseline)."
        },
    )
    scope_tau: float = field(
        default=1.0,
        metadata={"help": "Temperature of the dual-path adaptive weights (> 0). The paper uses 1.0."},
    )
    use_student_weights: bool = field(
        default=True,
        metadata={"help": "Weight correct rollouts by the student's perplexity (False: weight 1)."},
    )
    use_teacher_weights: bool = field(
        default=True,
        metadata={"help": "Weight incorrect rollouts by the teacher's perplexity (False: weight 1)."},
    )
    student_weight_direction: str = field(
        default="paper",
        metadata={
            "help": "'paper': favour correct rollouts with high student perplexity (Eq. 4). 'reversed': favour low "
            "perplexity, as the released run scripts do."
        },
    )
    teacher_weight_direction: str = field(
        default="paper",
        metadata={
            "help": "'paper': favour incorrect rollouts with low teacher perplexity (Eq. 5). 'reversed': the opposite."
        },
    )
    weight_normalization: str = field(
        default="mean",
        metadata={
            "help": "'mean': weights average to 1 within each subset of a group (official code). 'sum': they sum to "
            "1 (the paper's softmax)."
        },
    )

    # Parameters that control the loss
    policy_surrogate: str = field(
        default="ppo",
        metadata={
            "help": "Surrogate of the OPD path: 'ppo' (PPO clip with epsilon / epsilon_high) or 'dgpo' "
            "(DGPO soft clip with dgpo_n / dgpo_m)."
        },
    )
    dgpo_n: float = field(
        default=1.0,
        metadata={"help": "DGPO left decay exponent (>= 0), used with policy_surrogate='dgpo'."},
    )
    dgpo_m: float = field(
        default=2.0,
        metadata={"help": "DGPO right root order (>= 1), used with policy_surrogate='dgpo'."},
    )
    scope_loss_aggregation: str = field(
        default="official",
        metadata={
            "help": "Token divisors of the two terms: 'official' (OPD over all routed tokens, MLE over correct-path "
            "tokens), 'per_path' (each term over its own tokens) or 'global' (both over all routed tokens)."
        },
    )
    mle_coef: float = field(
        default=1.0,
        metadata={"help": "Coefficient of the MLE path's weighted MLE term (>= 0)."},
    )
    opd_coef: float = field(
        default=1.0,
        metadata={"help": "Coefficient of the OPD path's distillation term (>= 0)."},
    )
    outcome_advantage_coef: float = field(
        default=0.0,
        metadata={
            "help": "Weight of GRPO's group-normalised outcome advantage, added to every routed rollout through the "
            "same surrogate (>= 0; 0 is the paper's method)."
        },
    )
    distillation_advantage_clip: float | None = field(
        default=None,
        metadata={
            "help": "Optional bound c > 0 on the per-token distillation signal: log pi_T - log pi_old is clamped to "
            "[-c, c] before the teacher weight multiplies it. None (default) is the paper's method."
        },
    )

    def __post_init__(self):
        # Parsed here, before TrainingArguments' own JSON parsing of dict fields, whose error would not name the field.
        if isinstance(self.teacher_model_init_kwargs, str):
            try:
                self.teacher_model_init_kwargs = json.loads(self.teacher_model_init_kwargs)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f'teacher_model_init_kwargs must be a JSON object, e.g. \'{{"dtype": "bfloat16"}}\', got '
                    f"{self.teacher_model_init_kwargs!r} ({error})."
                ) from None
        super().__post_init__()
        self.check_nonfinite_updates()
        self._check_types()
        self._check_values()
        self._check_grpo_fields()

    def _check_types(self) -> None:
        for name in (
            "teacher_model_name_or_path",
            "teacher_model_revision",
            "teacher_model_server_url",
            "teacher_model_server_host",
        ):
            value = getattr(self, name)
            _require(
                value is None or (isinstance(value, str) and value.strip() != ""),
                f"{name} must be None or a non-empty string, got {value!r}.",
            )
        _require(
            self.teacher_model_init_kwargs is None or isinstance(self.teacher_model_init_kwargs, dict),
            f"teacher_model_init_kwargs must be None or a dict of `from_pretrained` keyword arguments, got "
            f"{self.teacher_model_init_kwargs!r}.",
        )
        for name in (
            "routing",
            "use_student_weights",
            "use_teacher_weights",
            "allow_teacher_change",
            "teacher_offload",
        ):
            value = getattr(self, name)
            _require(isinstance(value, bool), f"{name} must be True or False, got {value!r}.")
        for name in (
            "teacher_temperature",
            "scope_tau",
            "correctness_threshold",
            "mle_coef",
            "opd_coef",
            "outcome_advantage_coef",
            "dgpo_n",
            "dgpo_m",
        ):
            value = getattr(self, name)
            _require(
                isinstance(value, (int, float)) and not isinstance(value, bool),
                f"{name} must be a number, got {type(value).__name__} {value!r}.",
            )

    def _check_values(self) -> None:
        _require(
            math.isfinite(self.teacher_temperature) and self.teacher_temperature > 0,
            f"teacher_temperature must be > 0, got {self.teacher_temperature}.",
        )
        self._check_teacher_server()
        _require(
            math.isfinite(self.scope_tau) and self.scope_tau > 0,
            f"scope_tau must be > 0 (the paper sweeps 0.5, 1.0 and 2.0), got {self.scope_tau}.",
        )
        _require(math.isfinite(self.correctness_threshold), "correctness_threshold must be a finite number.")
        for name, allowed in (
            ("student_weight_direction", DIRECTIONS),
            ("teacher_weight_direction", DIRECTIONS),
            ("weight_normalization", NORMALIZATIONS),
            ("policy_surrogate", POLICY_SURROGATES),
            ("nonfinite_teacher_scores", NONFINITE_TEACHER_POLICIES),
            ("scope_loss_aggregation", SCOPE_AGGREGATIONS),
        ):
            value = getattr(self, name)
            _require(value in allowed, f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}.")
        for name in ("mle_coef", "opd_coef", "outcome_advantage_coef"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0, f"{name} must be a finite number >= 0, got {value}.")
        _require(
            self.distillation_advantage_clip is None
            or (math.isfinite(self.distillation_advantage_clip) and self.distillation_advantage_clip > 0),
            f"distillation_advantage_clip must be None (no bound) or a number > 0, got {self.distillation_advantage_clip}.",
        )
        check_dgpo_exponents(self.dgpo_n, self.dgpo_m)
        check_trust_region(self.epsilon, self.epsilon if self.epsilon_high is None else self.epsilon_high)
        if isinstance(self.correctness_reward, int) and not isinstance(self.correctness_reward, bool):
            self.correctness_reward = str(self.correctness_reward)
        _require(
            self.correctness_reward is None or isinstance(self.correctness_reward, str),
            f"correctness_reward must be a reward function's name or position, got {self.correctness_reward!r}.",
        )

    def _check_grpo_fields(self) -> None:
        """GRPO fields whose meaning SCOPE restricts: a value copied from a GRPO config fails loudly."""
        _require(
            self.loss_type == "dapo",
            f"loss_type={self.loss_type!r} does not apply to SCOPE, which owns its token aggregation: leave loss_type "
            f"at 'dapo' and choose scope_loss_aggregation among {', '.join(map(repr, SCOPE_AGGREGATIONS))}.",
        )
        _require(
            self.importance_sampling_level == "token",
            "importance_sampling_level must be 'token' for SCOPE: its distillation advantage is per token.",
        )
        _require(self.delta is None, f"delta={self.delta} (INTELLECT-2's ratio cap) is not supported by SCOPE.")
        _require(
            not self.use_liger_kernel,
            "use_liger_kernel=True is not supported by SCOPETrainer: its loss is computed from TRL's fused LM head. "
            'Set use_liger_kernel=False (for fused layer kernels, use model_init_kwargs={"use_kernels": True}).',
        )

    @property
    def weight_options(self) -> dict:
        """The keyword arguments of `scope_trl.weights.dual_path_weights` that this config sets."""
        return {
            "tau": self.scope_tau,
            "student_direction": self.student_weight_direction,
            "teacher_direction": self.teacher_weight_direction,
            "normalization": self.weight_normalization,
            "use_student_weights": self.use_student_weights,
            "use_teacher_weights": self.use_teacher_weights,
        }

    @property
    def teacher_server_base_url(self) -> str | None:
        """The teacher's vLLM server address, or `None` when the teacher runs in the training processes."""
        if self.teacher_model_server_url is not None:
            return self.teacher_model_server_url.rstrip("/")
        if self.teacher_model_server_host is not None:
            return f"http://{self.teacher_model_server_host}:{self.teacher_model_server_port}"
        return None

    def _check_teacher_server(self) -> None:
        port = self.teacher_model_server_port
        if not (isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536):
            raise ValueError(f"teacher_model_server_port must be a port number (1-65535), got {port!r}.")
        timeout = self.teacher_model_server_timeout
        if not (
            isinstance(timeout, (int, float))
            and not isinstance(timeout, bool)
            and math.isfinite(timeout)
            and timeout >= 0
        ):
            raise ValueError(f"teacher_model_server_timeout must be a number of seconds >= 0, got {timeout!r}.")
        timeout = self.teacher_model_server_request_timeout
        if not (
            isinstance(timeout, (int, float))
            and not isinstance(timeout, bool)
            and math.isfinite(timeout)
            and timeout > 0
        ):
            raise ValueError(f"teacher_model_server_request_timeout must be a number of seconds > 0, got {timeout!r}.")
        retries = self.teacher_model_server_max_retries
        if not (isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0):
            raise ValueError(f"teacher_model_server_max_retries must be an integer >= 0, got {retries!r}.")
        url = self.teacher_server_base_url
        if url is None:
            return
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"teacher_model_server_url must start with http:// or https://, got {url!r} (e.g. 'http://10.0.0.2:8000')."
            )
        if self.teacher_offload:
            raise ValueError(
                f"teacher_offload=True and a teacher server ({url}) exclude each other: a served teacher has no "
                "weights in the training processes to offload. Set teacher_offload=False."
            )
        if self.teacher_temperature != 1.0:
            raise ValueError(
                f"teacher_temperature={self.teacher_temperature} cannot be applied by a teacher server ({url}): vLLM "
                "returns the raw log-probs of the prompt tokens, before any temperature. Use teacher_temperature=1.0, "
                "or an in-process teacher (no teacher_model_server_url / teacher_model_server_host)."
            )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
