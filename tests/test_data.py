"""`scope_trl.data`: every known layout from local JSON / JSONL / parquet files, options, errors, the Hub branch
(with `datasets.load_dataset` monkeypatched) and the offline benchmark files (skipped without ../shared)."""

import json
from pathlib import Path

import datasets
import pytest
from datasets import Dataset, DatasetDict

from scope_trl.data import (
    BOXED_INSTRUCTION,
    dapo_question,
    final_answer,
    load_math_dataset,
    resolve_layout,
    to_conversational,
)


MATH_EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "math_eval"

DAPO_WRAPPER = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{question}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)

# layout -> (rows as the source stores them, expected (question, solution) pairs, extra load arguments)
LAYOUT_CASES = {
    "deepmath": (
        [
            {"question": "Evaluate $\\int_0^1 x\\,dx$.", "final_answer": "\\frac{1}{2}", "difficulty": 3.0},
            {"question": "Find $2^{10}$.", "final_answer": "1024", "difficulty": 1.5},
        ],
        [("Evaluate $\\int_0^1 x\\,dx$.", "\\frac{1}{2}"), ("Find $2^{10}$.", "1024")],
        {},
    ),
    "math": (
        [
            {"problem": "Compute $1+1$.", "solution": "We add: $1+1=\\boxed{2}$.", "level": "Level 1"},
            {"problem": "Simplify.", "solution": "Thus $\\boxed{\\frac{\\sqrt{3}}{2}}$ is it.", "level": "Level 2"},
        ],
        [("Compute $1+1$.", "2"), ("Simplify.", "\\frac{\\sqrt{3}}{2}")],
        {},
    ),
    "gsm8k": (
        [
            {"question": "Tom has 3 apples and buys 2. How many?", "answer": "3 + 2 = <<3+2=5>>5\n#### 5"},
            {"question": "How much in total?", "answer": "Sum it.\n#### 2,125"},
        ],
        [("Tom has 3 apples and buys 2. How many?", "5"), ("How much in total?", "2,125")],
        {},
    ),
    "dapo": (
        [
            {
                "data_source": "math_dapo",
                "prompt": [{"role": "user", "content": DAPO_WRAPPER.format(question="Find $x$ if $x+1=35$.")}],
                "ability": "MATH",
                "reward_model": {"ground_truth": "34", "style": "rule-lighteval/MATH_v2"},
            },
            {
                "data_source": "math_dapo",
                "prompt": [{"role": "user", "content": DAPO_WRAPPER.format(question="Line one.\n\nLine two?")}],
                "ability": "MATH",
                "reward_model": {"ground_truth": "7", "style": "rule-lighteval/MATH_v2"},
            },
        ],
        [("Find $x$ if $x+1=35$.", "34"), ("Line one.\n\nLine two?", "7")],
        {},
    ),
    "math_eval": (
        [{"id": "0", "problem": "AIME problem.", "answer": "025"}, {"id": "1", "problem": "AMC.", "answer": "27.0"}],
        [("AIME problem.", "025"), ("AMC.", "27.0")],
        {},
    ),
    "generic": (
        [{"q": "What is 6*7?", "a": 42}, {"q": "AIME answer?", "a": 25}],  # integer answers, as in AIME sources
        [("What is 6*7?", "42"), ("AIME answer?", "25")],
        {"problem_column": "q", "answer_column": "a"},
    ),
}


def write_rows(rows, path: Path) -> Path:
    """Write `rows` as a JSON array (.json), JSON lines (.jsonl) or parquet (.parquet)."""
    if path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    else:
        Dataset.from_list(rows).to_parquet(str(path))
    return path


def user_message(question):
    return [{"role": "user", "content": f"{question} {BOXED_INSTRUCTION}"}]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
@pytest.mark.parametrize("layout", list(LAYOUT_CASES))
def test_every_layout_from_local_files(tmp_path, layout, suffix):
    rows, expected, kwargs = LAYOUT_CASES[layout]
    path = write_rows(rows, tmp_path / f"{layout}{suffix}")
    dataset = load_math_dataset(path, cache_dir=str(tmp_path / "cache"), **kwargs)  # layout detected
    assert dataset.column_names == ["prompt", "solution"]
    assert dataset["prompt"] == [user_message(question) for question, _ in expected]
    assert dataset["solution"] == [solution for _, solution in expected]
    if layout != "generic":  # naming the layout gives the same result
        named = load_math_dataset(path, layout=layout, cache_dir=str(tmp_path / "cache"))
        assert named["prompt"] == dataset["prompt"] and named["solution"] == dataset["solution"]


def test_split_name_and_load_kwargs_reach_load_dataset(tmp_path):
    rows, _, _ = LAYOUT_CASES["math_eval"]
    path = write_rows(rows, tmp_path / "eval.jsonl")
    assert len(load_math_dataset(path, split="test", cache_dir=str(tmp_path / "cache"))) == 2


