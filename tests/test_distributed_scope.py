"""SCOPE under `accelerate launch`: prompt groups that straddle processes, teacher scoring per process, ZeRO-2 / ZeRO-3.

Each test launches `tests/scripts/run_scope_tiny.py` (tiny student and teacher of the offline test bed, binary
verifier) in 2 fresh CPU processes and checks what every process recorded per generation batch and the main
process's report (see the script's docstring). With `per_device_train_batch_size=2`, `num_generations=4` and
`steps_per_generation=1`, a generation batch is one prompt group of 4 rollouts, 2 on each process.

Every launch is checked against the same rules (`check_records`):

- the gathered inputs of `dual_path_weights` are the concatenation, in process order, of the local sequence log-probs,
  and are the same on every process; `dual_path_weights` recomputed here, in one process, on those global inputs
  gives exactly the trainer's weights, and process r's `scope_weight` is rows [r·B, (r+1)·B) of it;
- routes follow the gathered verifier rewards (correct <=> reward >= 1);
- the teacher scores the rollouts that need it: outside ZeRO-3, exactly the process's incorrect rows (the same token
  ids, never a correct row, `ceil(n / B)` forward calls); under ZeRO-3, every process makes the same forward calls
  with max-over-processes rows, its own incorrect rows first, then copies of its row 0 (discarded).

See tests/test_distributed.py for the two launcher facts (how `cpu_multi.yaml` spawns 2 processes, DeepSpeed's JIT build).
"""

import json
import math

import pytest
import torch

from scope_trl.routing import MLE, OPD
from scope_trl.teacher import unpadded_sequences
from scope_trl.weights import dual_path_weights

from .distributed_utils import SCRIPTS_DIR, launch_script
from .fake_vllm_server import FakeVLLMServer


pytestmark = pytest.mark.distributed

SCRIPT = SCRIPTS_DIR / "run_scope_tiny.py"
# A deadlocked collective would otherwise hang until gloo's 30-minute timeout; the first DeepSpeed launch on a fresh
# machine needs about a minute (JIT build of an op), later ones about 10 s.
LAUNCH_TIMEOUT = 300
WORLD_SIZE = 2
BATCH_SIZE = 2  # per_device_train_batch_size, also the chunk size of the teacher forward calls
GROUP_SIZE = 4
# With this seed the untrained toy student gives groups mixed on both paths (e.g. 2 correct + 2 incorrect, each
# subset split over both processes); the tests assert that they saw such groups, so a change of RNG stream that
# loses them fails loudly instead of making the tests vacuous.
SEED = "2"
SCOPE_METRICS = ("scope/frac_correct", "scope/frac_incorrect", "scope/opd_loss", "scope/mle_loss", "policy_loss")


def launch(config, toy_paths, out_dir, *script_args, accelerate_args=()):
    """Run the tiny SCOPE script; return (main-process report, per-rank lists of generation-batch records)."""
    result_path = out_dir / "result.json"
    records_dir = out_dir / "records"
    args = (
        "--model",
        toy_paths["student"],
        "--teacher",
        toy_paths["teacher"],
        "--output_dir",
        str(out_dir / "out"),
        "--result",
        str(result_path),
        "--records_dir",
        str(records_dir),
        "--seed",
        SEED,
        *script_args,
    )
    report = launch_script(SCRIPT, config, result_path, args, accelerate_args, timeout=LAUNCH_TIMEOUT)
    ranks = []
    for rank in range(report["world_size"]):
        data = json.loads((records_dir / f"rank{rank}.json").read_text())
        assert data["rank"] == rank and data["world_size"] == report["world_size"], data.keys()
        ranks.append(data["records"])
    return report, ranks


def generation_batches(ranks):
    """Per generation batch, the records of every rank (rank order)."""
    counts = [len(records) for records in ranks]
    assert len(set(counts)) == 1 and counts[0] > 0, f"Generation batches per rank: {counts}"
    return list(zip(*ranks))


def verdicts(record):
    """The verifier's verdict on every rollout of the global batch: True correct, False incorrect."""
    rewards = [row[0] for row in record["rewards"]]
    assert all(r is not None for r in rewards), rewards  # the toy verifiers always answer
    return [r >= 1.0 for r in rewards]


def teacher_inputs(record, row):
    return record["prompt_ids"][row] + record["completion_ids"][row]


