r"""Verifier rewards for `\boxed{}` math answers: `accuracy_reward` (math-verify, bounded in time) and `format_reward`.

SCOPE routes every rollout by its verifier reward, so the verifier decides which loss a rollout feeds. Three decisions
follow from that:

* **None only for a broken reference.** `accuracy_reward` returns 1.0 (correct), 0.0 (wrong, no answer, answer too
  long, grading timed out or crashed) or None when the *reference* cannot be graded at all (empty, a full solution
  whose last `\boxed{` never closes, longer than `MAX_ANSWER_CHARS`, or nothing math-verify can extract). A None
  rollout is excluded from both paths instead of being pushed onto the OPD path as "wrong".
* **One normalisation for both sides.** References arrive as bare LaTeX, `$...$`-delimited text, numbers with
  thousands separators ("2,125", "10,\!080"), "27.0", "025" or full solutions ending in `\boxed{}`. The reference
  (after taking the last `\boxed{}` of a full solution) and the content of the completion's last `\boxed{}` both go
  through `normalize_answer` and are then parsed as `\boxed{<normalised>}` with the same math-verify configuration, so
  a completion that boxes the reference verbatim always matches it. TRL's `accuracy_reward` parses the raw reference
  without delimiters, which turns bare LaTeX such as `x_{0} \cos(\omega t)` into the first number it finds.
* **The answer is the last `\boxed{...}` and nothing else.** Nested braces are matched (`\{`/`\}` do not count).
  A completion without a `\boxed{}`, whose last `\boxed{` is never closed (a truncated answer), or whose last box is
  empty gets 0.0: the prompt asks for a boxed answer, and falling back to "the last `$x$` in the text" would reward an
  intermediate result.

Bounded time, in any thread
---------------------------
math-verify bounds `parse` / `verify` with `signal.alarm`, which only works on the main thread; TRL therefore switches
the timeouts off elsewhere. A completion such as `\boxed{9^{9^{9^{9}}}}` or `\boxed{(10^{100})!}` then never
finishes: measured with TRL's `accuracy_reward` in a `threading.Thread`, the call had not returned after 100 s, and
the main thread's `join(timeout=30)` did not return either (the computation apparently holds the GIL). We grade in a
small pool of persistent worker *processes* (`GraderPool`) instead:

* each worker runs `_serve`, whose main thread uses a `setitimer` alarm per request (a soft timeout that leaves the
  worker alive), and the parent kills a worker that has not answered `timeout + grace` seconds after the request was
  sent (the hard bound, which also covers code that ignores signals, such as a long C-level big-integer operation).
  A timed-out or crashed grading counts as 0.0 and the worker is restarted;
* each worker's address space is capped at `WORKER_MEMORY_BYTES` (`RLIMIT_AS`): an evaluation that tries to
  allocate more fails with a MemoryError (0.0) inside the worker instead of swapping the machine or waking the
  out-of-memory killer next to the trainer (answers such as `2^{2^{40}}` are usually stopped by the timeout first);
* the parent only waits on pipes (`selectors`), so `accuracy_reward` behaves the same from the main thread, a
  `threading.Thread`, or an asyncio executor; calls from several threads are serialised by a lock;
* workers are started with `subprocess` as `python -c <bootstrap>` that loads *this file* by path: no `fork` of a
  multi-threaded (CUDA, tokenizers) trainer, no re-import of the user's `__main__` (as `multiprocessing`'s spawn does)
  and no import of the `scope_trl` package with torch/TRL. A worker starts in about 0.5 s and uses 50-100 MB;
* requests and answers are one JSON line each; a pool created before a `fork` is not reused by the child.

Measured on 2 CPU cores (`benchmarks/reward_grading.py`): the pool adds about 0.3 ms per completion to math-verify's
own 1-10 ms (one worker against in-process calls), grades with all workers in parallel, and the adversarial
completions above come back as 0.0 after the 5 s soft timeout from any thread. Before parsing, a boxed answer longer than
`MAX_ANSWER_CHARS` or nested deeper than `MAX_NESTING_DEPTH` is rejected (the benchmark references reach 210
characters and depth 4; parsing 12 nested braces alone takes seconds), and locating the last box of a 200k-character
completion is a regular-expression scan plus a brace scan of at most `MAX_ANSWER_CHARS` characters.

POSIX only (the pool waits on pipes with `selectors`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import NamedTuple


DEFAULT_TIMEOUT_SECONDS = 5.0
# Extra time the parent grants a worker beyond the soft timeout before killing it.
KILL_GRACE_SECONDS = 1.0
# Address-space cap of a grading worker: about 20x what one uses (60 MB measured after importing math-verify).
WORKER_MEMORY_BYTES = 1 << 30
# A boxed answer (or reference) longer than this is not a final answer; it is rejected before parsing.
MAX_ANSWER_CHARS = 1000
# Deeper nesting of {, ( and [ in a boxed answer is rejected before parsing: latex2sympy's time grows about 1.8x per
# level of bare braces (depth 10: ~1 s, 12: ~2.6 s, 20: ~220 s); the benchmark references reach depth 4.
MAX_NESTING_DEPTH = 10
# How long a fresh worker may take to import math-verify and sympy before the pool gives up.
WORKER_START_TIMEOUT_SECONDS = 60.0

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------------
# Extracting and normalising answers (pure string functions, run in the calling process)
# --------------------------------------------------------------------------------------------------------------------

# `\boxed` or `\fbox`, but not a longer command such as `\boxedmath`.
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
# 2,125 / -1,234.5 / 10,\!080 / 11,\! 111,\! 100: a plain number with thousands separators (first group 1-3 digits,
# every later group exactly 3, no space after a bare comma), so lists such as "2500,7500", "69,84" or "58, 500" stay.
_THOUSANDS_NUMBER = re.compile(r"[+-]?\d{1,3}(?:,(?:\\!\s?)?\d{3})+(?:\.\d+)?")
_THOUSANDS_SEPARATOR = re.compile(r",(?:\\!\s?)?")
# "10,\!080" inside a larger expression (MATH writes every thousands separator this way), e.g. \frac{1}{20,\!000}.
_LATEX_THOUSANDS_SEPARATOR = re.compile(r"(?<=\d),\\!\s?(?=\d{3}(?!\d))")
_SCIENTIFIC_NUMBER = re.compile(r"([+-]?\d+(?:\.\d+)?)[eE]([+-]?\d+)")  # 4.5e33, which LaTeX reads as 4.5·e·33
_INTEGER_WITH_ZERO_FRACTION = re.compile(r"([+-]?\d+)\.0+")
_PLAIN_INTEGER = re.compile(r"([+-]?)(\d+)")
_DIGIT_THEN_BARE_DOT = re.compile(r"(?<=\d)\.(?=[\s/),]|$)")  # Python-style "-1./3"
_NUMPY_CALL = re.compile(r"\bnp\.([a-z]+)(?=\()")  # "np.arcsin(10/13)" in one Minerva reference
# \frac\pi 2: a brace-less Greek-letter numerator, which math-verify's operator repair mangles into \frac{\}{p}.
_FRAC_GREEK_NUMERATOR = re.compile(
    r"\\([dt]?frac)\s*(\\(?:pi|alpha|beta|gamma|delta|epsilon|theta|lambda|mu|rho|sigma|tau|phi|omega))(?![A-Za-z])"
)
_PHANTOM = re.compile(r"\\phantom\s*(?:\{[^{}]*\}|\S)")
_LEADING_APPROX = re.compile(r"^(?:\\approx|≈)\s*")
_DISPLAY_DELIMITERS = (("\\(", "\\)"), ("\\[", "\\]"))


def completion_text(completion) -> str:
    """The text of one completion as TRL passes it: a plain string, or a list of chat messages (conversational).

    The contents of all messages are joined with newlines (the answer is the last box, so this equals the last box of
    the last message that has one); multimodal content parts contribute their `"text"`, and `None` contents nothing.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts = []
    for message in completion:
        content = message.get("content") if isinstance(message, dict) else message
        if isinstance(content, list):
            content = "".join(part.get("text") or "" for part in content if isinstance(part, dict))
        parts.append(content or "")
    return "\n".join(parts)


