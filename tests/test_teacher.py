"""The three teacher placements of `scope_trl.teacher`, each tested on its own, without a trainer: the in-process
teacher (with the ZeRO-3 row agreement and the vocabulary gap), the offloaded one, and the served one against
`FakeVLLMServer` (the real vLLM server: tests/test_vllm_teacher_server.py), including the served teacher's seams:
vLLM's stand-in for -inf, ids outside the served vocabulary, timeouts, retries and the agreement on failure across
processes."""

import json
import sys
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM

from scope_trl.teacher import (
    InProcessTeacher,
    OffloadedTeacher,
    ServedTeacher,
    TeacherServerError,
    unpadded_sequences,
)

from .distributed_utils import SCRIPTS_DIR, launch_script
from .fake_vllm_server import FakeVLLMServer


pytest.importorskip("requests")

UNKNOWN = 330  # an id beyond the tiny teacher's 320 rows, as a padded student embedding could sample


@pytest.fixture(scope="module")
def teacher(teacher_path):
    return AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32).eval()


@pytest.fixture
def server(teacher, teacher_path):
    with FakeVLLMServer(teacher, model_name=str(teacher_path)) as running:
        yield running


def reference_logps(model, input_ids, attention_mask, logits_to_keep, batch_size=None):
    """Per-token log-probs from the full logits: the independent reference (and a `logps_fn` for the tests)."""
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -logits_to_keep - 1 : -1]
    logps = torch.log_softmax(logits.float(), -1).gather(-1, input_ids[:, -logits_to_keep:, None]).squeeze(-1)
    return logps, None, None


def batch(seed=0, unknown=False):
    """Four rows, prompts left-padded and completions right-padded to different lengths, as TRL lays them out."""
    generator = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(5, 60, (4, 6), generator=generator)
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[1, :2] = 0
    prompt_mask[3, :4] = 0
    completion_ids = torch.randint(5, 60, (4, 5), generator=generator)
    completion_mask = torch.ones_like(completion_ids)
    completion_mask[0, 3:] = 0
    completion_mask[2, 1:] = 0
    if unknown:
        completion_ids[1, 2] = UNKNOWN
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    attention_mask = torch.cat([prompt_mask, completion_mask], 1)
    return input_ids, attention_mask, completion_mask.bool()


ROWS = torch.tensor([True, True, False, True])
WIDTH = 5


def test_unpadded_sequences_drop_the_padding_on_both_sides():
    prompt_ids = torch.tensor([[0, 0, 7, 8], [5, 6, 7, 8]])
    prompt_mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    completion_ids = torch.tensor([[9, 10, 0], [11, 12, 13]])
    completion_mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    sequences, starts = unpadded_sequences(prompt_ids, prompt_mask, completion_ids, completion_mask)
    assert sequences == [[7, 8, 9, 10], [5, 6, 7, 8, 11, 12, 13]]
    assert starts == [2, 4]


# ------------------------------------------------------------------------------------------------------------------
# In process
# ------------------------------------------------------------------------------------------------------------------


def test_in_process_scores_are_the_teachers_log_probs_on_the_selected_rows(teacher):
    input_ids, attention_mask, loss_tokens = batch()
    placed = InProcessTeacher(teacher, reference_logps, vocab_size=320, student_vocab_rows=320)
    scores = placed.score(input_ids, attention_mask, WIDTH, ROWS, batch_size=2)
    expected, _, _ = reference_logps(teacher, input_ids[ROWS], attention_mask[ROWS], WIDTH)
    assert scores.dtype == torch.float32 and scores.shape == (4, WIDTH)
    torch.testing.assert_close(scores[ROWS], expected)
    assert (scores[~ROWS] == 0).all() and placed.offload_seconds == 0.0


