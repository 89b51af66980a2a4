"""SCOPE's served teacher against a real vLLM OpenAI-compatible server (vLLM's CPU build), not the stand-in of
tests/test_teacher_server.py.

One server (`vllm_teacher_server`, tests/conftest.py) serves the vLLM-sized toy teacher (hidden 256, head size 64,
float32) for the whole session; it starts in about 40 s on 2 idle cores, which is most of this module's time. Every
test compares the served teacher with the same weights loaded in process with transformers, in float32:

- the log-probs the server returns for sequences of many lengths, and what the trainer makes of them on a padded batch;
- a SCOPE run through the server against the same run with the teacher in process (losses, metrics, final weights);
- a 2-process DDP run (`accelerate launch`, `cpu_multi.yaml`) whose processes share the server;
- a student whose padded embedding samples ids the served teacher does not have (vLLM answers such a request with
  HTTP 400 "Token id N is out of vocabulary"): those tokens must get -inf and follow `nonfinite_teacher_scores`
  exactly as with the teacher in process.
"""

import math
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from scope_trl import SCOPETrainer
from scope_trl.apps.toy import save_tiny_model
from scope_trl.routing import OPD
from scope_trl.teacher import ServedTeacher, unpadded_sequences

from .helpers import build_trainer, logged, snapshot
from .test_distributed_scope import check_report, check_weights, generation_batches, launch


pytestmark = pytest.mark.vllm

TEACHER_VOCAB = 320  # the toy tokenizer's size, and the teacher's embedding rows
PADDED_VOCAB = 384  # the padded student's: ids 320..383 exist for the student only
ATOL = 1e-5
# The compared runs train with plain SGD. vLLM's kernels and torch's differ in the last float32 bits (~1e-6 on a
# log-prob), and Adam divides each gradient element by its own magnitude (+ eps = 1e-8), which turns that noise on an
# element whose gradient nearly cancels into a visible step: with the tiny config's AdamW (lr 5e-2) the served and the
# in-process runs end up 7e-5 apart on the losses from the second step on, and 1.5e-4 apart on a few weights. SGD
# passes the teacher's signal through linearly, so the comparison measures what the served teacher changes, to 1e-5.
SGD = {"optim": "sgd"}
COMPARED_METRICS = ("loss", "scope/teacher_kl", "scope/frac_incorrect", "scope/frac_nonfinite_teacher")