def check_weights(batch):
    """Global inputs, single-process recomputation of the weights, local slices, routes."""
    world = len(batch)
    reference = batch[0]
    local_rows = len(reference["scope_weight"])
    captured = reference["dual_path_weights"]
    assert captured is not None, "dual_path_weights was not called"
    for record in batch:
        assert len(record["scope_weight"]) == local_rows
        # Everything global is identical on every process.
        assert record["rewards"] == reference["rewards"]
        assert record["dual_path_weights"] == captured

    correct = verdicts(reference)
    assert len(correct) == world * local_rows
    assert captured["correct"] == correct
    assert captured["kwargs"]["valid"] == [True] * len(correct)

    # The gathered per-rollout log-probs are the local ones, in process order.
    student = [v for record in batch for v in record["local_student_seq_logps"]]
    teacher = [v for record in batch for v in record["local_teacher_seq_logps"]]
    torch.testing.assert_close(torch.tensor(captured["student_seq_logps"]), torch.tensor(student))
    torch.testing.assert_close(torch.tensor(captured["teacher_seq_logps"]), torch.tensor(teacher))
    # The teacher scored the incorrect rollouts only (0 elsewhere) and gave them real log-probs.
    for is_correct, value in zip(correct, captured["teacher_seq_logps"]):
        assert (value == 0.0) if is_correct else (value < 0.0), (correct, captured["teacher_seq_logps"])

    # Single-process computation on the global inputs.
    kwargs = dict(captured["kwargs"])
    kwargs["valid"] = torch.tensor(kwargs["valid"])
    expected = dual_path_weights(
        torch.tensor(captured["student_seq_logps"]),
        torch.tensor(captured["teacher_seq_logps"]),
        torch.tensor(captured["correct"]),
        captured["group_size"],
        **kwargs,
    )
    assert captured["group_size"] == GROUP_SIZE
    assert expected.tolist() == captured["output"]
    for rank, record in enumerate(batch):
        rows = slice(rank * local_rows, (rank + 1) * local_rows)
        assert record["scope_weight"] == expected[rows].tolist(), (rank, record["scope_weight"], expected.tolist())
        assert record["scope_route"] == [MLE if c else OPD for c in correct[rows]], (rank, correct)
    return expected.tolist(), correct


def check_teacher_scoring(batch, zero3: bool):
    """Which rows each process sent to the teacher, and in how many forward calls."""
    incorrect = [[i for i, path in enumerate(record["scope_route"]) if path == OPD] for record in batch]
    padded = max(len(rows) for rows in incorrect)
    for record, rows in zip(batch, incorrect):
        assert record["score_rows"] == rows
        sent = [ids for call in record["teacher_calls"] for ids in call]
        expected_rows = padded if zero3 else len(rows)
        assert len(sent) == expected_rows, (len(sent), incorrect)
        assert len(record["teacher_calls"]) == math.ceil(expected_rows / BATCH_SIZE), (record["teacher_calls"], rows)
        assert sent[: len(rows)] == [teacher_inputs(record, row) for row in rows]
        assert all(ids == teacher_inputs(record, 0) for ids in sent[len(rows) :])  # ZeRO-3 padding: copies of row 0
    calls = [len(record["teacher_calls"]) for record in batch]
    if zero3:
        assert len(set(calls)) == 1, f"Teacher forward calls per process differ under ZeRO-3: {calls}"
    return incorrect, calls


def check_records(ranks, zero3: bool):
    """Run both checks on every generation batch; return per-batch summaries for the tests' own assertions."""
    summaries = []
    for batch in generation_batches(ranks):
        assert all(record["training"] for record in batch)
        weights, correct = check_weights(batch)
        incorrect, calls = check_teacher_scoring(batch, zero3)
        summaries.append({"weights": weights, "correct": correct, "incorrect": incorrect, "calls": calls})
    return summaries