def _braced_group(text: str, open_index: int, max_chars: int) -> str | None:
    """Content of the `{...}` group opening at `text[open_index]`; None if it does not close within `max_chars`.

    A backslash escapes the next character, so `\\{` and `\\}` are literal braces and `\\\\{` opens a group, as in TeX.
    """
    depth = 0
    index = open_index
    end = min(len(text), open_index + max_chars + 2)  # room for the content plus both braces
    while index < end:
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : index]
        index += 1
    return None


def last_boxed(text: str, max_chars: int = MAX_ANSWER_CHARS) -> str | None:
    r"""The content of the last `\boxed{...}` (or `\fbox{...}`) in `text`, stripped; None when there is no usable box.

    Nested braces are matched. None when there is no box, when the last box is never closed (a truncated answer: an
    earlier box is *not* used instead), when its content is empty or longer than `max_chars`. The brace-less form
    `\boxed 5` used by some MATH solutions gives the token after the space.
    """
    last = None
    for last in _BOX_COMMAND.finditer(text):  # noqa: B007 - only the last match is wanted
        pass
    if last is None:
        return None
    index = last.end()
    while index < len(text) and text[index].isspace():
        index += 1
    if index < len(text) and text[index] == "{":
        content = _braced_group(text, index, max_chars)
    elif index > last.end():  # `\boxed 5`: the token up to whitespace or a closing `$`
        content = re.match(r"[^\s$]*", text[index : index + max_chars + 1]).group()
    else:
        content = None
    if content is None:
        return None
    content = content.strip()
    return content if 0 < len(content) <= max_chars else None


