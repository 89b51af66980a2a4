"""Where SCOPE's teacher lives: one interface, three placements.

Every placement answers the same question: the teacher's log-prob of each completion token of the selected rollouts,
as a `(R, C)` float32 tensor (0 on rows not selected, `-inf` where the teacher cannot score a token). The trainer
routes, weighs and applies `nonfinite_teacher_scores`; it never needs to know where the teacher is.

- `InProcessTeacher`: a copy in every training process (replicated, or sharded under ZeRO-3 / FSDP, where every
  process must make the same number of forward calls). A student whose padded embedding samples an id the teacher
  has no row for gets `-inf` there instead of an out-of-range index.
- `OffloadedTeacher`: in process, but resting on CPU between generation batches; it visits the accelerator to score.
- `ServedTeacher`: a stock vLLM server (`vllm serve <teacher>`) scores the token ids over HTTP, through TRL's
  `VLLMClient.get_sequence_logprobs`. Requests are bounded in time and retried with back-off; ids outside the served
  vocabulary and vLLM's stand-in for `-inf` become `-inf` as in process; when one process's request finally fails,
  every process raises the same error instead of waiting at the next collective.

`load_teacher` builds the right one from a `SCOPEConfig`, with the checks that the teacher can score the student's ids.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from unittest import mock

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel
from trl.generation import vllm_client
from trl.import_utils import is_vllm_available
from trl.models import prepare_deepspeed, prepare_fsdp
from trl.trainer.utils import add_fused_lm_head, create_model_from_path, get_config_model_id

from .checks import explain_load_failure, prefer_safetensors
from .optional import import_optional


# vLLM's OpenAI server replaces a -inf prompt log-prob by this value (JSON has no infinity). A float32 log-prob of a
# real token is never this low, so a value at or below it is read back as -inf.
VLLM_NEGATIVE_INFINITY = -9999.0
# HTTP statuses worth retrying: the server is restarting, overloaded or behind a proxy that lost it for a moment.
RETRIED_STATUSES = (500, 502, 503, 504)

TOKENIZER_WHY = (
    "SCOPE feeds the student's sampled token ids to the teacher, so a different token-to-id map would make the teacher "
    "score different text and the distillation signal meaningless. Use a teacher from the student's model family "
    "(same tokenizer)."
)

# A per-token log-prob function with the signature of `GRPOTrainer._get_per_token_logps_and_entropies`.
LogProbFunction = Callable[..., tuple]


class Teacher:
    """The interface. `model` is the prepared module in the training processes (None for a served teacher),
    `offload_seconds` the host-device transfer time of the last `score` call."""

    model: torch.nn.Module | None = None
    offload_seconds: float = 0.0
    name: str | None = None  # the name or path it was loaded or served under, for the record

    def score(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_to_keep: int,
        rows: torch.Tensor,
        batch_size: int,
    ) -> torch.Tensor:
        """The teacher's log-probs of the completion tokens of the selected rows.

        Args:
            input_ids, attention_mask: (R, P + C), prompts left-padded, completions right-padded.
            logits_to_keep: C, the completion width.
            rows: (R,) bool, the rows to score. Collective placements are called on every process, rows or not.
            batch_size: rows per teacher forward (in process).

        Returns:
            (R, C) float32: the log-probs on selected rows, 0 elsewhere, `-inf` where a token cannot be scored.
        """
        raise NotImplementedError

    def record(self) -> dict:
        """What identifies the teacher's weights and placement, for checkpoints and the model card."""
        module = self.model
        while hasattr(module, "module"):  # DeepSpeed / DDP wrappers
            module = module.module
        config = getattr(module, "config", None)
        return {
            "commit_hash": getattr(config, "_commit_hash", None),
            "dtype": str(getattr(module, "dtype", None)).replace("torch.", ""),
        }