def test_in_process_gives_minus_infinity_to_ids_beyond_the_teachers_vocabulary(teacher):
    input_ids, attention_mask, _ = batch(unknown=True)
    placed = InProcessTeacher(teacher, reference_logps, vocab_size=320, student_vocab_rows=336, filler_id=3)
    scores = placed.score(input_ids, attention_mask, WIDTH, ROWS, batch_size=4)
    assert scores[1, 2] == float("-inf")
    others = torch.ones_like(scores, dtype=torch.bool)
    others[1, 2] = False
    assert torch.isfinite(scores[others]).all()
    # Every other token is scored as if the unknown id were the filler: the same values as a batch that has it.
    input_ids[1, 6 + 2] = 3
    expected = InProcessTeacher(teacher, reference_logps, 320, 320).score(input_ids, attention_mask, WIDTH, ROWS, 4)
    torch.testing.assert_close(scores[others], expected[others])


class CountingAccelerator:
    """Stands in for a ZeRO-3 world in which another process has `other_rows` rows to score."""

    def __init__(self, other_rows):
        self.other_rows = other_rows

    def gather(self, tensor):
        return torch.cat([tensor, torch.tensor([self.other_rows])])


def test_sharded_in_process_scoring_makes_as_many_forwards_as_the_busiest_process(teacher):
    """Under ZeRO-3 every teacher forward is a collective: a process with fewer rows pads with copies of a row, and
    the padding never reaches the scores."""
    input_ids, attention_mask, _ = batch()
    seen = []

    def recording(model, ids, mask, logits_to_keep, batch_size=None):
        seen.append(ids.size(0))
        return reference_logps(model, ids, mask, logits_to_keep)

    alone = InProcessTeacher(teacher, reference_logps, 320, 320).score(input_ids, attention_mask, WIDTH, ROWS, 8)
    for other_rows, forwarded in ((4, 4), (1, 3), (0, 3)):
        seen.clear()
        placed = InProcessTeacher(
            teacher, recording, 320, 320, accelerator=CountingAccelerator(other_rows), sharded=True
        )
        torch.testing.assert_close(placed.score(input_ids, attention_mask, WIDTH, ROWS, 8), alone)
        assert seen == [forwarded]
    # No row here, rows elsewhere: this process still makes the forward call.
    seen.clear()
    none = torch.zeros(4, dtype=torch.bool)
    placed = InProcessTeacher(teacher, recording, 320, 320, accelerator=CountingAccelerator(2), sharded=True)
    assert (placed.score(input_ids, attention_mask, WIDTH, none, 8) == 0).all() and seen == [2]


# ------------------------------------------------------------------------------------------------------------------
# Offloaded
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("placement", [InProcessTeacher, OffloadedTeacher])
def test_in_process_scoring_runs_in_inference_mode_and_returns_usable_scores(teacher, placement):
    """The teacher's forward records nothing for autograd (inference mode); its scores still enter the loss, where a
    tensor made in inference mode must not be saved for backward, and the offloaded teacher's moves stay outside."""
    input_ids, attention_mask, _ = batch()
    modes = []

    def recording_logps(*args, **kwargs):
        modes.append(torch.is_inference_mode_enabled())
        return reference_logps(*args, **kwargs)

    placed = placement(teacher, recording_logps, vocab_size=320, student_vocab_rows=320)
    scores = placed.score(input_ids, attention_mask, WIDTH, ROWS, batch_size=2)
    assert modes == [True] and not scores.is_inference()
    weight = torch.ones(1, requires_grad=True)
    (weight * scores).sum().backward()  # what the loss does with them
    assert weight.grad is not None and all(not p.is_inference() for p in placed.model.parameters())