def check_report(report, distributed_type, zero_stage=None, global_step=2):
    summary = {key: value for key, value in report.items() if key != "log_history"}
    assert report["world_size"] == WORLD_SIZE, summary
    assert report["distributed_type"] == f"DistributedType.{distributed_type}", summary
    assert report["zero_stage"] == zero_stage, summary
    assert report["global_step"] == global_step, summary
    assert report["params_changed"], f"No trainable student parameter moved: {summary}"
    assert report["num_params_changed"] == report["num_params_compared"], f"Some parameters did not move: {summary}"
    assert report["num_frozen_params_changed"] == 0, f"Frozen student parameters moved: {summary}"
    assert report["ranks_in_sync"], f"The ranks hold different students after training: {summary}"
    assert report["num_teacher_params"] > 0, summary
    assert report["num_trainable_teacher_params"] == 0, summary
    assert report["num_teacher_params_changed"] == 0, f"The teacher moved: {summary}"
    assert report["teacher_in_sync"], summary
    if zero_stage is not None:
        assert report["teacher_wrapper"] == "DeepSpeedEngine", summary

    step_logs = [entry for entry in report["log_history"] if "policy_loss" in entry]
    assert len(step_logs) == global_step, report["log_history"]  # logging_steps=1
    for entry in step_logs:
        for name in SCOPE_METRICS:
            assert name in entry, f"{name} missing from {entry}"
        for name in ("scope/opd_loss", "scope/mle_loss", "policy_loss"):
            assert math.isfinite(entry[name]), entry
        assert 0.0 <= entry["scope/frac_correct"] <= 1.0, entry
        if entry["scope/frac_incorrect"] > 0.0:  # some rollout was distilled
            assert math.isfinite(entry["scope/teacher_kl"]), entry
        else:  # undefined without a distilled token: left out of the logs (docs/metrics.md)
            assert "scope/teacher_kl" not in entry, entry
        # Both terms are reduced like the loss, with the same normaliser: they add up to it.
        assert entry["policy_loss"] == pytest.approx(entry["scope/mle_loss"] + entry["scope/opd_loss"], abs=1e-5)
    assert any(0.0 < entry["scope/frac_correct"] < 1.0 for entry in step_logs), "No step used both paths"
    return step_logs


@pytest.fixture(scope="module")
def multi_cpu_run(toy_paths, tmp_path_factory):
    """MULTI_CPU over gloo, 2 processes, 4 optimizer steps = 4 generation batches of one straddling group each."""
    out_dir = tmp_path_factory.mktemp("scope_multi_cpu")
    return launch("cpu_multi.yaml", toy_paths, out_dir, "--max_steps", "4")


