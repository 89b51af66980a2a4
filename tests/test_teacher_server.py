"""SCOPE with its teacher on a vLLM server (`teacher_model_server_url`), tested through the trainer against
`FakeVLLMServer`: a small HTTP server that speaks vLLM's scoring format with the tiny teacher's real log-probs and can
misbehave on demand. The same against the real vLLM server: tests/test_vllm_teacher_server.py; the served placement on
its own: tests/test_teacher.py."""

import socket

import pytest
import torch
from transformers import AutoModelForCausalLM

from scope_trl import SCOPEConfig, SCOPETrainer
from scope_trl.teacher import ServedTeacher, unpadded_sequences

from .fake_vllm_server import FakeVLLMServer
from .helpers import build_trainer, logged, snapshot


pytest.importorskip("requests")


def alternate_verdicts(completions, **kwargs):
    """Every other rollout correct: half of each group is distilled, whatever the random student writes."""
    return [float(index % 2 == 0) for index in range(len(completions))]


@pytest.fixture
def teacher(teacher_path):
    return AutoModelForCausalLM.from_pretrained(teacher_path, dtype=torch.float32)


@pytest.fixture
def server(teacher, teacher_path):
    with FakeVLLMServer(teacher, model_name=str(teacher_path)) as running:
        yield running


def served(student_path, dataset, tmp_path, server, **overrides):
    return build_trainer(
        SCOPETrainer,
        student_path,
        dataset,
        tmp_path,
        reward_funcs=alternate_verdicts,
        teacher_model_server_url=server.url,
        **overrides,
    )


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


def test_server_scores_equal_the_in_process_teacher(student_path, teacher_path, toy_dataset, tmp_path, server):
    local = build_trainer(SCOPETrainer, student_path, toy_dataset, tmp_path / "local", teacher=teacher_path)
    remote = served(student_path, toy_dataset, tmp_path / "remote", server, teacher_model_name_or_path=teacher_path)
    assert remote.teacher_model is None and remote.teacher_record["server_url"] == server.url
    assert remote.teacher_record["name_or_path"] == teacher_path
    assert isinstance(remote.teacher, ServedTeacher) and remote.teacher.vocab_size == 320  # from the named config

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
    assert (
        request["prompt"]
        == unpadded_sequences(prompt_ids[rows], prompt_mask[rows], completion_ids[rows], completion_mask[rows])[0]
    )


def test_training_through_the_server_matches_the_in_process_teacher(
    student_path, teacher_path, toy_dataset, tmp_path, server
):
    """Same seed, same rollouts: the losses and the trained weights agree, and only incorrect rollouts were sent."""
    overrides = {"max_steps": 2, "steps_per_generation": 1}
    local = build_trainer(
        SCOPETrainer,
        student_path,
        toy_dataset,
        tmp_path / "local",
        teacher=teacher_path,
        reward_funcs=alternate_verdicts,
        **overrides,
    )
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


def test_a_token_the_server_does_not_return_follows_the_nonfinite_policy(student_path, toy_dataset, tmp_path, server):
    server.drop = {(0, -1)}  # the last completion token of the first sequence of every request comes back -inf
    with pytest.warns(UserWarning, match="non-finite"):
        trainer = served(student_path, toy_dataset, tmp_path / "exclude", server, max_steps=1, steps_per_generation=1)
        trainer.train()
    assert logged(trainer, "scope/frac_nonfinite_teacher") == [0.25]  # 1 of the 4 rollouts
    assert all(torch.isfinite(torch.tensor(logged(trainer, "loss"))))

    strict = served(
        student_path,
        toy_dataset,
        tmp_path / "error",
        server,
        max_steps=1,
        steps_per_generation=1,
        nonfinite_teacher_scores="error",
    )
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
        build_trainer(
            SCOPETrainer,
            student_path,
            toy_dataset,
            tmp_path,
            teacher_model_server_host="127.0.0.1",
            teacher_model_server_port=port,
            teacher_model_server_timeout=0.0,
        )


def test_a_teacher_instance_and_a_server_exclude_each_other(student_path, teacher_path, toy_dataset, tmp_path):
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path)
    with pytest.raises(ValueError, match="choose one"):
        build_trainer(
            SCOPETrainer,
            student_path,
            toy_dataset,
            tmp_path,
            teacher=teacher,
            teacher_model_server_url="http://127.0.0.1:1",
        )


def test_a_padded_student_through_the_server_follows_the_in_process_rule(teacher_path, toy_dataset, tmp_path, server):
    """A student whose padded embedding samples an id the served teacher lacks: the request still goes through (vLLM
    would refuse it), and that token is -inf exactly as in process, so `nonfinite_teacher_scores` decides."""
    from scope_trl.apps.toy import build_tiny_model, build_tokenizer

    tokenizer = build_tokenizer()
    padded = tmp_path / "padded-student"
    build_tiny_model(tokenizer, seed=0, hidden_size=16, vocab_size=len(tokenizer) + 16).save_pretrained(padded)
    tokenizer.save_pretrained(padded)
    local = build_trainer(SCOPETrainer, str(padded), toy_dataset, tmp_path / "local", teacher=teacher_path)
    remote = served(str(padded), toy_dataset, tmp_path / "remote", server, teacher_model_name_or_path=teacher_path)
    prompt = torch.tensor([tokenizer("What is 1 + 2?")["input_ids"]] * 2)
    completion = torch.tensor([[20, 21, 22, len(tokenizer) + 3], [20, 21, 22, 23]])  # row 0 samples an unknown id
    ids = torch.cat([prompt, completion], 1)
    rows = torch.tensor([True, True])
    expected = local._score_with_teacher(ids, torch.ones_like(ids), 4, rows, batch_size=2)
    scores = remote._score_with_teacher(ids, torch.ones_like(ids), 4, rows, batch_size=2)
    assert scores[0, 3] == expected[0, 3] == float("-inf")
    torch.testing.assert_close(
        scores[torch.isfinite(expected)], expected[torch.isfinite(expected)], atol=1e-5, rtol=1e-5
    )


def test_an_unnamed_served_teacher_is_checked_as_far_as_it_can_be(student_path, toy_dataset, tmp_path, teacher):
    """Served under a name that is no local path: neither its tokenizer nor its config can be loaded, so the warning
    says that nothing was checked, and ids beyond the student's tokenizer are the ones masked."""
    nothing_checked = pytest.warns(UserWarning, match="nothing was checked")
    with FakeVLLMServer(teacher, model_name="org/served-teacher") as running, nothing_checked:
        args = SCOPEConfig(str(tmp_path), use_cpu=True, report_to="none", teacher_model_server_url=running.url)
        trainer = SCOPETrainer(student_path, alternate_verdicts, args=args, train_dataset=toy_dataset)
    assert trainer.teacher_record["name_or_path"] == "org/served-teacher"
    assert trainer.teacher.vocab_size == len(trainer.processing_class)