def nesting_depth(text: str) -> int:
    """The deepest nesting of `{`, `(` and `[` in `text` (escaped braces and unmatched closers are ignored)."""
    depth = deepest = 0
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1 : index + 2] in ("{", "}"):
            index += 2
            continue
        if char in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "})]":
            depth = max(depth - 1, 0)  # intervals such as (3, 4] mix bracket kinds
        index += 1
    return deepest


def count_boxes(text: str) -> int:
    r"""Number of `\boxed` / `\fbox` commands in `text`."""
    return sum(1 for _ in _BOX_COMMAND.finditer(text))


def _strip_display_delimiters(text: str) -> str:
    for opening, closing in _DISPLAY_DELIMITERS:
        if text.startswith(opening) and text.endswith(closing):
            return text[len(opening) : -len(closing)].strip()
    return text


def normalize_answer(text: str) -> str:
    r"""Normalise a final answer (a reference or the content of a completion's box) so that math-verify parses it.

    * every unescaped `$` is removed: `$\frac{1}{2}$`, lists written `$69$,$84$` and stray `$ $` inside an answer
      (one Minerva reference) all become plain LaTeX; `\$` (a currency sign) is kept;
    * `\(...\)` / `\[...\]` around the whole answer, a leading `\approx` and one trailing full stop or comma go;
    * thousands separators go from a plain number ("2,125" -> "2125") and MATH's `,\!` from anywhere
      (`\frac{1}{20,\!000}`); a plain integer loses a zero fraction ("27.0" -> "27") and leading zeros ("025" -> "25");
      scientific notation becomes a power of ten ("4.5e33" -> `4.5 \times 10^{33}`, not 4.5·e·33);
    * a few spellings math-verify misreads are repaired: `np.arcsin(x)` -> `\arcsin(x)`, `-1./3` -> `-1/3`,
      `\frac\pi 2` -> `\frac{\pi} 2`, and `\phantom{...}` is dropped.

    Plain-number rules only apply when the whole answer is that number, so lists such as "2500,7500" stay lists.
    Anything else (units, `\text{}`, `^\circ`, `\dfrac`, ...) is left to math-verify's own LaTeX normalisation.
    """
    text = _UNESCAPED_DOLLAR.sub("", text).strip()
    if text[-1:] in (".", ",") and not text.endswith(("\\.", "\\,")):  # `\,` is a thin space, not punctuation
        text = text[:-1].rstrip()
    text = _LEADING_APPROX.sub("", _strip_display_delimiters(text))
    text = _LATEX_THOUSANDS_SEPARATOR.sub("", text)
    text = _NUMPY_CALL.sub(r"\\\1", text)
    text = _FRAC_GREEK_NUMERATOR.sub(r"\\\1{\2}", text)
    text = _PHANTOM.sub("", text)
    text = _DIGIT_THEN_BARE_DOT.sub("", text)
    return _normalize_plain_number(text)