def test_straddling_groups_get_single_process_weights(multi_cpu_run):
    report, ranks = multi_cpu_run
    check_report(report, "MULTI_CPU", global_step=4)
    # One on-policy micro-batch per generation batch: π_old came from the loss forward, weighted across processes there.
    assert all(record["weighted_in_loss"] for records in ranks for record in records)
    summaries = check_records(ranks, zero3=False)

    # Every group straddles the two processes: each holds 2 of the prompt's 4 rollouts.
    for batch in generation_batches(ranks):
        assert [len(record["scope_weight"]) for record in batch] == [BATCH_SIZE] * WORLD_SIZE
        prompts = {prompt for record in batch for prompt in record["prompts"]}
        assert len(prompts) == 1, prompts

    # Not vacuous: mixed groups, weights that are not all 1, and subsets of both paths split over both processes.
    assert any(0 < sum(s["correct"]) < GROUP_SIZE for s in summaries), [s["correct"] for s in summaries]
    assert any(abs(w - 1.0) > 1e-4 for s in summaries for w in s["weights"]), [s["weights"] for s in summaries]

    def straddles(s, verdict):
        owners = {row // BATCH_SIZE for row, c in enumerate(s["correct"]) if c == verdict}
        return owners == set(range(WORLD_SIZE))

    assert any(straddles(s, True) for s in summaries), f"No correct subset split over the processes: {summaries}"
    assert any(straddles(s, False) for s in summaries), f"No incorrect subset split over the processes: {summaries}"


def test_multi_cpu_teacher_scores_only_incorrect_rows(multi_cpu_run):
    """Outside ZeRO-3 each process sends exactly its incorrect rows to the teacher (`check_teacher_scoring`)."""
    _, ranks = multi_cpu_run
    summaries = check_records(ranks, zero3=False)
    # Not vacuous: the teacher was called, some correct rows were kept from it, and the processes had different
    # amounts to score in some batch (so no hidden padding evened them out).
    assert any(sum(s["calls"]) > 0 for s in summaries)
    assert any(any(s["correct"]) for s in summaries)
    assert any(len({len(rows) for rows in s["incorrect"]}) > 1 for s in summaries), summaries


def test_zero3_teacher_calls_match_when_a_process_has_nothing_to_distil(toy_paths, tmp_path):
    """ZeRO-3: every rollout of process 0 is correct, process 1 has incorrect ones; each teacher forward is a collective,
    so process 0 must still make the same calls (padded) or the run deadlocks (the launch has a timeout)."""
    report, ranks = launch(
        "zero3_cpu.yaml",
        toy_paths,
        tmp_path,
        "--verifier",
        "rank0_correct",
        "--steps_per_generation",
        "2",  # 4 local rows: up to 2 teacher forward calls of 2 rows
        "--max_steps",
        "4",
    )
    assert report["zero_stage"] == 3 and report["global_step"] == 4, report
    assert report["num_teacher_params_changed"] == 0, report
    summaries = check_records(ranks, zero3=True)
    padded = [
        s for s in summaries if not s["incorrect"][0] and s["incorrect"][1] and s["calls"][0] == s["calls"][1] > 0
    ]
    assert padded, f"No batch where process 0 had nothing to distil but still joined the teacher calls: {summaries}"
    for records in ranks[0]:  # process 0's rows are all correct and keep no teacher log-prob
        assert set(records["scope_route"]) == {MLE}
        assert records["local_teacher_seq_logps"] == [0.0] * len(records["scope_route"])


def test_zero3_end_to_end(toy_paths, tmp_path):
    """ZeRO-3 with the teacher (path passed to the trainer): the student trains, the teacher does not move, SCOPE's
    metrics are logged, and teacher calls are padded to the same count on both processes."""
    report, ranks = launch("zero3_cpu.yaml", toy_paths, tmp_path)
    check_report(report, "DEEPSPEED", zero_stage=3)
    summaries = check_records(ranks, zero3=True)
    assert any(len({len(rows) for rows in s["incorrect"]}) > 1 for s in summaries), summaries  # padding was needed


def test_zero2_end_to_end(toy_paths, tmp_path):
    """ZeRO-2, teacher given as `teacher_model_name_or_path` in the config: a replicated (stage-0) teacher, so each
    process scores exactly its own incorrect rows."""
    report, ranks = launch("zero2_cpu.yaml", toy_paths, tmp_path, "--teacher_in_config")
    check_report(report, "DEEPSPEED", zero_stage=2)
    check_records(ranks, zero3=False)


def test_zero3_peft_end_to_end(toy_paths, tmp_path):
    """ZeRO-3 with a LoRA adapter on the student (r=4 on q_proj/v_proj of 2 layers): only the adapter moves."""
    report, ranks = launch("zero3_cpu.yaml", toy_paths, tmp_path, "--use_peft")
    check_report(report, "DEEPSPEED", zero_stage=3)
    assert report["use_peft"]
    assert report["num_params_compared"] == 8, report  # lora_A and lora_B of q_proj and v_proj, 2 layers
    assert report["num_frozen_params"] > 0, report
    check_records(ranks, zero3=True)


def test_zero3_with_the_teacher_on_a_server(toy_paths, tmp_path):
    """ZeRO-3 with the teacher on a (fake) vLLM server: no teacher forward, hence no collective to pad; each process
    sends exactly its own incorrect rows, unpadded, and the weights are what one process computes on the global batch."""
    pytest.importorskip("requests")
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(toy_paths["teacher"])
    with FakeVLLMServer(teacher, model_name=toy_paths["teacher"]) as server:
        report, ranks = launch("zero3_cpu.yaml", toy_paths, tmp_path, "--teacher_server_url", server.url)
    assert report["zero_stage"] == 3 and report["global_step"] == 2, report
    assert report["params_changed"] and report["ranks_in_sync"], report
    assert report["teacher_wrapper"] == "NoneType", report  # nothing of the teacher in the training processes
    expected = []
    for batch in generation_batches(ranks):
        check_weights(batch)  # includes: the incorrect rows, and only they, got (negative) teacher log-probs
        for record in batch:
            rows = [i for i, path in enumerate(record["scope_route"]) if path == OPD]
            assert record["score_rows"] == rows and record["teacher_calls"] == []
            tensors = [
                torch.tensor(record[key])[rows]
                for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
            ]
            expected += unpadded_sequences(*tensors)[0]
    sent = [sequence for request in server.requests for sequence in request["prompt"]]
    assert sent and sorted(sent) == sorted(expected)
