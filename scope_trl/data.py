r"""Standard math training sets in TRL's conversational prompt-only format, with a `solution` column for the verifier.

Every loader returns a `datasets.Dataset` with

* `prompt`: `[{"role": "user", "content": question + " " + instruction}]`, preceded by a system message when
  `system_prompt` is given. The default instruction is SCOPE's prompt convention, `Put your final answer within
  \boxed{}.`, appended after the question with one space (as `scope_trl.apps.toy` does and as the common
  "... within \boxed{}." prompts do; `instruction_separator="\n"` gives a newline); `instruction=None` appends nothing.
* `solution`: the reference *final answer* as written in the source (no simplification); `scope_trl.rewards`
  normalises both sides at grading time, so thousands separators, `$...$` or "27.0" may stay.

Known layouts, detected from the column names when `layout` is not given (first match in this order):

| layout      | question column          | answer column                                   | e.g.                                  |
|-------------|--------------------------|-------------------------------------------------|---------------------------------------|
| `dapo`      | `prompt` (chat list)     | `reward_model["ground_truth"]`                  | BytedTsinghua-SIA/DAPO-Math-17k       |
| `deepmath`  | `question`               | `final_answer`                                  | zwhe99/DeepMath-103K (SCOPE's set)    |
| `gsm8k`     | `question`               | `answer`, the text after the last `####`         | openai/gsm8k                          |
| `math_eval` | `problem`                | `answer`                                        | shared/data/math_eval, MATH-500       |
| `math`      | `problem`                | `answer` if present, else the last `\boxed{}` of `solution` | Hendrycks MATH                 |

`problem_column=` / `answer_column=` override a layout's columns, or define a `generic` layout on their own. Whatever
the layout, an answer that still holds a full solution is reduced to its final answer (after `####`, else the last
`\boxed{}`), and rows whose answer is then empty (e.g. a MATH solution with an empty box) are dropped with a
warning: the verifier could only return None for them, which wastes their rollouts.

DAPO's prompts already contain the question wrapped in DAPO's own "Answer: $Answer" instruction; the wrapper is
removed (when it is recognised) so that the question receives our `\boxed{}` instruction instead of contradictory
ones. The Hub copy of DAPO-Math-17k repeats each of its ~17k problems about 100 times (BytedTsinghua-SIA/DAPO issue
#36); it is loaded as is.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path


BOXED_INSTRUCTION = "Put your final answer within \\boxed{}."

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Where a dataset keeps the question and the reference answer."""

    name: str
    problem_column: str
    answer_column: str


# Detection order matters: DAPO and DeepMath are recognised by a column unique to them before the generic pairs.
LAYOUTS = {
    "dapo": Layout("dapo", "prompt", "reward_model"),
    "deepmath": Layout("deepmath", "question", "final_answer"),
    "gsm8k": Layout("gsm8k", "question", "answer"),
    "math_eval": Layout("math_eval", "problem", "answer"),
    "math": Layout("math", "problem", "solution"),
}
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}

# DAPO-Math-17k's wrapper around each question (prefix and suffix of the user message).
_DAPO_PREFIX = re.compile(
    r"^\s*Solve the following math problem step by step\..*?where \$Answer is the answer to the problem\.\s*", re.S
)
_DAPO_SUFFIX = re.compile(r"\s*Remember to put your answer on its own line after \"Answer:\"\.?\s*$")


# --------------------------------------------------------------------------------------------------------------------
# Fields
# --------------------------------------------------------------------------------------------------------------------


def final_answer(answer) -> str:
    r"""The final answer held in `answer`: the text after the last `####` (GSM8K), else the content of the last
    `\boxed{}` when there is one (a full solution), else the stripped text. '' when nothing usable is left."""
    from .rewards import count_boxes, last_boxed

    if answer is None:
        return ""
    text = str(answer).strip()  # ints and floats (AIME, AMC) become strings
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    if count_boxes(text):
        return last_boxed(text) or ""
    return text