def test_instruction_system_prompt_and_separator():
    dataset = Dataset.from_list([{"problem": "What is 2+2?", "answer": "4"}])
    assert to_conversational(dataset, instruction=None)["prompt"][0] == [{"role": "user", "content": "What is 2+2?"}]
    custom = to_conversational(dataset, instruction="Answer in \\boxed{}.", instruction_separator="\n")
    assert custom["prompt"][0][0]["content"] == "What is 2+2?\nAnswer in \\boxed{}."
    with_system = to_conversational(dataset, system_prompt="You are a careful mathematician.")
    assert with_system["prompt"][0] == [
        {"role": "system", "content": "You are a careful mathematician."},
        {"role": "user", "content": f"What is 2+2? {BOXED_INSTRUCTION}"},
    ]


def test_math_prefers_a_ready_answer_column():
    dataset = Dataset.from_list([{"problem": "P", "solution": "so $\\boxed{4}$", "answer": "4.0"}])
    assert to_conversational(dataset, layout="math")["solution"] == ["4.0"]
    assert to_conversational(dataset)["solution"] == ["4.0"]  # detected as math_eval


def test_keep_columns():
    rows, _, _ = LAYOUT_CASES["deepmath"]
    dataset = to_conversational(Dataset.from_list(rows), keep_columns=True)
    assert set(dataset.column_names) == {"question", "final_answer", "difficulty", "prompt", "solution"}
    assert dataset["difficulty"] == [3.0, 1.5]


def test_rows_without_a_final_answer_are_dropped(caplog):
    dataset = Dataset.from_list(
        [{"problem": "A", "solution": "so $\\boxed{}$"}, {"problem": "B", "solution": "so $\\boxed{3}$"}]
    )
    with caplog.at_level("WARNING", logger="scope_trl.data"):
        converted = to_conversational(dataset)
    assert converted["solution"] == ["3"]
    assert "Dropped 1 of 2 rows" in caplog.text


def test_dataset_dict_is_converted_split_by_split():
    split = Dataset.from_list([{"question": "Q", "final_answer": "1"}])
    converted = to_conversational(DatasetDict({"train": split, "test": split}))
    assert set(converted) == {"train", "test"}
    assert converted["test"]["solution"] == ["1"]


def test_missing_columns_error_lists_found_and_expected():
    dataset = Dataset.from_list([{"text": "hello", "label": 1}])
    with pytest.raises(ValueError) as error:
        to_conversational(dataset)
    message = str(error.value)
    assert "'text'" in message and "'label'" in message  # the columns found
    assert "question" in message and "final_answer" in message and "problem_column" in message  # what was expected
    with pytest.raises(ValueError, match=r"needs the column\(s\) \['question'\]"):
        resolve_layout(["problem", "answer"], layout="gsm8k")
    with pytest.raises(ValueError, match="needs the column"):
        resolve_layout(["text", "label"], problem_column="text", answer_column="answer")
    with pytest.raises(ValueError, match="Unknown layout"):
        resolve_layout(["problem", "answer"], layout="nope")


def test_one_column_override_completes_a_detected_layout():
    layout = resolve_layout(["question", "answer", "short"], answer_column="short")
    assert (layout.name, layout.problem_column, layout.answer_column) == ("gsm8k", "question", "short")


def test_field_helpers():
    assert final_answer("work\n#### 1,000") == "1,000"
    assert final_answer("so $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert final_answer(204) == "204"
    assert final_answer(None) == ""
    assert dapo_question("no wrapper at all") == "no wrapper at all"
    assert dapo_question([{"role": "user", "content": DAPO_WRAPPER.format(question="Q?")}]) == "Q?"


@pytest.mark.parametrize(
    ("name", "layout"), [("BytedTsinghua-SIA/DAPO-Math-17k", "dapo"), ("zwhe99/DeepMath-103K", "deepmath")]
)
def test_hub_names_go_through_load_dataset(monkeypatch, name, layout):
    calls = []

    def fake_load_dataset(path, *args, **kwargs):
        calls.append((path, args, kwargs))
        return Dataset.from_list(LAYOUT_CASES[layout][0])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset = load_math_dataset(name, split="train", revision="main")
    assert calls == [(name, (), {"split": "train", "revision": "main"})]
    assert dataset["solution"] == [solution for _, solution in LAYOUT_CASES[layout][1]]


def test_unsupported_local_file_type(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match="Unsupported file type"):
        load_math_dataset(path)


@pytest.mark.parametrize(
    "name", ["aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench", "gsm8k_test", "math_train"]
)
def test_benchmark_files_load(tmp_path, name):
    path = MATH_EVAL / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is not available")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    dataset = load_math_dataset(path, cache_dir=str(tmp_path / "cache"))
    assert len(dataset) == len(rows)
    assert dataset["solution"][:50] == [row["answer"].strip() for row in rows[:50]]
    assert dataset["prompt"][0] == user_message(rows[0]["problem"].strip())