class InProcessTeacher(Teacher):
    """A teacher in every training process.

    Args:
        model: the prepared teacher (a module, or a DeepSpeed / FSDP wrapper), frozen, in eval mode.
        logps_fn: per-token log-probs, `(model, input_ids, attention_mask, logits_to_keep, batch_size=) -> (logps,
            ...)`; the trainer's `_get_per_token_logps_and_entropies` (fused LM head: no B x T x V logits).
        vocab_size: the teacher's vocabulary (embedding rows). Ids at or beyond it are scored as a stand-in id and get
            `-inf`, which only happens when the student's (padded) embedding is larger.
        student_vocab_rows: the student's output rows; when they do not exceed `vocab_size` the check is skipped.
        filler_id: the stand-in id (the pad token).
        accelerator: for the row-count agreement under sharding.
        sharded: whether every forward is a collective (ZeRO-3, FSDP): then every process scores as many rows as the
            process with the most, padding with copies of its first row, and the padding is dropped.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        logps_fn: LogProbFunction,
        vocab_size: int,
        student_vocab_rows: int,
        filler_id: int = 0,
        accelerator=None,
        sharded: bool = False,
    ):
        self.model, self.logps_fn, self.vocab_size = model, logps_fn, vocab_size
        self.student_can_sample_unknown_ids = student_vocab_rows > vocab_size  # decided once: no per-batch sync
        self.filler_id, self.accelerator, self.sharded = filler_id, accelerator, sharded

    def score(self, input_ids, attention_mask, logits_to_keep, rows, batch_size):
        teacher_logps = torch.zeros(input_ids.size(0), logits_to_keep, device=input_ids.device)
        selected = rows.nonzero().squeeze(1)
        num_rows = selected.numel()
        if self.sharded:
            counts = self.accelerator.gather(torch.tensor([num_rows], device=input_ids.device))
            filler = torch.zeros(int(counts.max()) - num_rows, dtype=selected.dtype, device=selected.device)
            selected = torch.cat([selected, filler])
        if selected.numel() == 0:
            return teacher_logps
        rows_ids = input_ids[selected]
        unknown = None
        if self.student_can_sample_unknown_ids:
            unknown = rows_ids >= self.vocab_size
            rows_ids = torch.where(unknown, self.filler_id, rows_ids)
        logps = self._forward(rows_ids, attention_mask[selected], logits_to_keep, batch_size).float()
        if unknown is not None:
            logps = logps.masked_fill(unknown[:, -logits_to_keep:], float("-inf"))
        teacher_logps[selected[:num_rows]] = logps[:num_rows]
        return teacher_logps

    def _forward(self, input_ids, attention_mask, logits_to_keep, batch_size) -> torch.Tensor:
        # The scores are constants of the loss: no autograd bookkeeping, no version counters.
        with torch.inference_mode():
            logps, *_ = self.logps_fn(self.model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size)
        return logps


class OffloadedTeacher(InProcessTeacher):
    """An in-process teacher that rests on CPU: each `score` moves it to `device`, scores, and moves it back, and
    records the two transfers' time in `offload_seconds`. Arguments as `InProcessTeacher`, plus `device`."""

    def __init__(self, model, logps_fn, vocab_size, student_vocab_rows, filler_id=0, accelerator=None, device="cpu"):
        super().__init__(model.to("cpu"), logps_fn, vocab_size, student_vocab_rows, filler_id, accelerator)
        self.device = torch.device(device)

    def _forward(self, input_ids, attention_mask, logits_to_keep, batch_size):
        start = time.perf_counter()
        self.model.to(self.device)
        self.offload_seconds = time.perf_counter() - start
        try:
            return super()._forward(input_ids, attention_mask, logits_to_keep, batch_size)
        finally:
            start = time.perf_counter()
            self.model.to("cpu")
            self.offload_seconds += time.perf_counter() - start

    def score(self, input_ids, attention_mask, logits_to_keep, rows, batch_size):
        self.offload_seconds = 0.0
        return super().score(input_ids, attention_mask, logits_to_keep, rows, batch_size)


class TeacherServerError(RuntimeError):
    """The teacher's server failed for good (after the retries), or answered something that is not vLLM's format."""