def _normalize_plain_number(text: str) -> str:
    if _THOUSANDS_NUMBER.fullmatch(text):
        text = _THOUSANDS_SEPARATOR.sub("", text)
    scientific = _SCIENTIFIC_NUMBER.fullmatch(text)
    if scientific:
        mantissa, exponent = scientific.groups()
        return f"{mantissa} \\times 10^{{{int(exponent)}}}"
    zero_fraction = _INTEGER_WITH_ZERO_FRACTION.fullmatch(text)
    if zero_fraction:
        text = zero_fraction.group(1)
    integer = _PLAIN_INTEGER.fullmatch(text)
    if integer:
        sign, digits = integer.groups()
        text = sign + (digits.lstrip("0") or "0")
    return text


def normalize_reference(reference) -> str | None:
    r"""The normalised final answer of a reference, or None when it cannot be graded.

    A full solution (any text containing `\boxed`) contributes the content of its last box; JSON numbers (AIME answers
    stored as ints, AMC answers as floats) are turned into strings first. None for a missing or empty reference, a
    solution whose last box never closes, or an answer longer than `MAX_ANSWER_CHARS`.
    """
    if reference is None:
        return None
    text = str(reference).strip()
    if _BOX_COMMAND.search(text):
        text = last_boxed(text)
        if text is None:
            return None
    text = normalize_answer(text)
    return text if 0 < len(text) <= MAX_ANSWER_CHARS else None


def extract_answer(completion) -> str | None:
    """The normalised content of the completion's last box, or None when it has no usable box (graded 0.0).

    A box nested deeper than `MAX_NESTING_DEPTH` is not usable: it would cost seconds of parsing and is no answer.
    """
    boxed = last_boxed(completion_text(completion))
    if boxed is None or nesting_depth(boxed) > MAX_NESTING_DEPTH:
        return None
    return normalize_answer(boxed)


# --------------------------------------------------------------------------------------------------------------------
# Grading with math-verify (runs inside a worker process)
# --------------------------------------------------------------------------------------------------------------------


class Verdict(NamedTuple):
    """The outcome of grading one completion: the reward and, for logging, what both sides parsed to."""

    reward: float | None
    gold_parsed: str
    answer_parsed: str


class _SoftTimeout(BaseException):
    """Raised by the worker's alarm. A BaseException, so math-verify's `except Exception` blocks let it through."""


@lru_cache(maxsize=1)
def _extraction_config():
    from math_verify import LatexExtractionConfig

    # math-verify's full LaTeX normalisation (units, malformed operators such as `\frac12`, nits) on both sides; the
    # text is always `\boxed{...}` built by us, so the box is the only anchor needed.
    return [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]


@lru_cache(maxsize=4096)
def _parse_boxed(answer: str) -> list:
    """math-verify's parse of `\\boxed{answer}`: sympy objects and/or the raw string; [] when nothing is found."""
    from math_verify import parse

    # Timeouts are handled by the caller (`_serve`'s alarm or the parent's kill), so math-verify's own are off.
    return parse(
        f"\\boxed{{{answer}}}",
        extraction_config=_extraction_config(),
        extraction_mode="first_match",
        parsing_timeout=None,
    )


