"""A teacher on a vLLM server (`teacher_model_server_url`), tested against `FakeVLLMServer`: a small HTTP server that
speaks vLLM's scoring format with the tiny teacher's real log-probs. Not run against a real vLLM here (it needs a GPU).
"""

import socket

import pytest
import torch
from transformers import AutoModelForCausalLM

from scope_trl import SCOPETrainer
from scope_trl.teacher_server import TeacherServer, unpadded_sequences

from .fake_vllm_server import FakeVLLMServer
from .helpers import build_trainer, logged, snapshot


pytest.importorskip("requests")


def alternate_verdicts(completions, **kwargs):
    """Every other rollout correct: half of each group is distilled, whatever the random student writes."""
    return [float(index % 2 == 0) for index in range(len(completions))]


@pytest.fixture
def server(teacher_path):
    model = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32)
    with FakeVLLMServer(model, model_name=str(teacher_path)) as running:
        yield running


def served(student_path, dataset, tmp_path, server, **overrides):
    return build_trainer(SCOPETrainer, student_path, dataset, tmp_path, reward_funcs=alternate_verdicts,
                         teacher_model_server_url=server.url, **overrides)  # fmt: skip


def padded_batch(tokenizer_rows=4, seed=0):
    """Left-padded prompts and right-padded completions of different lengths, as TRL lays a generation batch out."""
    generator = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(5, 60, (tokenizer_rows, 6), generator=generator)
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_mask[1, :2] = 0
    prompt_mask[3, :4] = 0
    completion_ids = torch.randint(5, 60, (tokenizer_rows, 5), generator=generator)
    completion_mask = torch.ones_like(completion_ids)
    completion_mask[0, 3:] = 0
    completion_mask[2, 1:] = 0
    return prompt_ids, prompt_mask, completion_ids, completion_mask


def test_unpadded_sequences_drop_the_padding_on_both_sides():
    prompt_ids = torch.tensor([[0, 0, 7, 8], [5, 6, 7, 8]])
    prompt_mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    completion_ids = torch.tensor([[9, 10, 0], [11, 12, 13]])
    completion_mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    sequences, starts = unpadded_sequences(prompt_ids, prompt_mask, completion_ids, completion_mask)
    assert sequences == [[7, 8, 9, 10], [5, 6, 7, 8, 11, 12, 13]]
    assert starts == [2, 4]


def test_server_scores_equal_the_in_process_teacher(student_path, teacher_path, toy_dataset, tmp_path, server):
    local = build_trainer(SCOPETrainer, student_path, toy_dataset, tmp_path / "local", teacher=teacher_path)
    remote = served(student_path, toy_dataset, tmp_path / "remote", server, teacher_model_name_or_path=teacher_path)
    assert remote.teacher_model is None and remote.teacher_record["server_url"] == server.url
    assert remote.teacher_record["name_or_path"] == teacher_path

    prompt_ids, prompt_mask, completion_ids, completion_mask = padded_batch()
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    attention_mask = torch.cat([prompt_mask, completion_mask], 1)
    rows = torch.tensor([True, True, False, True])
    width = completion_ids.size(1)
    expected = local._score_with_teacher(input_ids, attention_mask, width, rows, batch_size=4)
    scores = remote._score_with_teacher(input_ids, attention_mask, width, rows, batch_size=4)

    loss_tokens = completion_mask.bool() & rows.unsqueeze(1)
    torch.testing.assert_close(scores[loss_tokens], expected[loss_tokens], atol=1e-5, rtol=1e-5)
    assert (scores[~rows] == 0).all() and scores[loss_tokens].lt(0).all()
    # Only the selected rows travel, unpadded, in one request.
    (request,) = server.requests
    assert request["prompt"] == unpadded_sequences(prompt_ids[rows], prompt_mask[rows], completion_ids[rows],
                                                   completion_mask[rows])[0]  # fmt: skip


