r"""Coverage and self-consistency of `scope_trl.rewards.accuracy_reward` against TRL's, on real reference answers.

For every reference answer of the offline evaluation sets (`shared/data/math_eval/*.jsonl`; a seeded sample of
math_train) it measures, for our reward and for `trl.rewards.accuracy_reward`:

* parse: the share of references the reward can grade (not None); for ours also sympy: the share whose parse
  contains a sympy object, not only math-verify's raw-string fallback (those are graded by exact string match);
* self: the share of completions "... \boxed{<reference>}." graded 1.0 (self-consistency);
* other: the share of completions boxing another problem's reference of the same file graded 0.0. The other reference
  is drawn with a fixed seed among those that differ from this one after normalisation and, when both are plain
  numbers, in value.

Completions are conversational (one assistant message), as TRL passes them. Failures of our reward are listed after the
table. `--pathological` also times a few adversarial completions for both rewards, on the main thread and in a
`threading.Thread`, each in its own subprocess with a wall-clock limit (TRL's reward cannot bound them off the main
thread).

    python benchmarks/reward_grading.py                  # all files, 2000 of math_train (a few minutes on 2 cores)
    python benchmarks/reward_grading.py --limit 50 --skip-trl
    python benchmarks/reward_grading.py --pathological
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "math_eval"
FILES = ["aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench", "gsm8k_test", "math_train"]
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")

PATHOLOGICAL = {
    "power tower": r"The answer is \boxed{9^{9^{9^{9}}}}.",
    "200k chars": "so " * 66_667 + r"\boxed{1}",
    "nested braces": r"\boxed{" + "{" * 400 + "1" + "}" * 400 + "}",
    "12 nested": r"\boxed{" + "{" * 12 + "1" + "}" * 12 + "}",
    "unclosed box": r"Thus \boxed{1" + " and more" * 1000,
    "huge factorial": r"\boxed{(10^{100})!}",
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory with the math_eval *.jsonl files")
    parser.add_argument("--math-train-sample", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=None, help="at most this many references per file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-trl", action="store_true", help="measure only our reward")
    parser.add_argument("--show-failures", type=int, default=100, help="list at most this many of our failures")
    parser.add_argument("--pathological", action="store_true", help="also time adversarial completions")
    parser.add_argument("--pathological-limit", type=float, default=30.0, help="wall-clock limit per run, seconds")
    return parser.parse_args()


def load_references(path: Path, sample: int | None, limit: int | None, seed: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if sample is not None and sample < len(rows):
        rows = random.Random(seed).sample(rows, sample)
    return rows[:limit] if limit else rows


def differs(a: str | None, b: str | None) -> bool:
    """True when two normalised references differ as strings and, if both are plain numbers, as values."""
    if a is None or b is None or a == b:
        return False
    if _NUMBER.fullmatch(a) and _NUMBER.fullmatch(b):
        return float(a) != float(b)
    return True


def pick_others(answers: list[str], seed: int) -> list[int | None]:
    """For each reference, the index of a different reference of the same file (None if every other one is equal)."""
    from scope_trl.rewards import normalize_reference

    normalised = [normalize_reference(answer) for answer in answers]
    rng = random.Random(seed)
    others = []
    for i in range(len(answers)):
        candidates = list(range(len(answers)))
        rng.shuffle(candidates)
        others.append(next((j for j in candidates if j != i and differs(normalised[i], normalised[j])), None))
    return others


def boxed_completion(answer: str) -> list[dict]:
    return [{"role": "assistant", "content": f"Let me check once more. The final answer is \\boxed{{{answer}}}."}]


def measure(reward_fn, answers: list[str], others: list[int | None]) -> dict:
    """Grade the self and other completions; returns the rates, the rewards and the elapsed time."""
    start = time.perf_counter()
    self_rewards = reward_fn([boxed_completion(a) for a in answers], answers)
    pairs = [(i, j) for i, j in enumerate(others) if j is not None]
    other_rewards = reward_fn([boxed_completion(answers[j]) for _, j in pairs], [answers[i] for i, _ in pairs])
    elapsed = time.perf_counter() - start
    n = max(len(answers), 1)
    return {
        "parse": sum(r is not None for r in self_rewards) / n,
        "self": sum(r == 1.0 for r in self_rewards) / n,
        "other": sum(r == 0.0 for r in other_rewards) / max(len(pairs), 1),
        "self_rewards": self_rewards,
        "other_rewards": other_rewards,
        "pairs": pairs,
        "seconds": elapsed,
        "gradings": len(answers) + len(pairs),
    }


def sympy_share(answers: list[str]) -> float:
    """Share of references whose normalised form math-verify parses into a sympy object (in-process, no bound)."""
    from sympy import Basic
    from sympy.matrices import MatrixBase

    from scope_trl.rewards import _parse_boxed, normalize_reference

    normalised = [normalize_reference(answer) for answer in answers]
    parsed = [_parse_boxed(answer) if answer is not None else [] for answer in normalised]
    return sum(any(isinstance(x, (Basic, MatrixBase)) for x in p) for p in parsed) / max(len(answers), 1)


def trl_reward():
    from trl.rewards import accuracy_reward

    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # TRL's timeouts would print one warning per case
    return accuracy_reward


def grading_overhead(warmup: list[str], answers: list[str]) -> tuple[float, float]:
    """Seconds per completion: one worker vs `grade` called in this process (no time bound).

    Both paths are first warmed up on other references (sympy imports parts of itself lazily), then grade `answers`
    with empty parse caches.
    """
    from scope_trl.rewards import (
        _parse_boxed,
        accuracy_reward,
        configure_grader,
        extract_answer,
        grade,
        normalize_reference,
    )

    def in_process(references):
        for reference in references:
            normalised = normalize_reference(reference)
            if normalised is not None:
                grade(normalised, extract_answer(boxed_completion(reference)))

    configure_grader(num_workers=1)
    accuracy_reward([boxed_completion(a) for a in warmup], warmup)
    in_process(warmup)
    _parse_boxed.cache_clear()
    completions = [boxed_completion(a) for a in answers]
    start = time.perf_counter()
    accuracy_reward(completions, answers)
    pool = (time.perf_counter() - start) / len(answers)
    start = time.perf_counter()
    in_process(answers)
    local = (time.perf_counter() - start) / len(answers)
    configure_grader()
    return pool, local


_PATHOLOGICAL_RUNNER = r"""
import json, sys, threading, time
which, in_thread, text = sys.argv[1], sys.argv[2] == "thread", json.load(sys.stdin)
if which == "ours":
    from scope_trl.rewards import accuracy_reward, get_grader
    get_grader().grade([("1", "1")])  # start the workers before timing
