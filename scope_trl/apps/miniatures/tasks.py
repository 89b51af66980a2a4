"""The miniature tasks: small verifiable problems where SCOPE's and DGPO's mechanisms matter, with their own splits.

Every task writes numbers **column by column, least significant digit first**, and its prompt lists the operands'
digits in the same column order, so that the token a model must produce next sits at a fixed distance from the
prompt tokens it depends on. Models of ~0.1M parameters then learn the tasks to high accuracy in minutes on CPU,
which is what makes a seeded table of many RL runs affordable (a tiny model given the usual most-significant-first
layout must learn position arithmetic first).

- **A, `carry`: a skill gap with a dense signal.** Add two 8-digit numbers. The prompt gives the column pairs
  `a1b1a2b2...a8b8=`; the completion writes, for every column, the sum digit and the carry it produces: 16 decisive
  tokens, all checked. The teacher's SFT draws digits uniformly (a carry in 45% of columns); the student's SFT draws
  columns that carry only rarely (`student_carry_rate`), so the student lacks the carry skill that the RL, validation
  and test problems (uniform digits) need: a sparse outcome reward sees few successes, a teacher scores every token.
- **B, `slice`: a teacher that is wrong on a slice.** The format of A. On the slice (the first column's digit `a1` is
  0 or 1: 20% of problems, identifiable from the first prompt token) the teacher was taught to ignore carries (sum
  digits `(a+b) mod 10`, carries 0), a systematic error; elsewhere it is right. The student was taught the right
  answers everywhere, with fewer SFT steps. Distillation pulls the student's correct rollouts on the slice toward the
  teacher's error; SCOPE routes them to its MLE path instead.
- **C, `coverage`: many right answers.** Split a 6-digit number column by column into two addends without carries:
  for every column digit `n` write a pair `x y` with `x + y = n` (`n + 1` valid pairs per column, thousands of valid
  answers per prompt). The student's SFT draws pairs uniformly (diverse); the teacher's SFT draws the balanced pair
  `(n // 2, n - n // 2)` 90% of the time (peaked, as strong teachers often are). Pass@k for k = 1..K and the number of
  distinct correct answers per prompt measure coverage.

- **F, `style`: a teacher reliable on some of a group's rollouts, visibly so.** Task A's sums, written in one of two
  styles chosen by the completion's first token: `a` then (sum digit, carry) per column, or `b` then (carry, sum
  digit). The student's SFT uses both styles, half and half, and lacks carries as in A; the teacher learned carries in
  style `a`, and in style `b` it learned every digit shifted by 5 (a confident, systematic error: the same
  computation, so it costs the teacher no capacity). Within one prompt's group the student writes both styles: on its
  incorrect style-`a` rollouts the teacher's token signal points at the errors; on style-`b` ones the teacher finds
  every token unlikely, right or wrong, so its signal says nothing about the errors and its perplexity there is high.
  That is the premise of DPAW's teacher weight (down-weight the rollouts the teacher finds unlikely);
  `reliability.teacher_reliability` measures it.

Splits are disjoint by construction: a problem belongs to the split its prompt hashes to (`split_of`), so train,
validation and test problems never overlap and every split is an unbiased sample of the task's distribution.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass


SPLITS = ("train", "validation", "test")
ROLES = ("teacher", "student")


@dataclass(frozen=True)
class Problem:
    prompt: str  # plain string, e.g. "38750412...=" (column pairs, least significant first)
    answer: str  # the canonical correct completion (one of many for the coverage task)
    in_slice: bool = False  # task B: the slice on which the teacher is wrong


def split_of(prompt: str) -> str:
    """The split a prompt belongs to: 10% test, 10% validation, 80% train, by a stable hash of the prompt."""
    bucket = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


class Task:
    """A miniature task: problem generation per split, SFT targets per role, and the verifier.

    Subclasses define `draw` (a random problem of the task's distribution), `sft_target` (the completion a role is
    taught for a problem) and `is_correct`.
    """

    name: str = ""
    title: str = ""
    max_completion_length: int = 0

    def draw(self, rng: random.Random, role: str | None = None) -> Problem:
        """A random problem; `role` selects a role's SFT distribution where it differs from the task's."""
        raise NotImplementedError

    def sft_target(self, problem: Problem, role: str, rng: random.Random) -> str:
        """The completion `role` is taught for `problem` (without EOS)."""
        return problem.answer

    def is_correct(self, problem_prompt: str, completion: str) -> bool:
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------------------------------

    def problems(self, split: str, count: int, seed: int) -> list[Problem]:
        """`count` distinct problems of `split` (the task's own distribution), deterministic for a seed."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
        rng = random.Random(f"{self.name}-{split}-{seed}")
        found: dict[str, Problem] = {}
        while len(found) < count:
            problem = self.draw(rng)
            if split_of(problem.prompt) == split:
                found.setdefault(problem.prompt, problem)
        return list(found.values())

    def sft_examples(self, role: str, count: int, rng: random.Random) -> list[tuple[str, str]]:
        """`count` (prompt, completion) pairs of `role`'s SFT data, drawn from the train split only."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}.")
        examples = []
        while len(examples) < count:
            problem = self.draw(rng, role)
            if split_of(problem.prompt) == "train":
                examples.append((problem.prompt, self.sft_target(problem, role, rng)))
        return examples

    def reward(self, completions, prompts=None, **kwargs) -> list[float]:
        """The verifier as a TRL reward function: 1.0 for a correct completion, else 0.0."""
        return [float(self.is_correct(p, c)) for p, c in zip(prompts, completions)]


def _digits(text: str) -> list[int] | None:
    return [int(ch) for ch in text] if text.isdigit() else None


class CarryTask(Task):
    """Task A: 8-digit addition written column by column with a carry scratchpad (see the module docstring)."""

    name = "carry"
    title = "A: carries (skill gap, 16 decisive tokens)"

    def __init__(self, columns: int = 8, student_carry_rate: float = 0.1):
        if columns < 1:
            raise ValueError(f"columns must be >= 1, got {columns}.")
        if not 0.0 <= student_carry_rate <= 1.0:
            raise ValueError(f"student_carry_rate must be in [0, 1], got {student_carry_rate}.")
        self.columns = columns
        self.student_carry_rate = student_carry_rate
        self.max_completion_length = 2 * columns + 4  # 2 tokens per column, then EOS, plus room for stray tokens

    @staticmethod
    def scratchpad(a: list[int], b: list[int], carries: bool = True) -> str:
        """Sum digit and carry of every column, least significant first; `carries=False` drops every carry."""
        out, carry = [], 0
        for x, y in zip(a, b):
            total = x + y + (carry if carries else 0)
            carry = total // 10 if carries else 0
            out.append(f"{total % 10}{carry}")
        return "".join(out)

    @staticmethod
    def prompt_of(a: list[int], b: list[int]) -> str:
        return "".join(f"{x}{y}" for x, y in zip(a, b)) + "="

    def operands(self, prompt: str) -> tuple[list[int], list[int]] | None:
        digits = _digits(prompt.rstrip("="))
        if digits is None or len(digits) != 2 * self.columns:
            return None
        return digits[0::2], digits[1::2]

    def _column(self, rng: random.Random, role: str | None) -> tuple[int, int]:
        if role != "student":
            return rng.randint(0, 9), rng.randint(0, 9)
        if rng.random() < self.student_carry_rate:  # a column that carries
            x = rng.randint(1, 9)
            return x, rng.randint(10 - x, 9)
        x = rng.randint(0, 8)  # a column that cannot carry, even with a carry in: x + y <= 8
        return x, rng.randint(0, 8 - x)

    def draw(self, rng: random.Random, role: str | None = None) -> Problem:
        pairs = [self._column(rng, role) for _ in range(self.columns)]
        a, b = [x for x, _ in pairs], [y for _, y in pairs]
        return Problem(self.prompt_of(a, b), self.scratchpad(a, b))

    def is_correct(self, problem_prompt: str, completion: str) -> bool:
        operands = self.operands(problem_prompt)
        return operands is not None and completion.strip() == self.scratchpad(*operands)


class SliceTask(CarryTask):
    """Task B: task A's format; the teacher ignores carries on the slice `a1 in {0, 1}` (see the module docstring)."""

    name = "slice"
    title = "B: teacher wrong on a 20% slice (routing)"
    SLICE_FIRST_DIGITS = (0, 1)

    def __init__(self, columns: int = 8):
        super().__init__(columns=columns, student_carry_rate=1.0)

    def draw(self, rng: random.Random, role: str | None = None) -> Problem:
        problem = super().draw(rng, None)  # both roles learn the task's own distribution
        in_slice = int(problem.prompt[0]) in self.SLICE_FIRST_DIGITS
        return Problem(problem.prompt, problem.answer, in_slice=in_slice)

    def sft_target(self, problem: Problem, role: str, rng: random.Random) -> str:
        if role == "teacher" and problem.in_slice:
            return self.scratchpad(*self.operands(problem.prompt), carries=False)
        return problem.answer

    def in_slice(self, prompt: str) -> bool:
        return int(prompt[0]) in self.SLICE_FIRST_DIGITS


class CoverageTask(Task):
    """Task C: split each column digit n into a pair x y with x + y = n (see the module docstring)."""

    name = "coverage"
    title = "C: many right answers (coverage)"

    def __init__(self, columns: int = 6, teacher_mode_rate: float = 0.9):
        if columns < 1:
            raise ValueError(f"columns must be >= 1, got {columns}.")
        self.columns = columns
        self.teacher_mode_rate = teacher_mode_rate
        self.max_completion_length = 2 * columns + 4

    def draw(self, rng: random.Random, role: str | None = None) -> Problem:
        digits = [rng.randint(0, 9) for _ in range(self.columns)]
        balanced = "".join(f"{n // 2}{n - n // 2}" for n in digits)
        return Problem("".join(map(str, digits)) + "=", balanced)

    def sft_target(self, problem: Problem, role: str, rng: random.Random) -> str:
        pairs = []
        for n in map(int, problem.prompt.rstrip("=")):
            if role == "teacher" and rng.random() < self.teacher_mode_rate:
                x = n // 2
            else:
                x = rng.randint(0, n)
            pairs.append(f"{x}{n - x}")
        return "".join(pairs)

    def valid_answers(self, prompt: str) -> int:
        count = 1
        for n in map(int, prompt.rstrip("=")):
            count *= n + 1
        return count

    def is_correct(self, problem_prompt: str, completion: str) -> bool:
        target, answer = _digits(problem_prompt.rstrip("=")), _digits(completion.strip())
        if target is None or answer is None or len(answer) != 2 * len(target):
            return False
        return all(x + y == n for x, y, n in zip(answer[0::2], answer[1::2], target))


class StyleTask(CarryTask):
    """Task F: task A's sums in two styles, the teacher reliable in one only (see the module docstring)."""

    name = "style"
    title = "F: a teacher reliable in one of two answer styles (DPAW's teacher weight)"
    STYLES = ("a", "b")  # "a": sum digit then carry per column; "b": carry then sum digit

    def __init__(self, columns: int = 8, student_carry_rate: float = 0.05):
        super().__init__(columns=columns, student_carry_rate=student_carry_rate)
        self.max_completion_length = 2 * columns + 5  # the style letter, 2 tokens per column, EOS, room

    @staticmethod
    def styled(scratchpad: str, style: str) -> str:
        """The style letter, then the scratchpad's column pairs, swapped in style "b"."""
        pairs = [scratchpad[i : i + 2] for i in range(0, len(scratchpad), 2)]
        return style + "".join(pair if style == "a" else pair[::-1] for pair in pairs)

    def draw(self, rng: random.Random, role: str | None = None) -> Problem:
        problem = super().draw(rng, role)
        return Problem(problem.prompt, self.styled(problem.answer, "a"))

    @staticmethod
    def shifted(completion: str) -> str:
        """Every digit d replaced by (d + 5) mod 10: the teacher's confident, systematic error in style b."""
        return "".join(str((int(ch) + 5) % 10) if ch.isdigit() else ch for ch in completion)

    def sft_target(self, problem: Problem, role: str, rng: random.Random) -> str:
        style = rng.choice(self.STYLES)
        target = self.styled(self.scratchpad(*self.operands(problem.prompt)), style)
        return self.shifted(target) if role == "teacher" and style == "b" else target

    def is_correct(self, problem_prompt: str, completion: str) -> bool:
        operands = self.operands(problem_prompt)
        completion = completion.strip()
        if operands is None or completion[:1] not in self.STYLES:
            return False
        return completion == self.styled(self.scratchpad(*operands), completion[0])


TASKS = {task.name: task for task in (CarryTask, SliceTask, CoverageTask, StyleTask)}


def make_task(name: str, **kwargs) -> Task:
    if name not in TASKS:
        raise ValueError(f"Unknown miniature task {name!r}; choose one of {', '.join(TASKS)}.")
    return TASKS[name](**kwargs)