def grade(reference: str, answer: str | None) -> Verdict:
    """Grade a normalised answer (None: no usable box) against a normalised reference, without any time bound.

    This is what a worker runs; call it directly only on trusted inputs. The reference is parsed first so that an
    unparseable reference yields None whatever the answer.
    """
    from math_verify import verify

    gold = _parse_boxed(reference)
    if not gold:
        return Verdict(None, "[unparseable]", "[skipped]")
    if answer is None:
        return Verdict(0.0, str(gold), "[no boxed answer]")
    parsed = _parse_boxed(answer)
    if not parsed:
        return Verdict(0.0, str(gold), "[unparseable]")
    return Verdict(float(verify(gold, parsed, timeout_seconds=None)), str(gold), str(parsed))


def _grade_with_alarm(reference: str, answer: str | None, seconds: float) -> Verdict:
    """`grade` under a `setitimer` alarm (the worker's main thread): a soft timeout that keeps the worker alive."""

    def on_alarm(signum, frame):
        raise _SoftTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return grade(reference, answer)
    except _SoftTimeout:
        return Verdict(0.0, "[timeout]", "[timeout]")
    except Exception as error:  # a grading failure must not take the worker down; it is a wrong answer
        return Verdict(0.0, "[error]", f"[error: {type(error).__name__}]")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _serve() -> None:
    """Worker loop: one JSON request per stdin line, `[reference, answer, seconds]`; one JSON `Verdict` per line."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr and cannot corrupt the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; a worker exits when its stdin closes
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = WORKER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(WORKER_MEMORY_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # timeouts are reported through the Verdict instead
    import math_verify  # noqa: F401 - import before announcing readiness, so start-up is not charged to a request

    protocol.write("ready\n")
    for line in iter(sys.stdin.buffer.readline, b""):
        reference, answer, seconds = json.loads(line)
        protocol.write(json.dumps(_grade_with_alarm(reference, answer, seconds)) + "\n")


# --------------------------------------------------------------------------------------------------------------------
# The worker pool (runs in the calling process)
# --------------------------------------------------------------------------------------------------------------------

# Loads this file by path in a fresh interpreter with the parent's sys.path, then serves.
_BOOTSTRAP = (
    "import importlib.util, json, sys\n"
    "sys.path[:] = json.loads(sys.argv[2])\n"
    "spec = importlib.util.spec_from_file_location('_scope_trl_grader', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = module\n"
    "spec.loader.exec_module(module)\n"
    "module._serve()\n"
)


class _Worker:
    """One grading subprocess and the request it is working on."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, os.path.abspath(__file__), json.dumps(sys.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.ready = False
        self.job: int | None = None
        self.deadline = 0.0

    def send(self, job: int, reference: str, answer: str | None, seconds: float) -> None:
        self.process.stdin.write((json.dumps([reference, answer, seconds]) + "\n").encode())
        self.process.stdin.flush()
        self.job, self.deadline = job, time.monotonic() + seconds + KILL_GRACE_SECONDS

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):  # the pipe may already be broken
                stream.close()


def _read_verdict(worker: _Worker) -> Verdict | None:
    """The worker's answer to its job; None when it died (end of file) or wrote something unreadable."""
    line = worker.process.stdout.readline()
    try:
        return Verdict(*json.loads(line))
    except (ValueError, TypeError):
        return None


def _start_workers(count: int) -> list[_Worker]:
    """Start `count` workers in parallel and wait until each has imported math-verify."""
    workers = [_Worker() for _ in range(count)]
    deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
    with selectors.DefaultSelector() as selector:
        for worker in workers:
            selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
        waiting = len(workers)
        while waiting:
            events = selector.select(timeout=max(deadline - time.monotonic(), 0))
            if not events:
                break
            for key, _ in events:
                worker = key.data
                worker.ready = worker.process.stdout.readline() == b"ready\n"
                selector.unregister(key.fileobj)
                waiting -= 1
    if not all(worker.ready for worker in workers):
        for worker in workers:
            worker.kill()
        raise RuntimeError(
            f"A math-verify grading worker did not start within {WORKER_START_TIMEOUT_SECONDS:.0f} s "
            f"(command: {sys.executable} -c <bootstrap>); see its stderr above."
        )
    return workers