@contextlib.contextmanager
def _without_vllm_import_check():
    """TRL's client refuses to start without vLLM installed because weight synchronisation needs it; scoring is plain
    HTTP, so a training process that only talks to a remote teacher does not need vLLM (whose wheels pin torch)."""
    if is_vllm_available():
        yield
        return
    with mock.patch.object(vllm_client, "is_vllm_available", return_value=True):
        yield


def _bounded_session(requests, timeout: float, max_retries: int, backoff: float):
    """A session of the `requests` module whose every request times out after `timeout` s and that retries
    connection errors, timeouts and 5xx answers `max_retries` times: the first at once, then after 2 x backoff,
    4 x backoff, ... s (urllib3's back-off)."""

    class BoundedSession(requests.Session):
        def request(self, *args, **kwargs):
            kwargs.setdefault("timeout", timeout)
            return super().request(*args, **kwargs)

    session = BoundedSession()
    retry = requests.adapters.Retry(  # urllib3's, as requests uses it
        total=max_retries,
        connect=max_retries,
        read=max_retries,
        status=max_retries,
        status_forcelist=RETRIED_STATUSES,
        allowed_methods=["GET", "POST"],  # scoring has no side effect: a POST is safe to repeat
        backoff_factor=backoff,
        raise_on_status=False,  # the last answer reaches the caller, which names its status
    )
    adapter = requests.adapters.HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class ServedTeacher(Teacher):
    """The teacher's vLLM server at `base_url`, as seen by one training process.

    Args:
        base_url: `http(s)://host:port` of the server.
        startup_timeout: seconds to wait for the server's health check at construction before failing.
        request_timeout: seconds one scoring request may take (connecting or waiting for the answer) before it is
            retried.
        max_retries: retries of a request after a connection error, a timeout or a 5xx answer: the first at once,
            then after 2 x `backoff`, 4 x `backoff`, ... seconds. A request that still fails raises
            `TeacherServerError`.
        vocab_size: the served teacher's vocabulary. Ids at or beyond it are sent as `filler_id` and get `-inf`
            (vLLM refuses a request that contains one). None: nothing is masked.
        accelerator: with several processes, every `score` call ends with one collective in which the processes
            agree on failure, so that all of them raise the same error.
    """

    def __init__(
        self,
        base_url: str,
        startup_timeout: float = 240.0,
        request_timeout: float = 300.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        vocab_size: int | None = None,
        filler_id: int = 0,
        accelerator=None,
    ):
        self._requests = import_optional("requests", f"Reaching the teacher's vLLM server ({base_url}) over HTTP")
        self.base_url, self.vocab_size, self.filler_id = base_url, vocab_size, filler_id
        self.request_timeout, self.max_retries, self.accelerator = request_timeout, max_retries, accelerator
        self._wait_until_healthy(startup_timeout)
        try:
            with _without_vllm_import_check():
                self.client = vllm_client.VLLMClient(base_url=base_url, connection_timeout=startup_timeout)
        except Exception as error:
            raise ConnectionError(self._unreachable(startup_timeout, error)) from error
        self.client.session = _bounded_session(self._requests, request_timeout, max_retries, backoff)
        self.model_name: str = self.client.model  # the id the server reports in /v1/models

    def _unreachable(self, timeout: float, error) -> str:
        return (
            f"Could not reach the teacher's vLLM server at {self.base_url} (teacher_model_server_url, or "
            f"teacher_model_server_host/_port) within teacher_model_server_timeout={timeout} s: {error}. Start it "
            "with `vllm serve <teacher>` and check the address, or unset those fields to load the teacher locally."
        )

    def _wait_until_healthy(self, timeout: float) -> None:
        """Poll `/health`, each probe bounded in time (TRL's own check has no per-request timeout, so a server that
        accepts the connection and never answers would hang it)."""
        requests = self._requests
        deadline = time.monotonic() + timeout
        while True:
            probe = min(max(deadline - time.monotonic(), 0.5), 10.0)
            try:
                if requests.get(f"{self.base_url}/health", timeout=probe).status_code == 200:
                    return
                error = "the health check did not answer 200"
            except requests.RequestException as exception:
                error = exception
            if time.monotonic() >= deadline:
                raise ConnectionError(self._unreachable(timeout, error))
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))

    def request(self, sequences: list[list[int]], completion_starts: list[int]) -> list[list[float]]:
        """The server's log-prob of each completion token of each sequence (one HTTP request, retried as configured).

        Args:
            sequences: token ids, prompt then completion, without padding; one list per rollout.
            completion_starts: index of each sequence's first completion token (its prompt length).

        Returns:
            One list per sequence of `len(sequence) - start` log-probs; `-inf` where the server did not return the
            sampled token or returned vLLM's stand-in for `-inf` (`VLLM_NEGATIVE_INFINITY`).
        """
        try:
            result = self.client.get_sequence_logprobs(sequences, completion_starts, top_logprobs=1, temperature=1.0)
        except Exception as error:
            raise TeacherServerError(
                f"The teacher's vLLM server at {self.base_url} failed to score {len(sequences)} sequences (POST "
                f"{self.base_url}/v1/completions with prompt_logprobs; {self.max_retries} retries, "
                f"teacher_model_server_request_timeout={self.request_timeout} s each): {error}"
            ) from error
        scores = []
        for row, sequence, start in zip(result["actual_logprobs"], sequences, completion_starts, strict=True):
            if len(row) != len(sequence) - start:
                raise TeacherServerError(
                    f"The teacher's vLLM server at {self.base_url} returned {len(row)} log-probs for a completion of "
                    f"{len(sequence) - start} tokens: it does not speak vLLM's prompt_logprobs format."
                )
            scores.append([value if value > VLLM_NEGATIVE_INFINITY else float("-inf") for (value, *_) in row])
        return scores

    def score(self, input_ids, attention_mask, logits_to_keep, rows, batch_size):
        teacher_logps = torch.zeros(input_ids.size(0), logits_to_keep, device=input_ids.device)
        selected = rows.nonzero().squeeze(1)
        failure = None
        if selected.numel() > 0:
            width = logits_to_keep
            ids, mask = input_ids[selected], attention_mask[selected]
            unknown = None
            if self.vocab_size is not None:
                unknown = ids[:, -width:] >= self.vocab_size
                ids = torch.where(ids >= self.vocab_size, self.filler_id, ids)
            sequences, starts = unpadded_sequences(
                ids[:, :-width], mask[:, :-width], ids[:, -width:], mask[:, -width:]
            )
            try:
                scores = self.request(sequences, starts)
            except TeacherServerError as error:
                failure = str(error)
            else:
                # Positions past a completion are no loss tokens: 0 there, as for unscored rows.
                padded = torch.tensor([row + [0.0] * (width - len(row)) for row in scores], device=input_ids.device)
                if unknown is not None:
                    padded = padded.masked_fill(unknown, float("-inf"))
                teacher_logps[selected] = padded
        self._agree_on_failure(failure)
        return teacher_logps

    def _agree_on_failure(self, failure: str | None) -> None:
        """Raise on every process when the request of any failed: the message names the first failed process."""
        accelerator = self.accelerator
        if accelerator is not None and accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            failures = gather_object([failure])
            failed = [(rank, message) for rank, message in enumerate(failures) if message is not None]
            if failed:
                rank, message = failed[0]
                raise TeacherServerError(f"Training process {rank} of {len(failures)} stopped: {message}")
        elif failure is not None:
            raise TeacherServerError(failure)

    def record(self) -> dict:
        return {"commit_hash": None, "dtype": None, "server_url": self.base_url}