def test_training_through_the_server_matches_the_in_process_teacher(student_path, teacher_path, toy_dataset,
                                                                    tmp_path, server):  # fmt: skip
    """Same seed, same rollouts: the losses and the trained weights agree, and only incorrect rollouts were sent."""
    overrides = {"max_steps": 2, "steps_per_generation": 1}
    local = build_trainer(SCOPETrainer, student_path, toy_dataset, tmp_path / "local", teacher=teacher_path,
                          reward_funcs=alternate_verdicts, **overrides)  # fmt: skip
    local.train()
    remote = served(student_path, toy_dataset, tmp_path / "remote", server, **overrides)
    before = snapshot(remote.model)
    remote.train()

    assert logged(remote, "loss") == pytest.approx(logged(local, "loss"), rel=1e-4, abs=1e-6)
    assert logged(remote, "scope/teacher_kl") == pytest.approx(logged(local, "scope/teacher_kl"), rel=1e-4)
    params = dict(remote.model.named_parameters())
    for name, value in local.model.named_parameters():
        torch.testing.assert_close(params[name], value, atol=1e-5, rtol=1e-4)
    assert any(not torch.equal(before[name], params[name]) for name in before)
    rollouts = remote.args.per_device_train_batch_size  # one generation batch per step here
    sent = [len(request["prompt"]) for request in server.requests]
    assert sent == [rollouts // 2] * 2  # the incorrect half of each generation batch, nothing else
    assert logged(remote, "scope/frac_incorrect") == [0.5, 0.5]


def test_a_token_the_server_does_not_return_follows_the_nonfinite_policy(student_path, toy_dataset, tmp_path,
                                                                         server):  # fmt: skip
    server.drop = {(0, -1)}  # the last completion token of the first sequence of every request comes back -inf
    with pytest.warns(UserWarning, match="non-finite"):
        trainer = served(student_path, toy_dataset, tmp_path / "exclude", server, max_steps=1, steps_per_generation=1)
        trainer.train()
    assert logged(trainer, "scope/frac_nonfinite_teacher") == [0.25]  # 1 of the 4 rollouts
    assert all(torch.isfinite(torch.tensor(logged(trainer, "loss"))))

    strict = served(student_path, toy_dataset, tmp_path / "error", server, max_steps=1, steps_per_generation=1,
                    nonfinite_teacher_scores="error")  # fmt: skip
    with pytest.raises(ValueError, match="non-finite log-prob"):
        strict.train()


def test_a_server_error_names_the_url(student_path, toy_dataset, tmp_path, server):
    trainer = served(student_path, toy_dataset, tmp_path, server, max_steps=1)
    server.error = (400, '{"error": "prompt_logprobs exceeds max_logprobs"}')
    with pytest.raises(RuntimeError, match=f"server at {server.url} failed to score 8 sequences.*max_logprobs"):
        trainer.train()


def test_an_unreachable_server_is_refused_at_construction(student_path, toy_dataset, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionError, match=f"vLLM server at http://127.0.0.1:{port}.*teacher_model_server_timeout"):
        build_trainer(SCOPETrainer, student_path, toy_dataset, tmp_path, teacher_model_server_host="127.0.0.1",
                      teacher_model_server_port=port, teacher_model_server_timeout=0.0)  # fmt: skip


def test_a_teacher_instance_and_a_server_exclude_each_other(student_path, teacher_path, toy_dataset, tmp_path):
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path)
    with pytest.raises(ValueError, match="choose one"):
        build_trainer(SCOPETrainer, student_path, toy_dataset, tmp_path, teacher=teacher,
                      teacher_model_server_url="http://127.0.0.1:1")  # fmt: skip


def test_missing_requests_names_the_extra(monkeypatch):
    monkeypatch.setattr("scope_trl.teacher_server.is_requests_available", lambda: False)
    with pytest.raises(ImportError, match=r"scope-trl\[teacher-server\]"):
        TeacherServer("http://127.0.0.1:1", timeout=0.0)