def dapo_question(prompt) -> str:
    """The question inside a (DAPO) chat prompt: the first user message, without DAPO's answer-format wrapper.

    Used for any layout whose question column holds a chat list; text without DAPO's wrapper is kept as it is.
    """
    if isinstance(prompt, str):
        content = prompt
    else:
        users = [message for message in prompt if message.get("role", "user") == "user"]
        content = (users or list(prompt))[0]["content"] if prompt else ""
    return _DAPO_SUFFIX.sub("", _DAPO_PREFIX.sub("", content)).strip()


def _dapo_ground_truth(reward_model) -> str:
    return reward_model.get("ground_truth", "") if isinstance(reward_model, dict) else reward_model


def build_prompt(
    question: str, instruction: str | None, system_prompt: str | None, instruction_separator: str = " "
) -> list[dict[str, str]]:
    """The conversational prompt: an optional system message and one user turn, question then instruction."""
    content = question.strip()
    if instruction:
        content = f"{content}{instruction_separator}{instruction}"
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": content}]


# --------------------------------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------------------------------


def _layout_error(columns: list[str], problem: str, expected: str) -> ValueError:
    known = "; ".join(f"{name}: {lay.problem_column} + {lay.answer_column}" for name, lay in LAYOUTS.items())
    return ValueError(
        f"{problem} Columns found: {columns}. Expected {expected}. Known layouts ({known}); or pass "
        f"problem_column= and answer_column=."
    )


def resolve_layout(
    columns: list[str], layout: str | None = None, problem_column: str | None = None, answer_column: str | None = None
) -> Layout:
    """The layout to use for a dataset with `columns`: the named one, the detected one, or the given columns.

    Raises ValueError (listing the columns found and those expected) when a column is missing or nothing matches.
    """
    if layout is not None and layout not in LAYOUTS and layout != "generic":
        raise ValueError(f"Unknown layout {layout!r}; expected one of {[*LAYOUTS, 'generic']}.")
    if layout is None and not (problem_column and answer_column):
        layout = next(
            (name for name, lay in LAYOUTS.items() if {lay.problem_column, lay.answer_column} <= {*columns}), None
        )
        if layout is None and not (problem_column or answer_column):
            raise _layout_error(columns, "Cannot detect the dataset layout.", "the columns of one known layout")
    base = LAYOUTS.get(layout)
    if base is None and not (problem_column and answer_column):
        raise _layout_error(columns, "Cannot complete the column mapping.", "both problem_column and answer_column")
    resolved = Layout(
        layout or "generic",
        problem_column or base.problem_column,
        answer_column or base.answer_column,
    )
    if resolved.name == "math" and answer_column is None and "answer" in columns:
        resolved = Layout("math", resolved.problem_column, "answer")  # a ready-made final answer beats extraction
    missing = [c for c in (resolved.problem_column, resolved.answer_column) if c not in columns]
    if missing:
        raise _layout_error(
            columns,
            f"Layout {resolved.name!r} needs the column(s) {missing}.",
            f"{resolved.problem_column!r} (question) and {resolved.answer_column!r} (answer)",
        )
    return resolved


def _convert_row(
    row: dict,
    layout: Layout,
    instruction: str | None,
    system_prompt: str | None,
    instruction_separator: str,
) -> dict:
    question, answer = row[layout.problem_column], row[layout.answer_column]
    if layout.name == "dapo" or not isinstance(question, str):  # a chat list: its user turn holds the question
        question = dapo_question(question)
    if layout.name == "dapo":
        answer = _dapo_ground_truth(answer)
    return {
        "prompt": build_prompt(str(question), instruction, system_prompt, instruction_separator),
        "solution": final_answer(answer),
    }


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------