def unpadded_sequences(
    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor, completion_mask: torch.Tensor
) -> tuple[list[list[int]], list[int]]:
    """Rows of TRL's padded batch (left-padded prompts, right-padded completions) as the unpadded token lists a server
    scores, and the prompt length of each. Shapes: prompts (R, P), completions (R, C); masks are 0/1.

    A completion keeps every token up to its last unmasked one, so the lists line up with the completion columns.
    """
    positions = torch.arange(1, completion_mask.size(1) + 1, device=completion_mask.device)
    completion_lengths = (completion_mask * positions).amax(1).tolist()
    sequences, starts = [], []
    for prompt, keep, completion, length in zip(
        prompt_ids.tolist(), prompt_mask.bool().tolist(), completion_ids.tolist(), completion_lengths, strict=True
    ):
        prompt = [token for token, kept in zip(prompt, keep, strict=True) if kept]
        sequences.append(prompt + completion[:length])
        starts.append(len(prompt))
    return sequences, starts


# ---------------------------------------------------------------------------------------------------------------------
# Building the teacher from a SCOPEConfig
# ---------------------------------------------------------------------------------------------------------------------


def _served_teacher(
    name: str | None, args, accelerator, check: TokenizerCheck, student_vocab_size: int, filler_id: int
) -> ServedTeacher:
    """The teacher on the vLLM server of `args`, checked against the student as far as its name allows."""
    config = _served_teacher_config(name, args)
    vocab_size = config.get_text_config().vocab_size if config is not None else None
    served = ServedTeacher(
        args.teacher_server_base_url,
        startup_timeout=args.teacher_model_server_timeout,
        request_timeout=args.teacher_model_server_request_timeout,
        max_retries=args.teacher_model_server_max_retries,
        vocab_size=vocab_size if vocab_size is not None else student_vocab_size,
        filler_id=filler_id,
        accelerator=accelerator,
    )
    served.name = name or served.model_name
    if vocab_size is not None:
        check.vocabulary(served.name, vocab_size)
    check.tokenizer_files(served.name, vocab_checked=vocab_size is not None)
    return served