@pytest.fixture(scope="module")
def hf_teacher(vllm_toy_paths):
    return AutoModelForCausalLM.from_pretrained(vllm_toy_paths["teacher"], dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def padded_student(vllm_toy_paths, tmp_path_factory):
    """The vLLM-sized student with 384 output rows: untrained, it samples an id >= 320 about once in 6 tokens."""
    tokenizer = AutoTokenizer.from_pretrained(vllm_toy_paths["tokenizer"])
    return save_tiny_model(
        tmp_path_factory.mktemp("padded_student"),
        tokenizer,
        vocab_size=PADDED_VOCAB,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
    )


@torch.no_grad()
def reference_scores(model, sequences, starts):
    """The in-process teacher's log-prob of every completion token (full-vocabulary log-softmax, float32)."""
    scores = []
    for sequence, start in zip(sequences, starts, strict=True):
        logps = torch.log_softmax(model(torch.tensor([sequence])).logits[0].float(), dim=-1)
        scores.append([logps[position - 1, sequence[position]].item() for position in range(start, len(sequence))])
    return scores


def record_scores(trainer):
    """Wrap the trainer's teacher scoring; returns the list that every call appends its inputs and output to."""
    calls = []
    original = trainer._score_with_teacher

    def recording(input_ids, attention_mask, logits_to_keep, rows, batch_size):
        scores = original(input_ids, attention_mask, logits_to_keep, rows, batch_size)
        loss_tokens = attention_mask[:, -logits_to_keep:].bool() & rows.unsqueeze(1)
        calls.append({"input_ids": input_ids.clone(), "loss_tokens": loss_tokens, "scores": scores.detach().clone()})
        return scores

    trainer._score_with_teacher = recording
    return calls


def compare_scoring(remote_calls, local_calls):
    """Same rollouts sent, same scores on every loss token (-inf at the same places); returns the max difference of
    the finite ones and the number of loss tokens compared."""
    assert len(remote_calls) == len(local_calls) > 0
    max_diff, compared = 0.0, 0
    for remote, local in zip(remote_calls, local_calls):
        assert torch.equal(remote["input_ids"], local["input_ids"]), "the two runs sampled different rollouts"
        assert torch.equal(remote["loss_tokens"], local["loss_tokens"])
        tokens = local["loss_tokens"]
        served, expected = remote["scores"][tokens], local["scores"][tokens]
        torch.testing.assert_close(served, expected, atol=ATOL, rtol=0)  # equal infinities compare equal
        finite = torch.isfinite(expected)
        if finite.any():
            max_diff = max(max_diff, (served[finite] - expected[finite]).abs().max().item())
        compared += tokens.sum().item()
    return max_diff, compared


def assert_same_training(remote, local, before):
    for key in COMPARED_METRICS:
        assert logged(remote, key) == pytest.approx(logged(local, key), abs=ATOL, rel=0), key
    params = dict(remote.model.named_parameters())
    max_diff = 0.0
    for name, value in local.model.named_parameters():
        torch.testing.assert_close(params[name], value, atol=ATOL, rtol=0)
        max_diff = max(max_diff, (params[name] - value).abs().max().item())
    assert any(not torch.equal(before[name], params[name]) for name in before), "the student did not move"
    loss_diff = max(abs(a - b) for a, b in zip(logged(remote, "loss"), logged(local, "loss")))
    return loss_diff, max_diff


def served_trainer(student, dataset, tmp_path, server, **overrides):
    return build_trainer(SCOPETrainer, student, dataset, tmp_path, teacher_model_server_url=server.url, **overrides)


def test_served_scores_equal_the_in_process_teacher(
    vllm_toy_paths, vllm_teacher_server, hf_teacher, toy_dataset, tmp_path
):
    """The log-prob vLLM returns for each completion token is the in-process teacher's, to 1e-5, for sequences of
    1 to 450 tokens (prompt lengths 1 to 150), alone and as the trainer's padded batch."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(2, 1), (3, 2), (9, 1), (17, 8), (64, 5), (130, 50), (300, 150), (450, 100)]  # (length, prompt length)
    sequences = [torch.randint(0, TEACHER_VOCAB, (length,), generator=generator).tolist() for length, _ in shapes]
    starts = [start for _, start in shapes]
    served = ServedTeacher(vllm_teacher_server.url, startup_timeout=60.0)
    scores = served.request(sequences, starts)
    expected = reference_scores(hf_teacher, sequences, starts)
    assert [len(row) for row in scores] == [length - start for length, start in shapes]
    served_flat, expected_flat = torch.tensor(sum(scores, [])), torch.tensor(sum(expected, []))
    torch.testing.assert_close(served_flat, expected_flat, atol=ATOL, rtol=0)
    print(
        f"\nserved vs in-process teacher, {served_flat.numel()} tokens: max |diff| = "
        f"{(served_flat - expected_flat).abs().max().item():.3g}"
    )

    # The trainer's path: left-padded prompts, right-padded completions, only the selected rows sent.
    student = vllm_toy_paths["student"]
    local = build_trainer(SCOPETrainer, student, toy_dataset, tmp_path / "local", teacher=vllm_toy_paths["teacher"])
    remote = served_trainer(student, toy_dataset, tmp_path / "remote", vllm_teacher_server)
    prompt_ids = torch.randint(5, TEACHER_VOCAB, (4, 6), generator=generator)
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[1, :2] = prompt_mask[3, :4] = 0
    completion_ids = torch.randint(5, TEACHER_VOCAB, (4, 5), generator=generator)
    completion_mask = torch.ones_like(completion_ids)
    completion_mask[0, 3:] = completion_mask[2, 1:] = 0
    input_ids, attention_mask = (
        torch.cat([prompt_ids, completion_ids], 1),
        torch.cat([prompt_mask, completion_mask], 1),
    )
    rows = torch.tensor([True, True, False, True])
    calls = [record_scores(trainer) for trainer in (remote, local)]
    for trainer in (remote, local):
        trainer._score_with_teacher(input_ids, attention_mask, 5, rows, 4)
    compare_scoring(*calls)
    (remote_scores,) = [call["scores"] for call in calls[0]]
    assert (remote_scores[~rows] == 0).all() and remote_scores[calls[0][0]["loss_tokens"]].lt(0).all()
    sequences, starts = unpadded_sequences(
        prompt_ids[rows], prompt_mask[rows], completion_ids[rows], completion_mask[rows]
    )
    torch.testing.assert_close(
        remote_scores[rows][completion_mask[rows].bool()],
        torch.tensor(sum(reference_scores(hf_teacher, sequences, starts), [])),
        atol=ATOL,
        rtol=0,
    )


def test_training_through_the_server_matches_the_in_process_teacher(
    vllm_toy_paths, vllm_teacher_server, toy_dataset, tmp_path
):
    """3 optimizer steps (3 generation batches of one prompt x 4 rollouts, binary verifier): same rollouts, same teacher
    scores on the incorrect ones, same losses and SCOPE metrics, same final weights, to 1e-5."""
    student, overrides = vllm_toy_paths["student"], {"max_steps": 3, "steps_per_generation": 1, **SGD}
    local = build_trainer(
        SCOPETrainer, student, toy_dataset, tmp_path / "local", teacher=vllm_toy_paths["teacher"], **overrides
    )
    local_calls = record_scores(local)
    local.train()
    remote = served_trainer(student, toy_dataset, tmp_path / "remote", vllm_teacher_server, **overrides)
    remote_calls = record_scores(remote)
    before = snapshot(remote.model)
    remote.train()

    assert remote.teacher_model is None and remote.teacher_record["server_url"] == vllm_teacher_server.url
    score_diff, tokens = compare_scoring(remote_calls, local_calls)
    loss_diff, param_diff = assert_same_training(remote, local, before)
    # Not vacuous: the teacher scored incorrect rollouts, with finite log-probs, and they were distilled.
    assert tokens > 0 and sum(logged(remote, "scope/frac_incorrect")) > 0
    assert all(value == 0 for value in logged(remote, "scope/frac_nonfinite_teacher"))
    assert any(math.isfinite(value) and value != 0 for value in logged(remote, "scope/teacher_kl"))
    print(
        f"\n{tokens} teacher-scored tokens: max |score diff| {score_diff:.3g}, max |loss diff| {loss_diff:.3g}, "
        f"max |param diff| {param_diff:.3g}"
    )


@pytest.mark.distributed
def test_ddp_processes_share_the_server(vllm_toy_paths, vllm_teacher_server, hf_teacher, tmp_path):
    """DDP over gloo, 2 CPU processes, both scoring on one server: training completes, the processes stay in sync, the
    weights of every generation batch are what one process computes on the gathered batch, each process sent exactly
    its own incorrect rows, and the teacher log-probs each got back are the in-process teacher's."""
    report, ranks = launch(
        "cpu_multi.yaml", vllm_toy_paths, tmp_path, "--teacher_server_url", vllm_teacher_server.url, "--max_steps", "3"
    )
    check_report(report, "MULTI_CPU", global_step=3)
    assert report["teacher_wrapper"] == "NoneType", report  # nothing of the teacher in the training processes
    compared = 0
    for batch in generation_batches(ranks):
        check_weights(batch)  # the single-process recomputation; incorrect rows (only) got negative teacher scores
        for record in batch:
            rows = [i for i, path in enumerate(record["scope_route"]) if path == OPD]
            assert record["score_rows"] == rows and record["teacher_calls"] == []  # no forward in the process
            if not rows:
                continue
            tensors = [
                torch.tensor(record[key])[rows]
                for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
            ]
            sequences, starts = unpadded_sequences(*tensors)
            expected = reference_scores(hf_teacher, sequences, starts)
            lengths = tensors[3].sum(1).tolist()
            means = [sum(row[:length]) / length for row, length in zip(expected, lengths)]  # mean over the mask
            served = [record["local_teacher_seq_logps"][row] for row in rows]
            assert served == pytest.approx(means, abs=ATOL, rel=0)
            compared += len(rows)
    assert compared > 0, "no process sent anything to the server"


def test_student_ids_beyond_the_served_vocabulary_follow_the_nonfinite_policy(
    padded_student, vllm_toy_paths, vllm_teacher_server, toy_dataset, tmp_path
):
    """A student with 384 output rows samples ids 320..383, which the served teacher (320 rows) does not have: vLLM
    refuses them (HTTP 400). They must be masked before the request and scored -inf, as the in-process teacher does,
    so that `exclude` drops those rollouts from distillation and counts them, and `error` raises."""
    teacher = vllm_toy_paths["teacher"]
    overrides = {"max_steps": 2, "steps_per_generation": 1, **SGD}

    # Hand-made: unknown ids in the completions of the selected rows (and of an unselected one).
    generator = torch.Generator().manual_seed(1)
    prompt_ids = torch.randint(5, TEACHER_VOCAB, (3, 4), generator=generator)
    completion_ids = torch.randint(5, TEACHER_VOCAB, (3, 6), generator=generator)
    completion_ids[0, 2] = completion_ids[1, 5] = completion_ids[2, 0] = TEACHER_VOCAB + 7
    completion_ids[1, 0] = PADDED_VOCAB - 1
    completion_mask = torch.ones_like(completion_ids)
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    attention_mask = torch.cat([torch.ones_like(prompt_ids), completion_mask], 1)
    rows = torch.tensor([True, True, False])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = build_trainer(SCOPETrainer, padded_student, toy_dataset, tmp_path / "hand_local", teacher=teacher)
        remote = served_trainer(
            padded_student,
            toy_dataset,
            tmp_path / "hand_remote",
            vllm_teacher_server,
            teacher_model_name_or_path=teacher,
        )
        calls = [record_scores(trainer) for trainer in (remote, local)]
        for trainer in (remote, local):
            trainer._score_with_teacher(input_ids, attention_mask, completion_ids.size(1), rows, 4)
    compare_scoring(*calls)
    scores = calls[0][0]["scores"]
    assert torch.isinf(scores[:2]).sum() == 3 and scores[0, 2] == scores[1, 0] == scores[1, 5] == float("-inf")

    # Training, exclude: the same rollouts leave the distillation path on both sides, and training goes on.
    local = build_trainer(SCOPETrainer, padded_student, toy_dataset, tmp_path / "local", teacher=teacher, **overrides)
    local_calls = record_scores(local)
    with pytest.warns(UserWarning, match="non-finite"):
        local.train()
    remote = served_trainer(padded_student, toy_dataset, tmp_path / "remote", vllm_teacher_server, **overrides)
    remote_calls = record_scores(remote)
    before = snapshot(remote.model)
    with pytest.warns(UserWarning, match="non-finite"):
        remote.train()
    compare_scoring(remote_calls, local_calls)
    loss_diff, param_diff = assert_same_training(remote, local, before)
    excluded = logged(remote, "scope/frac_nonfinite_teacher")
    assert excluded[0] > 0, excluded  # not vacuous, and the first generation batch of the `error` runs below
    assert all(math.isfinite(value) for value in logged(remote, "loss"))
    print(
        f"\nfrac_nonfinite_teacher per step {excluded}; max |loss diff| {loss_diff:.3g}, "
        f"max |param diff| {param_diff:.3g}"
    )

    # Training, error: both stop at the first generation batch, with the same message.
    for trainer in (
        build_trainer(
            SCOPETrainer,
            padded_student,
            toy_dataset,
            tmp_path / "error_local",
            teacher=teacher,
            nonfinite_teacher_scores="error",
            **overrides,
        ),
        served_trainer(
            padded_student,
            toy_dataset,
            tmp_path / "error_remote",
            vllm_teacher_server,
            nonfinite_teacher_scores="error",
            **overrides,
        ),
    ):
        with pytest.raises(ValueError, match="non-finite log-prob") as raised:
            trainer.train()
        assert trainer.state.global_step == 0, raised.value


def test_a_server_that_cannot_start_fails_with_its_log_and_leaves_nothing_behind(tmp_path):
    """`LocalVLLMServer` on a folder that holds no model: the error comes as soon as the server exits, with the tail
    of its log, and no process of its group is left running."""
    from scope_trl.vllm_server import LocalVLLMServer

    (tmp_path / "not-a-model").mkdir()
    server = LocalVLLMServer(tmp_path / "not-a-model", tmp_path / "server.log")
    with pytest.raises(RuntimeError, match=r"(?s)exited with \d+ before answering /health.*Log .*server\.log"):
        server.start()
    assert server.process is None and server.group is not None
    assert list(server.processes()) == []  # no engine or worker left in its process group
    assert (tmp_path / "server.log").read_text().strip(), "the server's log is empty"