def to_conversational(
    dataset,
    layout: str | None = None,
    problem_column: str | None = None,
    answer_column: str | None = None,
    instruction: str | None = BOXED_INSTRUCTION,
    system_prompt: str | None = None,
    instruction_separator: str = " ",
    keep_columns: bool = False,
    num_proc: int | None = None,
):
    """Turn an in-memory `Dataset` (or every split of a `DatasetDict`) into `prompt` + `solution` columns.

    Args:
        dataset: a `datasets.Dataset` or `datasets.DatasetDict`.
        layout: one of `LAYOUTS` or `"generic"`; detected from the columns when None.
        problem_column / answer_column: override the layout's columns (both together define a generic layout).
        instruction: appended to every question after `instruction_separator`; None for none.
        system_prompt: an optional system message placed before the user turn.
        keep_columns: keep the source's other columns (e.g. difficulty, for filtering); by default only `prompt` and
            `solution` remain, so no stray column reaches the reward functions as a keyword argument.
        num_proc: processes for `Dataset.map` / `Dataset.filter`.

    Rows whose final answer is empty are dropped (a warning gives their number).
    """
    from datasets import DatasetDict

    kwargs = {
        "layout": layout,
        "problem_column": problem_column,
        "answer_column": answer_column,
        "instruction": instruction,
        "system_prompt": system_prompt,
        "instruction_separator": instruction_separator,
        "keep_columns": keep_columns,
        "num_proc": num_proc,
    }
    if isinstance(dataset, DatasetDict):
        return DatasetDict({split: to_conversational(part, **kwargs) for split, part in dataset.items()})

    resolved = resolve_layout(dataset.column_names, layout, problem_column, answer_column)
    converted = dataset.map(
        _convert_row,
        fn_kwargs={
            "layout": resolved,
            "instruction": instruction,
            "system_prompt": system_prompt,
            "instruction_separator": instruction_separator,
        },
        remove_columns=None if keep_columns else dataset.column_names,
        num_proc=num_proc,
        desc=f"Formatting ({resolved.name} layout)",
    )
    if not keep_columns:
        converted = converted.select_columns(["prompt", "solution"])  # a fixed order, whatever the source's
    kept = converted.filter(lambda solution: bool(solution), input_columns="solution", num_proc=num_proc)
    if len(kept) < len(converted):
        logger.warning(f"Dropped {len(converted) - len(kept)} of {len(converted)} rows without a final answer.")
    return kept


def load_raw_dataset(name_or_path: str | Path, split: str = "train", **load_kwargs):
    """`datasets.load_dataset` for a local JSON / JSONL / parquet file (loaded as `split`) or a Hub name / folder."""
    import datasets

    path = Path(name_or_path)
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"Unsupported file type {path.suffix!r} for {path}; expected one of {[*_FILE_BUILDERS]}.")
        return datasets.load_dataset(builder, data_files={split: str(path)}, split=split, **load_kwargs)
    return datasets.load_dataset(str(name_or_path), split=split, **load_kwargs)


def load_math_dataset(
    name_or_path: str | Path,
    split: str = "train",
    layout: str | None = None,
    problem_column: str | None = None,
    answer_column: str | None = None,
    instruction: str | None = BOXED_INSTRUCTION,
    system_prompt: str | None = None,
    instruction_separator: str = " ",
    keep_columns: bool = False,
    num_proc: int | None = None,
    **load_kwargs,
):
    r"""Load a math training set (Hub name, local folder, or .json / .jsonl / .parquet file) as `prompt` + `solution`.

    ```python
    from scope_trl.data import load_math_dataset

    train = load_math_dataset("zwhe99/DeepMath-103K")            # SCOPE's training set
    evals = load_math_dataset("shared/data/math_eval/math500.jsonl")
    ```

    `load_kwargs` go to `datasets.load_dataset` (e.g. `name=` for a config, `revision=`); the other arguments are those
    of `to_conversational`.
    """
    dataset = load_raw_dataset(name_or_path, split=split, **load_kwargs)
    return to_conversational(
        dataset,
        layout=layout,
        problem_column=problem_column,
        answer_column=answer_column,
        instruction=instruction,
        system_prompt=system_prompt,
        instruction_separator=instruction_separator,
        keep_columns=keep_columns,
        num_proc=num_proc,
    )