def load_teacher(
    teacher: str | PreTrainedModel | None, args, accelerator, student, tokenizer, logps_fn: LogProbFunction
) -> Teacher:
    """The teacher that `args` (a `SCOPEConfig`) places, checked against the student.

    Args:
        teacher: a name, a path or a model instance; for a served teacher, the optional name of the served model.
        args: the `SCOPEConfig`.
        accelerator: the trainer's `Accelerator`.
        student: the student (wrapped or not), for its vocabulary and name.
        tokenizer: the student's tokenizer (or processor holding one).
        logps_fn: the trainer's `_get_per_token_logps_and_entropies`.
    """
    student_tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    student = accelerator.unwrap_model(student)
    student_rows = student.config.get_text_config().vocab_size
    filler_id = getattr(student_tokenizer, "pad_token_id", None) or 0
    check = TokenizerCheck(student, student_tokenizer, args)
    if args.teacher_server_base_url is not None:
        return _served_teacher(teacher, args, accelerator, check, len(student_tokenizer), filler_id)

    name_or_path = teacher
    if isinstance(teacher, str):
        init_kwargs = prefer_safetensors(args.teacher_model_init_kwargs)
        init_kwargs.setdefault("dtype", _training_dtype(args, student))
        if args.teacher_model_revision is not None:
            init_kwargs.setdefault("revision", args.teacher_model_revision)
        init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
        if args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED", "FSDP"]:
            init_kwargs["device_map"] = None  # each process loads its own copy; "auto" would spread it over GPUs
        try:
            teacher = create_model_from_path(teacher, **init_kwargs)
        except OSError as error:
            raise explain_load_failure(
                error, teacher, "teacher", "teacher_model_name_or_path", "teacher_model_init_kwargs"
            ) from error
    elif args.teacher_model_init_kwargs is not None:
        raise ValueError(
            "teacher_model_init_kwargs is set, but the teacher was passed as an instantiated model: load it with those "
            "arguments yourself, or pass its name or path instead."
        )
    vocab_size = teacher.config.get_text_config().vocab_size
    name = name_or_path if isinstance(name_or_path, str) else get_config_model_id(teacher.config)
    check.vocabulary(name or "the teacher", vocab_size)
    check.tokenizer_files(name or "the teacher", vocab_checked=True)
    teacher.requires_grad_(False)
    teacher.eval()
    # Teacher log-probs come from a fused LM head: B x T x vocabulary logits are never materialised.
    add_fused_lm_head(teacher, temperature=args.teacher_temperature, outputs=("log_probs",))
    deepspeed = accelerator.state.deepspeed_plugin is not None
    fsdp = getattr(accelerator.state, "fsdp_plugin", None) is not None
    check_offload(args.teacher_offload, deepspeed or fsdp)
    common = {"vocab_size": vocab_size, "student_vocab_rows": student_rows, "filler_id": filler_id}
    if args.teacher_offload:  # prepared as usual, then parked on CPU until the first scoring
        prepared = accelerator.prepare_model(teacher, evaluation_mode=True)
        placed = OffloadedTeacher(prepared, logps_fn, accelerator=accelerator, device=accelerator.device, **common)
        placed.name = name
        return placed
    if deepspeed:
        prepared = prepare_deepspeed(teacher, accelerator)  # sharded under ZeRO-3, a stage-0 replica otherwise
    elif fsdp:
        prepared = prepare_fsdp(teacher, accelerator)
    else:
        prepared = accelerator.prepare_model(teacher, evaluation_mode=True)
    sharded = fsdp or (deepspeed and accelerator.state.deepspeed_plugin.zero_stage == 3)
    placed = InProcessTeacher(prepared, logps_fn, accelerator=accelerator, sharded=sharded, **common)
    placed.name = name
    return placed