def test_offloaded_teacher_visits_the_device_only_to_score(teacher):
    input_ids, attention_mask, _ = batch()
    placed = OffloadedTeacher(teacher, reference_logps, 320, 320, device="cpu")
    moves = []
    original = placed.model.to

    def recording_to(*args, **kwargs):
        moves.append(str(args[0]))
        return original(*args, **kwargs)

    placed.model.to = recording_to
    scores = placed.score(input_ids, attention_mask, WIDTH, ROWS, 4)
    expected = InProcessTeacher(teacher, reference_logps, 320, 320).score(input_ids, attention_mask, WIDTH, ROWS, 4)
    assert torch.equal(scores, expected)
    assert moves == ["cpu", "cpu"] and placed.offload_seconds >= 0.0  # to the device (here the CPU) and back
    moves.clear()
    placed.score(input_ids, attention_mask, WIDTH, torch.zeros(4, dtype=torch.bool), 4)
    assert moves == []  # nothing to score: the teacher stays where it rests
    del placed.model.to


# ------------------------------------------------------------------------------------------------------------------
# Served
# ------------------------------------------------------------------------------------------------------------------


def test_served_scores_equal_the_in_process_teachers_and_only_selected_rows_travel(teacher, server):
    input_ids, attention_mask, loss_tokens = batch()
    served = ServedTeacher(server.url, startup_timeout=10, vocab_size=320)
    scores = served.score(input_ids, attention_mask, WIDTH, ROWS, 4)
    expected = InProcessTeacher(teacher, reference_logps, 320, 320).score(input_ids, attention_mask, WIDTH, ROWS, 4)
    selected = loss_tokens & ROWS.unsqueeze(1)
    torch.testing.assert_close(scores[selected], expected[selected], atol=1e-5, rtol=1e-5)
    assert (scores[~selected] == 0).all()
    (request,) = server.requests
    prompt, completion = input_ids[ROWS, :-WIDTH], input_ids[ROWS, -WIDTH:]
    assert (
        request["prompt"]
        == unpadded_sequences(prompt, attention_mask[ROWS, :-WIDTH], completion, attention_mask[ROWS, -WIDTH:])[0]
    )
    assert served.record() == {"commit_hash": None, "dtype": None, "server_url": server.url}


def test_served_ids_beyond_the_vocabulary_follow_the_in_process_rule(teacher, server):
    """vLLM refuses a request holding an id outside its vocabulary (HTTP 400): such ids are sent as the filler and
    come back -inf, exactly where the in-process teacher puts -inf, with the same values elsewhere."""
    input_ids, attention_mask, loss_tokens = batch(unknown=True)
    served = ServedTeacher(server.url, startup_timeout=10, vocab_size=320, filler_id=3)
    scores = served.score(input_ids, attention_mask, WIDTH, ROWS, 4)
    in_process = InProcessTeacher(teacher, reference_logps, 320, 336, filler_id=3)
    expected = in_process.score(input_ids, attention_mask, WIDTH, ROWS, 4)
    selected = loss_tokens & ROWS.unsqueeze(1)
    assert torch.equal(torch.isinf(scores[selected]), torch.isinf(expected[selected]))
    assert scores[1, 2] == float("-inf")
    finite = selected & torch.isfinite(expected)
    torch.testing.assert_close(scores[finite], expected[finite], atol=1e-5, rtol=1e-5)
    assert all(token < 320 for sequence in server.requests[0]["prompt"] for token in sequence)

    unmasked = ServedTeacher(server.url, startup_timeout=10, vocab_size=None, max_retries=0)
    with pytest.raises(TeacherServerError, match="400.*Token id 330 is out of vocabulary"):
        unmasked.score(input_ids, attention_mask, WIDTH, ROWS, 4)


def test_vllms_stand_in_for_minus_infinity_reads_as_minus_infinity(server):
    """vLLM's server sends -9999.0 where the log-prob is -inf (JSON has no infinity): it must reach the trainer as
    -inf, so that `nonfinite_teacher_scores` applies, not as an advantage of about -9999."""
    input_ids, attention_mask, _ = batch()
    server.negative_infinity = {(0, -1)}  # the last token of the first sequence of the request
    scores = ServedTeacher(server.url, startup_timeout=10).score(input_ids, attention_mask, WIDTH, ROWS, 4)
    assert scores[0, 2] == float("-inf")  # row 0's completion has 3 tokens
    assert torch.isfinite(scores[0, :2]).all() and torch.isfinite(scores[1]).all()


