"""SCOPETrainer under real training conditions: rollouts without loss tokens, non-finite teacher scores, the off-policy
sequence mask, the metrics a GRPO user monitors, the teacher's dtype and identity, and clear refusals."""

import json
import math
import os
import shutil
import sys
import types
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, ProcessorMixin

from scope_trl import SCOPEConfig, SCOPETrainer
from scope_trl.apps.toy import build_tiny_model, build_tokenizer, contains_digit_reward
from scope_trl.routing import EXCLUDED, MLE, OPD
from scope_trl.surrogate_trainer import sequence_advantages
from scope_trl.teacher import weights_fingerprint

from .helpers import build_trainer, hand_batch, logged, snapshot
from .test_scope_trainer import build_scope, record_generation_batches, scope_args


GROUP = 4  # tiny_args: 4 generations per prompt
ROWS = 16  # the tests below that need several groups ask for 4 prompts per generation batch


def bias_eos(trainer, amount: float):
    """Shift the student's EOS logit during generation, to control how many completions end before the length cap."""
    eos = trainer.processing_class.eos_token_id

    def hook(module, args, output):
        output = output.clone()
        output[..., eos] += amount
        return output

    return trainer.model.lm_head.register_forward_hook(hook)


def construct_scope(student, teacher, dataset, tmp_path, **overrides):
    """`build_scope` without silencing the construction's warnings (the tests below check them)."""
    args = scope_args(tmp_path, teacher, **overrides)
    return SCOPETrainer(model=student, reward_funcs=contains_digit_reward, args=args, train_dataset=dataset)


def subset_means(out):
    """Mean weight of every non-empty (group, path) subset of a generation batch."""
    path, weight = out["scope_route"], out["scope_weight"]
    means = []
    for start in range(0, len(path), GROUP):
        for route in (MLE, OPD):
            members = path[start : start + GROUP] == route
            if members.any():
                means.append(weight[start : start + GROUP][members].mean().item())
    return means


# ------------------------------------------------------------------------------------------------------------------
# 1. Rollouts with no loss token (docs/scope.md, Decisions: excluded rollouts)
# ------------------------------------------------------------------------------------------------------------------


def test_rollouts_without_loss_tokens_are_routed_nowhere(student_path, teacher_path, toy_dataset, tmp_path):
    """With mask_truncated_completions=True TRL zeroes a truncated rollout's mask: it must not take any weight."""
    trainer = build_scope(
        student_path,
        teacher_path,
        toy_dataset,
        tmp_path,
        mask_truncated_completions=True,
        max_steps=3,
        per_device_train_batch_size=ROWS,
    )
    bias_eos(trainer, 4.0)  # about one completion in four hits the 8-token cap
    batches = record_generation_batches(trainer)
    trainer.train()
    mixed = 0
    for batch in batches:
        out = batch["out"]
        tokens = out["completion_mask"].sum(1)
        empty = tokens == 0
        mixed += bool(empty.any() and (~empty).any())
        assert (out["scope_route"][empty] == EXCLUDED).all()
        assert (out["scope_weight"][empty] == 0).all() and (out["advantages"][empty] == 0).all()
        routed = out["scope_route"] != EXCLUDED
        assert out["num_items_in_batch"] == tokens[routed].sum()
        assert out["scope_num_tokens_opd"] == tokens[out["scope_route"] == OPD].sum()
        # Mean-1 weights over the rollouts that train, not over the masked ones.
        for mean in subset_means(out):
            assert mean == pytest.approx(1.0, abs=1e-5)
    assert mixed, "no generation batch mixed truncated and finished rollouts: the test would prove nothing"
    assert all(math.isfinite(loss) for loss in logged(trainer, "loss"))


def test_an_all_truncated_batch_trains_nothing_and_logs_no_fake_perplexity(
    student_path, teacher_path, toy_dataset, tmp_path
):
    trainer = build_scope(
        student_path, teacher_path, toy_dataset, tmp_path, mask_truncated_completions=True, max_steps=1
    )
    bias_eos(trainer, -100.0)  # no completion ever ends: every rollout is truncated, so fully masked
    batches = record_generation_batches(trainer)
    before = snapshot(trainer.model)
    teacher_calls = []
    trainer.teacher_model.register_forward_pre_hook(lambda *a: teacher_calls.append(1))
    trainer.train()
    out = batches[0]["out"]
    assert (out["scope_route"] == EXCLUDED).all() and out["num_items_in_batch"] == 0
    assert not teacher_calls
    assert logged(trainer, "scope/frac_excluded") == [1.0]
    assert logged(trainer, "scope/teacher_ppl_incorrect_mean") == []  # not a fake 1.0 from empty rollouts
    assert logged(trainer, "loss") == [0.0]
    assert all(torch.equal(before[name], p.detach()) for name, p in trainer.model.named_parameters())