FINGERPRINT_CHUNK = 2**20  # bytes read from each end of every weight file


def weights_fingerprint(name_or_path) -> str | None:
    """A short identity of a local checkpoint directory, None for anything else (a Hub id: its commit identifies it).

    SHA-256 over `config.json` and, for each `*.safetensors` file, its name, size, first MiB (the header: every
    tensor's name, dtype, shape and offset, then the first weights) and last MiB. Reading 2 MiB per file keeps it cheap
    for a multi-GB teacher; copies of one checkpoint agree wherever they live, other weights (another model, a
    fine-tune) differ.
    """
    if not isinstance(name_or_path, str) or not os.path.isdir(os.path.expanduser(name_or_path)):
        return None
    directory = os.path.expanduser(name_or_path)
    files = sorted(entry for entry in os.listdir(directory) if entry.endswith(".safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    config = os.path.join(directory, "config.json")
    if os.path.isfile(config):
        with open(config, "rb") as f:
            digest.update(f.read())
    for name in files:
        path = os.path.join(directory, name)
        size = os.path.getsize(path)
        digest.update(f"{name}:{size}".encode())
        with open(path, "rb") as f:
            digest.update(f.read(FINGERPRINT_CHUNK))
            if size > 2 * FINGERPRINT_CHUNK:
                f.seek(size - FINGERPRINT_CHUNK)
                digest.update(f.read(FINGERPRINT_CHUNK))
    return digest.hexdigest()[:16]


# The file in every checkpoint (and beside the final model) that says which teacher trained it.
TEACHER_RECORD_NAME = "scope_teacher.json"


def teacher_record(teacher: Teacher, args) -> dict:
    """What identifies the teacher, written into every checkpoint (`TEACHER_RECORD_NAME`) and the model card."""
    placement = teacher.record()
    record = {"name_or_path": teacher.name, "revision": args.teacher_model_revision}
    record.update(commit_hash=placement["commit_hash"], dtype=placement["dtype"])
    record["fingerprint"] = weights_fingerprint(teacher.name)
    record["temperature"] = args.teacher_temperature
    if "server_url" in placement:
        record["server_url"] = placement["server_url"]
    return record


def write_teacher_record(directory: str, record: dict) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, TEACHER_RECORD_NAME), "w") as f:
        json.dump(record, f, indent=2)


def teacher_card_section(record: dict) -> str:
    """The model card's "Teacher" section: the record, one line per known field."""
    lines = ["", "## Teacher", "", f"Trained by SCOPE with this teacher (also in `{TEACHER_RECORD_NAME}`):", ""]
    lines += [f"- {key}: `{value}`" for key, value in record.items() if value is not None]
    return "\n".join(lines) + "\n"