else:
    import logging
    from trl.rewards import accuracy_reward
    logging.disable(logging.CRITICAL)
out = []
start = time.perf_counter()
run = lambda: out.append(accuracy_reward([[{"role": "assistant", "content": text}]], ["1"]))
if in_thread:
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join()
else:
    run()
print(json.dumps([out[0][0], time.perf_counter() - start]), flush=True)
"""


def time_pathological(which: str, mode: str, text: str, limit: float) -> str:
    """'reward / seconds' of one adversarial completion in a fresh subprocess, or '> limit' when it was killed."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PATHOLOGICAL_RUNNER, which, mode],
            input=json.dumps(text),  # 200k characters are too long for a command-line argument
            capture_output=True,
            text=True,
            timeout=limit,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        return f"> {limit:.0f} s (killed)"
    if result.returncode != 0:
        return f"error rc={result.returncode}"
    reward, seconds = json.loads(result.stdout.strip().splitlines()[-1])
    return f"{reward} / {seconds:.1f} s"


def main():
    args = parse_args()
    if not args.data.is_dir():
        sys.exit(f"No data directory at {args.data}; pass --data.")
    from scope_trl.rewards import accuracy_reward, get_grader

    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.ERROR)  # in-process parses here run without math-verify's timeouts
    start = time.perf_counter()
    get_grader().grade([("1", "1")])
    startup = time.perf_counter() - start
    trl = None if args.skip_trl else trl_reward()

    header = f"{'file':<14}{'n':>6}  {'ours: parse':>11}{'sympy':>8}{'self':>8}{'other':>8}{'ms/grade':>9}"
    header += "" if trl is None else f"  {'TRL: parse':>10}{'self':>8}{'other':>8}{'ms/grade':>9}"
    print(header)
    print("-" * len(header))
    failures = []
    for name in FILES:
        path = args.data / f"{name}.jsonl"
        if not path.exists():
            print(f"{name:<14} (missing)")
            continue
        sample = args.math_train_sample if name == "math_train" else None
        rows = load_references(path, sample, args.limit, args.seed)
        answers = [row["answer"] for row in rows]
        others = pick_others(answers, args.seed)
        ours = measure(accuracy_reward, answers, others)
        line = f"{name:<14}{len(rows):>6}  {ours['parse']:>11.2%}{sympy_share(answers):>8.2%}"
        line += f"{ours['self']:>8.2%}{ours['other']:>8.2%}"
        line += f"{1000 * ours['seconds'] / ours['gradings']:>9.1f}"
        if trl is not None:
            theirs = measure(trl, answers, others)
            line += f"  {theirs['parse']:>10.2%}{theirs['self']:>8.2%}{theirs['other']:>8.2%}"
            line += f"{1000 * theirs['seconds'] / theirs['gradings']:>9.1f}"
        print(line, flush=True)
        for i, reward in enumerate(ours["self_rewards"]):
            if reward != 1.0:
                failures.append((name, rows[i]["id"], "self", answers[i], answers[i], reward))
        for (i, j), reward in zip(ours["pairs"], ours["other_rewards"]):
            if reward != 0.0:
                failures.append((name, rows[i]["id"], "other", answers[i], answers[j], reward))

    print(f"\nworker start-up (first call, {get_grader().num_workers} workers): {startup:.2f} s")
    math500, math_train = args.data / "math500.jsonl", args.data / "math_train.jsonl"
    if math500.exists() and math_train.exists():
        size = min(args.limit or 200, 200)
        warmup = [row["answer"] for row in load_references(math_train, size // 2 + 1, None, args.seed + 1)]
        answers = [row["answer"] for row in load_references(math500, None, size, args.seed)]
        pool, local = grading_overhead(warmup, answers)
        print(f"{len(answers)} math500 self completions: {1000 * pool:.2f} ms each through one worker, ", end="")
        print(f"{1000 * local:.2f} ms in-process (overhead {1000 * (pool - local):.2f} ms)")

    print(f"\nOur failures ({len(failures)}):")
    for name, row_id, kind, reference, boxed, reward in failures[: args.show_failures]:
        print(f"  {name} {row_id} [{kind}] reference={reference!r} boxed={boxed!r} -> {reward}")

    if args.pathological:
        limit = args.pathological_limit
        print(f"\nAdversarial completions against reference '1' (reward / wall time, limit {limit} s):")
        modes = [("ours", "main"), ("ours", "thread")]
        modes += [] if args.skip_trl else [("trl", "main"), ("trl", "thread")]
        print(f"{'completion':<16}" + "".join(f"{which + ' ' + mode:>22}" for which, mode in modes))
        for label, text in PATHOLOGICAL.items():
            cells = [time_pathological(which, mode, text, limit) for which, mode in modes]
            print(f"{label:<16}" + "".join(f"{cell:>22}" for cell in cells), flush=True)


if __name__ == "__main__":
    main()
