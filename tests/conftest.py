"""Shared fixtures: the offline test bed (tokenizer, tiny student and teacher) is built once per test session."""

import os

import pytest


os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture(scope="session")
def toy_paths(tmp_path_factory):
    """Paths of the tiny tokenizer, student (hidden 16) and teacher (hidden 32), all sharing one tokenizer."""
    from scope_trl.toy import build_toy_testbed

    return build_toy_testbed(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def student_path(toy_paths):
    return toy_paths["student"]


@pytest.fixture(scope="session")
def teacher_path(toy_paths):
    return toy_paths["teacher"]


@pytest.fixture
def toy_dataset():
    """16 conversational arithmetic prompts with a `solution` column."""
    from scope_trl.toy import make_arithmetic_dataset

    return make_arithmetic_dataset(16, seed=0)