def check_resumed_teacher(checkpoint: str, record: dict, args) -> None:
    """Refuse to resume from `checkpoint` with another teacher than the one its `TEACHER_RECORD_NAME` file names
    (unless `args.allow_teacher_change`).

    A teacher loaded from a local directory is identified by its weights (`weights_fingerprint`): the same checkpoint
    under another path, or on another machine, is the same teacher. Otherwise the name or path, the revision and the
    resolved commit are compared where both sides know them.
    """
    path = os.path.join(checkpoint, TEACHER_RECORD_NAME)
    if not os.path.isfile(path):
        return  # a checkpoint written before teachers were recorded (or by another trainer): nothing to compare
    with open(path) as f:
        saved = json.load(f)
    if saved.get("fingerprint") and record.get("fingerprint"):
        identity = ("fingerprint",)
    else:
        identity = ("name_or_path", "revision", "commit_hash")
    differs = [
        key
        for key in identity
        if saved.get(key) is not None and record.get(key) is not None and saved[key] != record[key]
    ]
    if not differs:
        return
    described = "; ".join(f"{key}: checkpoint {saved[key]!r}, now {record[key]!r}" for key in differs)
    if differs == ["fingerprint"]:
        described = (
            f"the weights at {record.get('name_or_path')!r} differ from those of {saved.get('name_or_path')!r}: "
            + described
        )
    if args.allow_teacher_change:
        warnings.warn(f"Resuming {checkpoint} with another teacher ({described}).", UserWarning, stacklevel=4)
        return
    raise ValueError(
        f"The checkpoint {checkpoint} was trained with another teacher ({described}). Resume with the same teacher "
        "(teacher_model_name_or_path / teacher_model_revision), or set allow_teacher_change=True to continue with this "
        "one on purpose."
    )


def check_offload(teacher_offload: bool, placed_by_framework: bool) -> None:
    if teacher_offload and placed_by_framework:
        raise ValueError(
            "teacher_offload=True is not supported with DeepSpeed or FSDP, which place the teacher themselves: under "
            "ZeRO-3 (or FSDP) the teacher is already sharded across processes. Set teacher_offload=False, or use a "
            "DDP / single-device accelerate config to offload it."
        )


def _training_dtype(args, student) -> torch.dtype:
    """The training precision: a frozen teacher kept in float32 under bf16 training would double its memory."""
    if args.bf16:
        return torch.bfloat16
    if args.fp16:
        return torch.float16
    return student.dtype


def _served_teacher_config(teacher: str | None, args):
    """The served teacher's config, when its name is a local path or a cached Hub id; None otherwise."""
    if teacher is None:
        return None
    try:
        return AutoConfig.from_pretrained(
            teacher, revision=args.teacher_model_revision, trust_remote_code=args.trust_remote_code
        )
    except (OSError, ValueError):
        return None