class GraderPool:
    """Persistent grading subprocesses that bound each grading in wall-clock time, whatever the calling thread.

    `grade(jobs)` sends the (normalised reference, normalised answer or None) pairs to the workers, several at a time,
    and returns one `Verdict` per job in order. A worker that has not answered `timeout_seconds + KILL_GRACE_SECONDS`
    after receiving a job is killed (the job gets 0.0) and replaced on the next dispatch.
    """

    def __init__(self, num_workers: int | None = None, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS):
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds}.")
        self.num_workers = num_workers or min(4, os.cpu_count() or 1)
        self.timeout_seconds = timeout_seconds
        self.pid = os.getpid()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    def _idle_workers(self) -> list[_Worker]:
        """Workers free for a job, replacing dead ones and starting missing ones."""
        for worker in [w for w in self._workers if w.job is None and w.process.poll() is not None]:
            worker.kill()  # died while idle (a busy worker's death shows up as end-of-file instead)
            self._workers.remove(worker)
        missing = self.num_workers - len(self._workers)
        if missing > 0:
            self._workers += _start_workers(missing)
        return [w for w in self._workers if w.job is None]

    def _dispatch(self, worker: _Worker, job: int, reference: str, answer: str | None, seconds: float) -> bool:
        try:
            worker.send(job, reference, answer, seconds)
            return True
        except OSError:  # the worker died between jobs: drop it, a fresh one is started on the next round
            worker.kill()
            self._workers.remove(worker)
            return False

    def grade(self, jobs: Sequence[tuple[str, str | None]], timeout_seconds: float | None = None) -> list[Verdict]:
        seconds = float(self.timeout_seconds if timeout_seconds is None else timeout_seconds)
        if seconds <= 0:
            raise ValueError(f"timeout_seconds must be > 0, got {seconds}.")
        results: list[Verdict | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        busy: dict[int, _Worker] = {}
        with self._lock, selectors.DefaultSelector() as selector:
            try:
                failed_sends = 0
                while pending or busy:
                    for worker in self._idle_workers():
                        if not pending:
                            break
                        job = pending[0]
                        if not self._dispatch(worker, job, *jobs[job], seconds):
                            failed_sends += 1
                            if failed_sends > 3 * self.num_workers:
                                raise RuntimeError("math-verify grading workers keep dying before accepting a job.")
                            continue
                        pending.popleft()
                        busy[job] = worker
                        selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
                    if not busy:
                        continue
                    wait = max(min(w.deadline for w in busy.values()) - time.monotonic(), 0)
                    for key, _ in selector.select(timeout=wait):
                        verdict = _read_verdict(key.data)
                        if verdict is None:
                            logger.warning("A math-verify grading worker died; its job counts as 0.0.")
                        results[key.data.job] = verdict or Verdict(0.0, "[crash]", "[crash]")
                        self._release(selector, busy, key.data, kill=verdict is None)
                    now = time.monotonic()
                    for worker in [w for w in busy.values() if w.deadline <= now]:
                        # The soft alarm did not fire (e.g. a long C-level operation): rare enough to report.
                        logger.warning(f"Killed a grading worker that ignored its {seconds:g} s timeout (0.0).")
                        results[worker.job] = Verdict(0.0, "[timeout]", "[timeout: worker killed]")
                        self._release(selector, busy, worker, kill=True)
            except BaseException:
                # An error or Ctrl-C mid-batch: the busy workers' answers would be read by the next call; drop them.
                for worker in list(busy.values()):
                    self._release(selector, busy, worker, kill=True)
                raise
        return results

    def _release(self, selector, busy: dict[int, _Worker], worker: _Worker, kill: bool) -> None:
        selector.unregister(worker.process.stdout)
        del busy[worker.job]
        worker.job = None
        if kill:
            worker.kill()
            self._workers.remove(worker)

    def close(self) -> None:
        """Stop the workers: closing stdin ends their loop; any that linger are killed."""
        with self._lock:
            for worker in self._workers:
                try:
                    worker.process.stdin.close()
                    worker.process.wait(timeout=2)
                except (OSError, subprocess.TimeoutExpired):
                    pass
                worker.kill()
            self._workers = []


_default_pool: GraderPool | None = None
_default_pool_lock = threading.Lock()


def configure_grader(num_workers: int | None = None, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> GraderPool:
    """Replace the shared pool used by `accuracy_reward` (default: min(4, CPU count) workers, 5 s per completion)."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is not None and _default_pool.pid == os.getpid():
            _default_pool.close()
        _default_pool = GraderPool(num_workers, timeout_seconds)
        return _default_pool


def get_grader() -> GraderPool:
    """The shared pool, created on first use; a process forked from the owner gets its own pool."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None or _default_pool.pid != os.getpid():
            _default_pool = GraderPool()
        return _default_pool


@atexit.register
def _close_default_pool() -> None:
    if _default_pool is not None and _default_pool.pid == os.getpid():
        _default_pool.close()


# --------------------------------------------------------------------------------------------------------------------
# Reward functions (TRL signature)
# --------------------------------------------------------------------------------------------------------------------


def accuracy_reward(
    completions,
    solution,
    log_extra: Callable[[str, list], None] | None = None,
    timeout_seconds: float | None = None,
    **kwargs,
) -> list[float | None]:
    r"""Binary math-verify reward: 1.0 when the completion's last `\boxed{}` equals the reference, else 0.0.

    Args:
        completions: TRL's completions, conversational (a list of message dicts) or plain strings.
        solution: reference answers in any common form (see `normalize_reference`), one per completion.
        log_extra: TRL's callback for extra completion-table columns; logs "solution", "gold_parsed" and
            "answer_parsed" when given.
        timeout_seconds: wall-clock bound per completion (default: the shared pool's, 5 s). A timeout gives 0.0.
        **kwargs: the other dataset columns and trainer arguments TRL passes; ignored.

    Returns:
        One reward per completion: 1.0, 0.0, or None when the reference itself cannot be graded (the rollout is then
        excluded from SCOPE's routing).
    """
    if len(completions) != len(solution):
        raise ValueError(f"Got {len(completions)} completions but {len(solution)} solutions.")
    references = [normalize_reference(reference) for reference in solution]
    verdicts: list[Verdict | None] = [
        Verdict(None, "[unparseable]", "[skipped]") if reference is None else None for reference in references
    ]
    todo = [i for i, reference in enumerate(references) if reference is not None]
    if todo:
        jobs = [(references[i], extract_answer(completions[i])) for i in todo]
        for i, verdict in zip(todo, get_grader().grade(jobs, timeout_seconds)):
            verdicts[i] = verdict
    if log_extra is not None:
        log_extra("solution", [str(reference) for reference in solution])
        log_extra("gold_parsed", [verdict.gold_parsed for verdict in verdicts])
        log_extra("answer_parsed", [verdict.answer_parsed for verdict in verdicts])
    return [verdict.reward for verdict in verdicts]


def format_reward(completions, **kwargs) -> list[float]:
    r"""1.0 when the completion has exactly one `\boxed{...}` and it is closed and non-empty, else 0.0.

    A single box is by construction the final one, i.e. the answer `accuracy_reward` grades; text after it (such as
    "I hope it is correct.") is allowed. Several boxes (hedging between answers), an unclosed box (a truncated
    answer), an empty box, or one longer than `MAX_ANSWER_CHARS` get 0.0.
    """
    rewards = []
    for completion in completions:
        text = completion_text(completion)
        rewards.append(float(count_boxes(text) == 1 and last_boxed(text) is not None))
    return rewards
