"""Correct across the configuration space: a pairwise covering sweep of the options a user sets, for SCOPE, DGPO and
GRPO (the control), each combination trained, evaluated, saved and resumed (tests/configuration_sweep.py).

`make test` runs the default set, at least 60 combinations per trainer; SCOPE_TRL_FULL_SWEEP=1 runs the larger one
reported in docs/reliability.md. Every combination must build, train and resume with its invariants intact, or be
refused at construction exactly where the rules say, with the message that names the problem."""

import json
import os

import pytest
import torch

from scope_trl.apps.toy import make_arithmetic_dataset

from . import configuration_sweep as sweep
from .fake_vllm_server import FakeVLLMServer


FULL = os.environ.get("SCOPE_TRL_FULL_SWEEP") == "1"
ROWS = 200 if FULL else 60
REPORT = os.environ.get("SCOPE_TRL_SWEEP_REPORT")  # a JSON-lines file that receives every combination's outcome
ARRAYS = {trainer: sweep.covering_array(trainer, ROWS) for trainer in sweep.FACTORS}
CASES = []
for _trainer, _valid in ARRAYS.items():
    CASES += [(_trainer, index, combo) for index, combo in enumerate(_valid)]
    CASES += [(_trainer, f"refused{i}", combo) for i, combo in enumerate(sweep.refused_combinations(_trainer, _valid))]


@pytest.fixture(scope="module")
def datasets():
    return make_arithmetic_dataset(16, seed=0), make_arithmetic_dataset(4, seed=1)


@pytest.fixture(scope="module")
def teacher_server(teacher_path):
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32)
    with FakeVLLMServer(teacher, model_name=str(teacher_path)) as server:
        yield server


@pytest.mark.parametrize("trainer", list(sweep.FACTORS))
def test_the_sweep_covers_every_feasible_pair_with_at_least_60_combinations(trainer):
    valid = ARRAYS[trainer]
    assert len(valid) >= 60 and all(sweep.refusal(trainer, combo) is None for combo in valid)
    assert sweep.covering_array(trainer, 60) == valid[: len(sweep.covering_array(trainer, 60))]  # deterministic
    assert not sweep.uncovered_pairs(trainer, valid)
    assert all(sweep.refusal(trainer, combo) for combo in sweep.refused_combinations(trainer, valid))


@pytest.mark.parametrize(("trainer", "index", "combo"), CASES, ids=[f"{t}-{i}" for t, i, _ in CASES])
def test_combination(trainer, index, combo, toy_paths, datasets, teacher_server, tmp_path):
    server_url = teacher_server.url if trainer == "scope" else None
    try:
        outcome = sweep.run(trainer, combo, toy_paths, str(tmp_path), server_url, datasets)
    except AssertionError as error:
        raise AssertionError(f"{trainer} with {sweep.describe(combo)}: {error}") from error
    assert outcome in ("refused", "stopped", "passed", "passed without signal")
    if REPORT:
        with open(REPORT, "a") as f:
            f.write(json.dumps({"trainer": trainer, "case": str(index), "outcome": outcome}) + "\n")