class TokenizerCheck:
    """The teacher scores the student's token ids, so both must map text to the same ids."""

    def __init__(self, student, student_tokenizer, args):
        self.student_name = get_config_model_id(student.config) or "the student"
        self.student_rows = student.config.get_text_config().vocab_size
        self.tokenizer, self.args = student_tokenizer, args

    def vocabulary(self, teacher_name: str, teacher_vocab_size: int) -> None:
        """Every id the student's tokenizer produces must have a teacher row; a padded student embedding warns."""
        if len(self.tokenizer) > teacher_vocab_size:
            raise ValueError(
                f"The student {self.student_name} has {len(self.tokenizer)} tokens but the teacher {teacher_name} only "
                f"{teacher_vocab_size} embedding rows: some student token ids do not exist for the teacher. "
                f"{TOKENIZER_WHY}"
            )
        if self.student_rows > teacher_vocab_size:
            warnings.warn(
                f"The student {self.student_name} has {self.student_rows} output rows (a padded embedding) but the "
                f"teacher {teacher_name} only {teacher_vocab_size}: if the student samples one of the ids "
                f"{teacher_vocab_size}..{self.student_rows - 1}, which its tokenizer never produces, the teacher cannot "
                "score it; such a rollout gets a non-finite teacher score and follows `nonfinite_teacher_scores` "
                f"(now {self.args.nonfinite_teacher_scores!r}).",
                UserWarning,
                stacklevel=4,
            )

    def tokenizer_files(self, teacher_name: str, vocab_checked: bool) -> None:
        """Compare the teacher's own tokenizer (loaded by name, when it can be) with the student's."""
        args = self.args
        try:
            teacher_tokenizer = AutoTokenizer.from_pretrained(
                teacher_name, revision=args.teacher_model_revision, trust_remote_code=args.trust_remote_code
            )
        except (OSError, ValueError):
            checked = (
                "only the vocabulary size was checked"
                if vocab_checked
                else "nothing was checked (neither its tokenizer nor its config could be loaded by that name; name "
                "the served teacher's local path or Hub id in teacher_model_name_or_path to check both, and to mask "
                "student ids beyond its vocabulary)"
            )
            warnings.warn(
                f"Could not load the tokenizer of the teacher {teacher_name} to check that it matches the student's "
                f"({self.student_name}); {checked}. {TOKENIZER_WHY}",
                UserWarning,
                stacklevel=4,
            )
            return
        student_template = getattr(self.tokenizer, "chat_template", None)
        teacher_template = getattr(teacher_tokenizer, "chat_template", None)
        if teacher_template is not None and student_template != teacher_template:
            warnings.warn(
                f"The chat templates of the student {self.student_name} and the teacher {teacher_name} differ. The "
                "teacher scores the student's token ids, rendered with the student's template, so it sees prompts "
                "formatted the student's way; a teacher that relies on its own template (an instruct teacher for a "
                "base student, SCOPE's main pair) may score them worse than it would its own format.",
                UserWarning,
                stacklevel=4,
            )
        check_same_tokens(self.tokenizer, teacher_tokenizer, self.student_name, teacher_name)


def check_same_tokens(student_tokenizer, teacher_tokenizer, student_name: str, teacher_name: str) -> None:
    """Raise a `ValueError` unless every token of the student's vocabulary has the same id for the teacher."""
    student_vocab, teacher_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    mismatched = [token for token, index in student_vocab.items() if teacher_vocab.get(token) != index]
    if mismatched:
        examples = ", ".join(
            f"{token!r}: {student_vocab[token]} vs {teacher_vocab.get(token)}" for token in sorted(mismatched)[:3]
        )
        raise ValueError(
            f"The teacher {teacher_name} does not share the tokenizer of the student {student_name}: "
            f"{len(mismatched)} of the student's {len(student_vocab)} tokens map to other ids for the teacher "
            f"(student id vs teacher id, e.g. {examples}). {TOKENIZER_WHY}"
        )


def check_tokenizers_before_loading(student, teacher: str, processing_class, args) -> None:
    """Compare the teacher's tokenizer with the student's before either model loads (minutes and tens of GB for an
    8B teacher), when both can be read by name; the full check (`TokenizerCheck`) runs again once they are loaded.

    Args:
        student: the student's name or path, or its model instance.
        teacher: the teacher's name or path.
        processing_class: the student's tokenizer or processor when the user passed one, else None.
        args: the `SCOPEConfig`.
    """
    try:
        teacher_tokenizer = AutoTokenizer.from_pretrained(
            teacher, revision=args.teacher_model_revision, trust_remote_code=args.trust_remote_code
        )
        if processing_class is not None:
            student_tokenizer = getattr(processing_class, "tokenizer", processing_class)
        else:
            name = student if isinstance(student, str) else get_config_model_id(student.config)
            student_tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError, TypeError):
        return  # reported, with what could be checked, once the models are loaded
    student_name = student if isinstance(student, str) else get_config_model_id(student.config)
    check_same_tokens(student_tokenizer, teacher_tokenizer, student_name or "the student", teacher)