# ------------------------------------------------------------------------------------------------------------------
# 2. Non-finite teacher scores
# ------------------------------------------------------------------------------------------------------------------


def poison_teacher_scores(trainer, value):
    """Make the teacher return `value` on one token of one scored rollout and on every scored rollout of one group.

    Returns the list of (global) rows poisoned, per generation batch."""
    original = trainer._score_with_teacher
    poisoned = []

    def score(input_ids, attention_mask, logits_to_keep, rows, batch_size):
        logps = original(input_ids, attention_mask, logits_to_keep, rows, batch_size)
        scored = rows.nonzero().squeeze(1).tolist()
        rows_hit = []
        if scored:
            group = scored[0] // GROUP
            rows_hit = [r for r in scored if r // GROUP == group]  # a whole group's distillation subset
            rows_hit += [r for r in scored if r // GROUP != group][:1]  # and one rollout of another group
            for r in rows_hit:
                logps[r, 1] = value
        poisoned.append(rows_hit)
        return logps

    trainer._score_with_teacher = score
    return poisoned


# -1e30 is finite but below vLLM's stand-in for -inf (-9999): a served teacher could not tell it from -inf, so no
# placement does.
@pytest.mark.parametrize("value", [float("-inf"), float("nan"), -1e30])
def test_nonfinite_teacher_scores_never_reach_the_loss(value, student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build_scope(
        student_path, teacher_path, toy_dataset, tmp_path, max_steps=2, per_device_train_batch_size=ROWS
    )
    poisoned = poison_teacher_scores(trainer, value)
    batches = record_generation_batches(trainer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert len([w for w in caught if "non-finite log-prob" in str(w.message)]) == 1  # warned once, not per step
    for batch, rows in zip(batches, poisoned, strict=True):
        out = batch["out"]
        assert rows, "no rollout was scored by the teacher"
        assert (out["scope_route"][rows] == EXCLUDED).all() and (out["scope_weight"][rows] == 0).all()
        assert torch.isfinite(out["advantages"]).all() and (out["advantages"][rows] == 0).all()
        for mean in subset_means(out):  # the other rollouts of a poisoned subset share its weight
            assert mean == pytest.approx(1.0, abs=1e-5)
    for key in ("loss", "policy_loss", "grad_norm", "scope/teacher_kl"):
        assert all(math.isfinite(v) for v in logged(trainer, key)), key
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    fractions = logged(trainer, "scope/frac_nonfinite_teacher")
    assert fractions == [len(rows) / ROWS for rows in poisoned]
    assert all(len({r // GROUP for r in rows}) == 2 for rows in poisoned)  # a whole group and one other rollout


def test_nonfinite_teacher_scores_can_be_an_error(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build_scope(student_path, teacher_path, toy_dataset, tmp_path, nonfinite_teacher_scores="error")
    poison_teacher_scores(trainer, float("-inf"))
    with pytest.raises(ValueError, match=r"non-finite log-prob .* at step 0.*nonfinite_teacher_scores='exclude'"):
        trainer.train()


def test_nonfinite_teacher_scores_option_is_validated(tmp_path):
    with pytest.raises(ValueError, match="nonfinite_teacher_scores must be one of 'exclude', 'error'"):
        SCOPEConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", nonfinite_teacher_scores="ignore")


# ------------------------------------------------------------------------------------------------------------------
# 3. The off-policy mask is a sequence mask
# ------------------------------------------------------------------------------------------------------------------


def test_sequence_advantages_reduce_per_token_advantages_to_their_mean():
    advantages = torch.tensor([[1.0, -3.0, 9.0], [2.0, 2.0, 2.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(sequence_advantages(advantages, mask), torch.tensor([[-1.0], [2.0], [0.0]]))
    grpo = torch.tensor([[0.5], [-0.5]])
    assert sequence_advantages(grpo, torch.ones(2, 3)) is grpo


def scope_hand_batch(trainer, student_path, paths, advantages, offsets):
    inputs = hand_batch(trainer, student_path, advantages, offsets)
    path = torch.tensor(paths)
    mask = inputs["completion_mask"].float()
    inputs.update(
        scope_route=path,
        scope_weight=torch.ones(len(paths)),
        scope_num_tokens_mle=(mask * (path == MLE).unsqueeze(1)).sum(),
        scope_num_tokens_opd=(mask * (path == OPD).unsqueeze(1)).sum(),
        outcome_advantages=torch.zeros(len(paths)),
    )
    return inputs


def scope_for_hand_batches(student_path, teacher_path, toy_dataset, tmp_path, **overrides):
    trainer = build_scope(student_path, teacher_path, toy_dataset, tmp_path, **overrides)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def test_off_policy_mask_drops_whole_stale_distillation_rollouts(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = scope_for_hand_batches(student_path, teacher_path, toy_dataset, tmp_path, off_policy_mask_threshold=0.1)
    # Row 0: a stale distillation rollout whose tokens disagree in sign but whose mean advantage is negative.
    # Row 1: stale, mean advantage positive. Row 2: stale MLE rollout (advantage = weight > 0). Row 3: fresh.
    advantages = torch.tensor([[2.0, -5.0, 1.0, -1.0], [3.0, -1.0, 1.0, 1.0], [1.0] * 4, [-4.0] * 4])
    # log pi_theta - log pi_old per token: -0.5 is a sampled-token KL(pi_old || pi_theta) estimate of 0.5 > 0.1.
    offsets = torch.tensor([[-0.5] * 4, [-0.5] * 4, [-0.5] * 4, [0.0] * 4])
    inputs = scope_hand_batch(trainer, student_path, [OPD, OPD, MLE, OPD], advantages, offsets)
    batch = trainer._policy_batch(trainer.model, inputs)
    assert batch.off_policy_mask.shape == (4, 1)  # one decision per rollout, never a per-token mask
    assert batch.off_policy_mask.squeeze(1).tolist() == [0.0, 1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------------------------------------------
# 4. What a GRPO user monitors
# ------------------------------------------------------------------------------------------------------------------


def test_clip_ratio_metrics_count_the_distillation_path_tokens(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = scope_for_hand_batches(student_path, teacher_path, toy_dataset, tmp_path)
    advantages = torch.tensor([[-1.0] * 4, [1.0] * 4, [1.0] * 4, [-1.0] * 4])
    # r = e^-0.5 = 0.61 < 0.8 (LN when A < 0); r = e^0.5 = 1.65 > 1.2 (HP when A > 0).
    offsets = torch.tensor([[-0.5, -0.5, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0], [0.5] * 4, [-0.5] * 4])
    inputs = scope_hand_batch(trainer, student_path, [OPD, OPD, MLE, EXCLUDED], advantages, offsets)
    trainer._policy_batch(trainer.model, inputs)
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    # Distillation tokens: row 0 has 2 (its last two are padding, hand_batch), row 1 has 4; the MLE row and the
    # excluded row do not count.
    assert metrics["clip_ratio/low_mean"] == pytest.approx(2 / 6)
    assert metrics["clip_ratio/high_mean"] == pytest.approx(1 / 6)
    assert metrics["clip_ratio/region_mean"] == pytest.approx(3 / 6)
    assert metrics["clip_ratio/high_max"] == pytest.approx(1 / 4)


def test_clip_ratio_metrics_are_logged_off_policy(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build_scope(student_path, teacher_path, toy_dataset, tmp_path, steps_per_generation=4)
    trainer.train()
    regions = logged(trainer, "clip_ratio/region_mean")
    assert len(regions) == 4 and regions[0] == 0.0 and max(regions) > 0.0  # step 1 is on-policy, later ones are not


def test_completions_table_shows_what_scope_trains_on(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build_scope(
        student_path, teacher_path, toy_dataset, tmp_path, max_steps=1, per_device_train_batch_size=ROWS
    )
    batches = record_generation_batches(trainer)
    trainer.train()
    out = batches[-1]["out"]
    mask = out["completion_mask"].float()
    mean_advantage = (out["advantages"] * mask).sum(1) / mask.sum(1).clamp(min=1)
    path = out["scope_route"]
    expected = torch.where(path == MLE, out["scope_weight"], torch.where(path == OPD, mean_advantage, 0.0))
    shown = torch.tensor(list(trainer._logs["advantages"])[-ROWS:])
    torch.testing.assert_close(shown, expected)
    assert (path == OPD).any() and not torch.equal(shown, out["outcome_advantages"])


# ------------------------------------------------------------------------------------------------------------------
# 5. The teacher's dtype and identity
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "dtype"),
    [
        ({}, torch.float32),
        ({"bf16": True}, torch.bfloat16),
        ({"bf16": True, "teacher_model_init_kwargs": {"dtype": "float32"}}, torch.float32),
    ],
)
def test_teacher_loads_in_the_training_precision(overrides, dtype, student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build_scope(student_path, teacher_path, toy_dataset, tmp_path, **overrides)
    assert trainer.teacher_model.dtype == dtype
    assert trainer.teacher_record["dtype"] == str(dtype).replace("torch.", "")


def test_checkpoints_and_model_card_record_the_teacher(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build_scope(
        student_path, teacher_path, toy_dataset, tmp_path, max_steps=2, save_strategy="steps", save_steps=2
    )
    trainer.train()
    record = json.loads((tmp_path / "checkpoint-2" / "scope_teacher.json").read_text())
    assert record == {
        "name_or_path": teacher_path,
        "revision": None,
        "commit_hash": None,
        "dtype": "float32",
        "fingerprint": weights_fingerprint(teacher_path),
        "temperature": 1.0,
    }
    assert len(record["fingerprint"]) == 16
    card = (tmp_path / "README.md").read_text()
    assert "## Teacher" in card and f"- name_or_path: `{teacher_path}`" in card
    assert f"- fingerprint: `{record['fingerprint']}`" in card


def test_resuming_with_another_teacher_is_refused(student_path, teacher_path, toy_dataset, tmp_path):
    first = build_scope(
        student_path, teacher_path, toy_dataset, tmp_path, max_steps=2, save_strategy="steps", save_steps=2
    )
    first.train()
    other_teacher = tmp_path / "another-teacher"  # the same architecture and tokenizer, other weights
    model = AutoModelForCausalLM.from_pretrained(teacher_path)
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(0.01)
    model.save_pretrained(other_teacher)
    AutoTokenizer.from_pretrained(teacher_path).save_pretrained(other_teacher)
    resumed = build_scope(student_path, str(other_teacher), toy_dataset, tmp_path, max_steps=3)
    with pytest.raises(
        ValueError, match=r"another teacher \(the weights at '.*another-teacher' differ from those of '.*teacher'"
    ):
        resumed.train(resume_from_checkpoint=True)
    allowed = build_scope(
        student_path, str(other_teacher), toy_dataset, tmp_path, max_steps=3, allow_teacher_change=True
    )
    with pytest.warns(UserWarning, match="with another teacher"):
        allowed.train(resume_from_checkpoint=True)
    assert allowed.state.global_step == 3
    same = build_scope(student_path, teacher_path, toy_dataset, tmp_path, max_steps=3)
    same.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert same.state.global_step == 3


def test_the_same_teacher_under_another_path_resumes(student_path, teacher_path, toy_dataset, tmp_path, monkeypatch):
    """A teacher is identified by its weights, not by the string that named it: a relative path to the same directory,
    or a copy of it elsewhere (a checkpoint moved to another machine), resumes without complaint."""
    first = build_scope(
        student_path, teacher_path, toy_dataset, tmp_path, max_steps=2, save_strategy="steps", save_steps=2
    )
    first.train()
    record = json.loads((tmp_path / "checkpoint-2" / "scope_teacher.json").read_text())
    assert record["name_or_path"] == teacher_path and len(record["fingerprint"]) == 16
    monkeypatch.chdir(os.path.dirname(teacher_path))
    moved = shutil.copytree(teacher_path, tmp_path / "elsewhere" / "teacher")
    for name in (os.path.basename(teacher_path), str(moved)):
        resumed = build_scope(student_path, name, toy_dataset, tmp_path, max_steps=3, save_strategy="no")
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # not even an allow_teacher_change warning
            resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
        assert resumed.state.global_step == 3


def test_different_chat_templates_are_warned_about(student_path, teacher_path, toy_dataset, tmp_path):
    teacher = shutil.copytree(teacher_path, tmp_path / "instruct-teacher")
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    tokenizer.save_pretrained(teacher)
    with pytest.warns(UserWarning, match="chat templates of the student .* and the teacher .* differ"):
        construct_scope(student_path, str(teacher), toy_dataset, tmp_path)


def test_a_padded_student_embedding_cannot_crash_teacher_scoring(teacher_path, toy_dataset, tmp_path):
    tokenizer = build_tokenizer()
    padded = tmp_path / "padded-student"
    build_tiny_model(tokenizer, seed=0, hidden_size=16, vocab_size=len(tokenizer) + 16).save_pretrained(padded)
    tokenizer.save_pretrained(padded)
    with pytest.warns(UserWarning, match=r"output rows \(a padded embedding\)"):
        trainer = construct_scope(str(padded), teacher_path, toy_dataset, tmp_path)
    prompt = torch.tensor([tokenizer("What is 1 + 2?")["input_ids"]] * 2)
    completion = torch.tensor([[20, 21, 22, len(tokenizer) + 3], [20, 21, 22, 23]])  # row 0 samples an unknown id
    ids = torch.cat([prompt, completion], 1)
    logps = trainer._score_with_teacher(ids, torch.ones_like(ids), 4, torch.tensor([True, True]), batch_size=2)
    assert logps[0, 3] == float("-inf") and torch.isfinite(logps[0, :3]).all() and torch.isfinite(logps[1]).all()


# ------------------------------------------------------------------------------------------------------------------
# 6. Refusals
# ------------------------------------------------------------------------------------------------------------------


class TextOnlyProcessor(ProcessorMixin):
    """The smallest `ProcessorMixin`: enough for SCOPETrainer to recognise a multimodal processing class."""

    attributes = ["tokenizer"]
    tokenizer_class = "AutoTokenizer"


def test_vision_language_processors_are_refused(student_path, teacher_path, toy_dataset, tmp_path):
    processor = TextOnlyProcessor(tokenizer=AutoTokenizer.from_pretrained(student_path))
    with pytest.raises(ValueError, match="does not support vision-language models \\(TextOnlyProcessor\\)"):
        SCOPETrainer(
            student_path,
            contains_digit_reward,
            args=SCOPEConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none"),
            train_dataset=toy_dataset,
            teacher_model=teacher_path,
            processing_class=processor,
        )


def test_periodic_evaluation_refuses_fsdp():
    from scope_trl.evaluation import PeriodicEvaluationCallback

    trainer = types.SimpleNamespace(is_deepspeed_enabled=False, is_fsdp_enabled=True)
    callback = PeriodicEvaluationCallback({}, every_n_steps=1, trainer=trainer)
    with pytest.raises(ValueError, match="does not support FSDP.*scope-trl eval"):
        callback.on_train_begin(None, None, None)


def test_a_users_reward_module_imports_without_changing_sys_path(tmp_path, monkeypatch):
    from scope_trl.scripts.common import reward_funcs_from_names

    (tmp_path / "my_rewards_xyz.py").write_text(
        "def shaped(completions, **kwargs):\n    return [1.0] * len(completions)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = list(sys.path)
    (func,) = reward_funcs_from_names(["my_rewards_xyz.shaped"])
    assert func(["a", "b"]) == [1.0, 1.0]
    assert sys.path == before
    with pytest.raises(ValueError, match="module 'my_rewards_xyz' has no attribute 'missing'"):
        reward_funcs_from_names(["my_rewards_xyz.missing"])


def test_teacher_offload_trains_identically_and_rests_on_cpu(student_path, teacher_path, toy_dataset, tmp_path):
    """`teacher_offload`: the teacher moves to the accelerator only around scoring and back to CPU after it; the
    training is the same step for step (on CPU both placements are the CPU, so the values must match exactly)."""
    runs = {}
    for offload in (False, True):
        trainer = build_trainer(
            SCOPETrainer,
            student_path,
            toy_dataset,
            tmp_path / str(offload),
            teacher=teacher_path,
            teacher_offload=offload,
            max_steps=3,
            steps_per_generation=1,
        )
        moves = []

        def recording_to(*args, _moves=moves, _to=trainer.teacher_model.to, **kwargs):
            _moves.append(str(args[0]))
            return _to(*args, **kwargs)

        trainer.teacher_model.to = recording_to
        trainer.train()
        runs[offload] = (
            logged(trainer, "loss"),
            snapshot(trainer.model),
            moves,
            logged(trainer, "teacher/offload_time"),
        )
        assert all(p.device.type == "cpu" for p in trainer.teacher_model.parameters())
    (losses, params, moves, times), (offload_losses, offload_params, offload_moves, offload_times) = runs.values()
    assert losses == offload_losses and all(torch.equal(params[n], offload_params[n]) for n in params)
    assert moves == [] and times == []
    device = str(trainer.accelerator.device)
    assert len(offload_moves) >= 2 and offload_moves == [device, "cpu"] * (len(offload_moves) // 2)
    assert len(offload_times) == 3 and all(t >= 0 for t in offload_times)


def test_teacher_offload_is_refused_where_deepspeed_or_fsdp_place_the_teacher(
    student_path, teacher_path, toy_dataset, tmp_path
):
    from scope_trl.teacher import OffloadedTeacher, check_offload

    trainer = build_trainer(
        SCOPETrainer, student_path, toy_dataset, tmp_path, teacher=teacher_path, teacher_offload=True
    )
    assert isinstance(trainer.teacher, OffloadedTeacher)  # single process: accepted
    check_offload(teacher_offload=False, placed_by_framework=True)
    with pytest.raises(ValueError, match="teacher_offload=True is not supported with DeepSpeed or FSDP.*ZeRO-3"):
        check_offload(teacher_offload=True, placed_by_framework=True)


# ------------------------------------------------------------------------------------------------------------------
# π_old from the loss forward (one on-policy micro-batch per generation batch)
# ------------------------------------------------------------------------------------------------------------------


def test_pi_old_from_the_loss_forward_trains_like_a_separate_forward(
    student_path, teacher_path, toy_dataset, tmp_path
):
    """With one micro-batch per generation batch used once, π_old is the loss forward's own log-probs: no extra
    student forward, and the same losses, weights, metrics and trained weights as with SCOPE's separate no-grad
    forward (forced here by turning the deferral off)."""
    runs = {}
    for deferred in (True, False):
        trainer = build_scope(
            student_path,
            teacher_path,
            toy_dataset,
            tmp_path / str(deferred),
            max_steps=3,
            steps_per_generation=1,
            per_device_train_batch_size=8,
        )
        if not deferred:
            trainer._old_logps_from_loss_forward = lambda: False
        batches = record_generation_batches(trainer)
        scoring_forwards = []
        original = trainer._get_per_token_logps_and_entropies

        def counting(model, *args, _original=original, _trainer=trainer, _calls=scoring_forwards, **kwargs):
            if model is _trainer.model and not torch.is_grad_enabled():
                _calls.append(1)  # a no-grad student forward: π_old computed apart from the loss
            return _original(model, *args, **kwargs)

        trainer._get_per_token_logps_and_entropies = counting
        trainer.train()
        metrics = {
            key: logged(trainer, key)
            for key in (
                "loss",
                "scope/teacher_kl",
                "scope/student_weight_max",
                "scope/teacher_weight_min",
                "scope/opd_loss",
            )
        }
        runs[deferred] = (metrics, snapshot(trainer.model), len(scoring_forwards), batches)
    (metrics, params, forwards, batches), (eager_metrics, eager_params, eager_forwards, eager_batches) = runs.values()
    assert forwards == 0 and eager_forwards == 3
    for key, values in metrics.items():
        assert values == pytest.approx(eager_metrics[key], rel=1e-5, abs=1e-7), key
    for name, value in params.items():
        torch.testing.assert_close(value, eager_params[name], rtol=1e-5, atol=1e-6)
    for batch, eager in zip(batches, eager_batches, strict=True):
        assert torch.equal(batch["out"]["scope_route"], eager["out"]["scope_route"])
        torch.testing.assert_close(batch["out"]["scope_weight"], eager["out"]["scope_weight"])
        torch.testing.assert_close(batch["out"]["advantages"], eager["out"]["advantages"], rtol=1e-5, atol=1e-6)
    assert any((batch["out"]["scope_route"] == OPD).any() for batch in batches)


def test_pi_old_waits_for_the_loss_forward_only_when_that_is_exact(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build_scope(student_path, teacher_path, toy_dataset, tmp_path, steps_per_generation=1)
    trainer.model.train()
    assert trainer._old_logps_from_loss_forward()
    trainer.model.eval()
    assert not trainer._old_logps_from_loss_forward()  # evaluation: no loss forward follows every generation batch
    for overrides in ({"steps_per_generation": 2}, {"num_iterations": 2}, {"off_policy_mask_threshold": 0.5}):
        trainer = build_scope(
            student_path, teacher_path, toy_dataset, tmp_path, **{"steps_per_generation": 1, **overrides}
        )
        trainer.model.train()
        assert not trainer._old_logps_from_loss_forward(), overrides