def test_a_transient_5xx_is_retried(server):
    input_ids, attention_mask, _ = batch()
    server.failures = (503, 1)
    scores = ServedTeacher(server.url, startup_timeout=10, backoff=0.0).score(
        input_ids, attention_mask, WIDTH, ROWS, 4
    )
    assert len(server.requests) == 2 and torch.isfinite(scores[ROWS][:, :1]).all()

    server.requests.clear()
    server.failures = (503, 5)
    served = ServedTeacher(server.url, startup_timeout=10, max_retries=2, backoff=0.0)
    with pytest.raises(TeacherServerError, match=rf"server at {server.url} failed to score 3 sequences.*2 retries"):
        served.score(input_ids, attention_mask, WIDTH, ROWS, 4)
    assert len(server.requests) == 3  # the request and its two retries, no more


def test_a_stalled_request_times_out_and_is_retried(server):
    """A request the server does not answer within `request_timeout` is abandoned and retried; a server that keeps
    stalling ends in an error instead of a hang. (Each stalled answer would come, late, with valid scores: only the
    timeout can turn it into the error.)"""
    input_ids, attention_mask, _ = batch()
    server.stalls = (3.0, 1)
    served = ServedTeacher(server.url, startup_timeout=10, request_timeout=0.5, max_retries=2, backoff=0.0)
    scores = served.score(input_ids, attention_mask, WIDTH, ROWS, 4)
    assert len(server.requests) == 2 and torch.isfinite(scores[ROWS][:, :1]).all()

    server.requests.clear()
    server.stalls = (3.0, 10)
    served = ServedTeacher(server.url, startup_timeout=10, request_timeout=0.5, max_retries=1, backoff=0.0)
    with pytest.raises(TeacherServerError, match="timed out"):
        served.score(input_ids, attention_mask, WIDTH, ROWS, 4)
    assert len(server.requests) == 2


def test_an_unreachable_server_is_refused_at_construction_within_the_timeout():
    from .distributed_utils import free_port

    port = free_port()
    with pytest.raises(ConnectionError, match=f"vLLM server at http://127.0.0.1:{port}.*teacher_model_server_timeout"):
        ServedTeacher(f"http://127.0.0.1:{port}", startup_timeout=0.0)


def test_missing_requests_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "requests", None)  # `import requests` now fails as if it were not installed
    with pytest.raises(ImportError, match=r"scope-trl\[teacher-server\]"):
        ServedTeacher("http://127.0.0.1:1", startup_timeout=0.0)


@pytest.mark.distributed
def test_a_failed_request_stops_every_process_with_the_same_message(server, tmp_path):
    """Process 0's request fails for good; process 1 has nothing to score and would otherwise go on to the next
    collective and wait there forever. Both raise the same error, naming process 0, and then still meet at a
    collective (no process is left behind)."""
    server.error = (400, '{"error": "prompt_logprobs exceeds max_logprobs"}')
    result = tmp_path / "result.json"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = launch_script(
            SCRIPTS_DIR / "served_teacher_failure.py",
            "cpu_multi.yaml",
            result,
            script_args=[server.url, str(result)],
            timeout=300,
        )
    # A transient launch failure (gloo's rendezvous) is relaunched once by `run_command`, which warns: that first
    # attempt may have reached the server too.
    launches = 1 + sum("transient launch error" in str(warning.message) for warning in caught)
    messages = report["messages"]
    assert len(messages) == 2 and messages[0] == messages[1], json.dumps(messages, indent=1)
    assert messages[0].startswith("Training process 0 of 2 stopped: The teacher's vLLM server at")
    assert "max_logprobs" in messages[0]
    assert len(server.requests) == launches  # one request per launch, from process 0, not retried (a 400 is final)
    assert report["met_after_failure"] == [True, True]
