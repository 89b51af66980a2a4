"""SCOPETrainer on the tiny student and the larger tiny teacher: training, routing, teacher scoring, loss, errors."""

import random
import re
import warnings
from unittest import mock

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from trl import GRPOConfig

from scope_trl import SCOPEConfig, SCOPETrainer
from scope_trl.apps.toy import build_tiny_model, build_tokenizer, contains_digit_reward, make_arithmetic_dataset
from scope_trl.routing import EXCLUDED, MLE, OPD

from .helpers import changed, hand_batch, logged, make_trainer, per_token_logps_grad, snapshot, tiny_args


SCOPE_METRICS = [
    "scope/frac_correct",
    "scope/frac_groups_all_correct",
    "scope/frac_groups_all_incorrect",
    "scope/mle_loss",
    "scope/opd_loss",
    "scope/teacher_kl",
    "scope/student_ppl_correct_mean",
    "scope/teacher_ppl_incorrect_mean",
    "scope/student_weight_max",
    "scope/teacher_weight_max",
    "teacher/score_time",
    "policy_loss",
]


def scope_args(tmp_path, teacher_path=None, **overrides):
    # SCOPE's default is one optimizer step per generation batch (aligned): TRL computes no old log-probs.
    overrides = {"steps_per_generation": None, "teacher_model_name_or_path": teacher_path, **overrides}
    return tiny_args(tmp_path, SCOPEConfig, **overrides)


def build_scope(student, teacher, dataset, tmp_path, reward_funcs=contains_digit_reward, teacher_model=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SCOPETrainer(
            model=student,
            reward_funcs=reward_funcs,
            args=scope_args(tmp_path, teacher, **kw),
            train_dataset=dataset,
            teacher_model=teacher_model,
        )


def hand_batch_scope(student_path, teacher_path, dataset, tmp_path, **overrides):
    """A SCOPETrainer ready for `_compute_loss` on hand-made batches (`helpers.make_trainer`)."""
    return make_trainer(
        SCOPETrainer,
        SCOPEConfig,
        student_path,
        dataset,
        tmp_path,
        contains_digit_reward,
        trainer_kwargs={"teacher_model": teacher_path},
        **overrides,
    )


def record_generation_batches(trainer):
    """Keep every generation batch `_generate_and_score_completions` returns (with the rewards), in generation order
    and complete: when π_old is the loss forward's own, the weights, routes and advantages are computed there
    (`_weight_generation_batch`) and merged into the record then."""
    batches = []
    generate, weight = trainer._generate_and_score_completions, trainer._weight_generation_batch

    def generate_wrapper(inputs):
        out = generate(inputs)
        batches.append({"out": dict(out), "rewards": trainer._last_rewards_per_func.clone()})
        return out

    def weight_wrapper(scored, old_per_token_logps):
        weighted = weight(scored, old_per_token_logps)
        if batches and "scope_route" not in batches[-1]["out"]:  # weighted in the loss forward, after scoring
            batches[-1]["out"].update(weighted)
        return weighted

    trainer._generate_and_score_completions = generate_wrapper
    trainer._weight_generation_batch = weight_wrapper
    return batches


# ------------------------------------------------------------------------------------------------------------------
# End to end
# ------------------------------------------------------------------------------------------------------------------


def test_training_changes_the_student_only_and_logs_scope_metrics(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build_scope(student_path, teacher_path, toy_dataset, tmp_path)
    student_before, teacher_before = snapshot(trainer.model), snapshot(trainer.teacher_model)
    trainer.train()
    assert len(changed(student_before, trainer.model)) == len(student_before)
    assert not changed(teacher_before, trainer.teacher_model)
    assert not trainer.teacher_model.training
    assert not any(p.requires_grad for p in trainer.teacher_model.parameters())
    assert trainer.teacher_model.config.hidden_size == 32 and trainer.model.config.hidden_size == 16
    for key in SCOPE_METRICS:
        assert logged(trainer, key), key
    assert set(trainer._logs["extra"]["scope_route"]) <= {"mle", "opd", "excluded"}
    assert len(trainer._logs["extra"]["scope_weight"]) == len(trainer._logs["extra"]["scope_route"])
    # The card a push would upload: base model (a Hub id, as when training from the Hub), dataset, tags, citations.
    trainer.model.config._name_or_path = "Qwen/Qwen3-1.7B-Base"
    trainer.create_model_card(model_name="tiny-scope", dataset_name="zwhe99/DeepMath-103K")
    card = (tmp_path / "README.md").read_text()
    for needle in (
        "base_model: Qwen/Qwen3-1.7B-Base",
        "datasets: zwhe99/DeepMath-103K",
        "- scope",
        "- scope-trl",
        "SCOPE",
        "2604.10688",
        "zheng2026scope",
        "vonwerra2020trl",
    ):
        assert needle in card, needle


def test_teacher_scores_only_incorrect_rollouts_once_per_generation_batch(
    student_path, teacher_path, toy_dataset, tmp_path
):
    # 2 optimizer steps per generation batch, 4 steps: exactly 2 generation batches.
    trainer = build_scope(student_path, teacher_path, toy_dataset, tmp_path, steps_per_generation=2, max_steps=4)
    batches = record_generation_batches(trainer)
    scored = []

    def hook(module, args, kwargs):
        scored.append(kwargs["input_ids"].clone())

    trainer.teacher_model.register_forward_pre_hook(hook, with_kwargs=True)
    trainer.train()
    assert len(batches) == 2
    teacher_rows = torch.cat(scored) if scored else torch.empty(0, dtype=torch.long)
    expected = []
    for batch in batches:
        out, correct = batch["out"], batch["rewards"][:, 0] >= 1.0
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
        assert (out["scope_route"] == torch.where(correct, MLE, OPD)).all()
        expected.append(ids[~correct])
        torch.testing.assert_close(out["advantages"][correct], out["scope_weight"][correct, None].expand(-1, 8))
    expected = torch.cat(expected)
    assert 0 < len(expected) < 16  # mixed groups: both paths were exercised
    assert teacher_rows.shape == expected.shape and torch.equal(teacher_rows, expected)


def test_unscorable_rollouts_are_excluded_from_both_paths(student_path, teacher_path, toy_dataset, tmp_path):
    def verifier_with_gaps(completions, **kwargs):
        rewards = contains_digit_reward(completions)
        return [None if i % 4 == 0 else r for i, r in enumerate(rewards)]

    trainer = build_scope(student_path, teacher_path, toy_dataset, tmp_path, reward_funcs=verifier_with_gaps)
    batches = record_generation_batches(trainer)
    trainer.train()
    for batch in batches:
        out = batch["out"]
        excluded = torch.isnan(batch["rewards"][:, 0])
        assert excluded.sum() == len(excluded) // 4
        assert (out["scope_route"][excluded] == EXCLUDED).all() and (out["scope_route"][~excluded] != EXCLUDED).all()
        assert (out["advantages"][excluded] == 0).all() and (out["scope_weight"][excluded] == 0).all()
        routed_tokens = out["completion_mask"][~excluded].sum()
        assert out["num_items_in_batch"] == routed_tokens
        assert out["scope_num_tokens_mle"] + out["scope_num_tokens_opd"] == routed_tokens
    assert logged(trainer, "scope/frac_excluded") == pytest.approx([0.25] * 4)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"policy_surrogate": "dgpo", "steps_per_generation": 4, "dgpo_n": 2.0}, id="dgpo-surrogate"),
        pytest.param({"steps_per_generation": 4, "num_iterations": 2, "max_steps": 8}, id="off-policy-ppo-clip"),
        pytest.param({"scope_loss_aggregation": "per_path"}, id="per-path"),
        pytest.param({"scope_loss_aggregation": "global", "weight_normalization": "sum"}, id="global-sum"),
        pytest.param(
            {"student_weight_direction": "reversed", "teacher_weight_direction": "reversed", "scope_tau": 0.5},
            id="reversed-tau",
        ),
        pytest.param({"use_student_weights": False, "use_teacher_weights": False}, id="no-dpaw"),
        pytest.param({"outcome_advantage_coef": 0.5, "mle_coef": 0.5, "opd_coef": 2.0}, id="hybrid"),
        pytest.param({"gradient_accumulation_steps": 2}, id="grad-accum"),
        pytest.param({"beta": 0.1}, id="reference-kl"),
        pytest.param({"routing": False}, id="plain-opd"),
    ],
)
def test_options_train(student_path, teacher_path, toy_dataset, tmp_path, overrides):
    trainer = build_scope(student_path, teacher_path, toy_dataset, tmp_path, **overrides)
    before = snapshot(trainer.model)
    trainer.train()
    assert changed(before, trainer.model)
    assert all(torch.isfinite(torch.tensor(logged(trainer, "loss"))))
    if overrides.get("routing") is False:
        assert logged(trainer, "scope/frac_incorrect") == [1.0] * 4  # every rollout is distilled
        assert logged(trainer, "scope/mle_loss") == [0.0] * 4
        assert set(trainer._logs["extra"]["scope_weight"]) == {1.0}


def test_lora_student(student_path, teacher_path, toy_dataset, tmp_path):
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SCOPETrainer(
            model=student_path,
            reward_funcs=contains_digit_reward,
            args=scope_args(tmp_path, teacher_path),
            train_dataset=toy_dataset,
            peft_config=peft_config,
        )
    before = snapshot(trainer.model)
    trainer.train()
    changed_params = changed(before, trainer.model)
    assert changed_params and all("lora_" in name for name in changed_params)
    assert logged(trainer, "scope/opd_loss")


def reverse_kl_on_samples(student, teacher, tokenizer, prompts, samples=8, max_new_tokens=8, seed=0):
    """KL(π_S ‖ π_T) per position, on completions sampled from the student, averaged over completion tokens.

    This is the expectation of the sampled-token estimate log π_S(a) − log π_T(a) that OPD minimises, computed
    exactly over the vocabulary at each sampled prefix so that a few dozen samples measure it without noise.
    """
    torch.manual_seed(seed)
    batch = tokenizer(prompts * samples, return_tensors="pt", padding=True)
    prompt_length = batch["input_ids"].size(1)
    with torch.no_grad():
        out = student.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            pad_token_id=tokenizer.pad_token_id,
        )
        completion_mask = (out[:, prompt_length:] != tokenizer.pad_token_id).long()
        attention = torch.cat([batch["attention_mask"], completion_mask], 1)

        def log_probs(model):
            logits = model(input_ids=out, attention_mask=attention).logits[:, prompt_length - 1 : -1]
            return torch.log_softmax(logits.float(), -1)

        student_lp, teacher_lp = log_probs(student), log_probs(teacher)
        kl = (student_lp.exp() * (student_lp - teacher_lp)).sum(-1)
        return ((kl * completion_mask).sum() / completion_mask.sum()).item()


def digit_teacher(teacher_path, tokenizer, prompts, steps=60):
    """The tiny teacher, fine-tuned to continue any prompt with random digits: a clear, learnable target."""
    rng = random.Random(0)
    torch.manual_seed(0)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path)
    texts = [p + " " + "".join(rng.choice("0123456789 ") for _ in range(16)) for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for _ in range(steps):
        teacher(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return teacher.eval()


def test_plain_opd_moves_the_student_towards_the_teacher(toy_paths, tmp_path):
    """A real learning signal: the student's reverse KL to the teacher falls over a few dozen steps of plain OPD."""
    tokenizer = AutoTokenizer.from_pretrained(toy_paths["tokenizer"])
    dataset = make_arithmetic_dataset(256, seed=3, conversational=False)
    teacher = digit_teacher(toy_paths["teacher"], tokenizer, dataset["prompt"][:64])
    prompts = dataset["prompt"][:8]
    student = AutoModelForCausalLM.from_pretrained(toy_paths["student"])
    before = reverse_kl_on_samples(student, teacher, tokenizer, prompts)
    trainer = build_scope(
        toy_paths["student"],
        None,
        dataset,
        tmp_path,
        teacher_model=teacher,
        routing=False,
        max_steps=30,
        learning_rate=3e-2,
        num_generations=4,
        per_device_train_batch_size=16,
        logging_steps=5,
    )
    trainer.train()
    after = reverse_kl_on_samples(trainer.model, trainer.teacher_model, tokenizer, prompts)
    assert after < 0.75 * before, (before, after)
    kl = logged(trainer, "scope/teacher_kl")  # the trainer's own sampled-token estimate, one value per 5 steps
    assert kl[-1] < 0.8 * kl[0], kl


def test_checkpoint_resume_and_teacher_not_saved(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build_scope(
        student_path, teacher_path, toy_dataset, tmp_path, max_steps=2, save_strategy="steps", save_steps=2
    )
    trainer.train()
    checkpoint = tmp_path / "checkpoint-2"
    saved = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert saved.config.hidden_size == 16  # the student, not the teacher
    # No teacher weights: only the small record of which teacher trained it.
    assert [path.name for path in checkpoint.iterdir() if "teacher" in path.name] == ["scope_teacher.json"]
    resumed = build_scope(student_path, teacher_path, toy_dataset, tmp_path, max_steps=4)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    assert [e["step"] for e in resumed.state.log_history if "loss" in e] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------------------------------
# Construction errors
# ------------------------------------------------------------------------------------------------------------------


def test_no_teacher_is_refused(student_path, toy_dataset, tmp_path):
    with pytest.raises(ValueError, match="SCOPETrainer needs a teacher.*teacher_model_name_or_path"):
        build_scope(student_path, None, toy_dataset, tmp_path)


def test_grpo_config_is_refused_and_the_conversion_it_suggests_works(
    student_path, teacher_path, toy_dataset, tmp_path
):
    args = tiny_args(tmp_path, GRPOConfig, learning_rate=1e-3)
    with pytest.raises(TypeError, match=r"SCOPETrainer needs a SCOPEConfig.*SCOPEConfig\.from_grpo_config\("):
        SCOPETrainer(
            student_path, contains_digit_reward, args=args, train_dataset=toy_dataset, teacher_model=teacher_path
        )
    converted = SCOPEConfig.from_grpo_config(args, teacher_model_name_or_path=teacher_path)
    assert converted.learning_rate == 1e-3 and converted.teacher_model_name_or_path == teacher_path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SCOPETrainer(student_path, contains_digit_reward, args=converted, train_dataset=toy_dataset)
    trainer.train()
    assert trainer.state.global_step == args.max_steps


def test_mismatched_tokenizer_names_both_models(student_path, toy_dataset, tmp_path):
    other_tokenizer = build_tokenizer(vocab_size=300)  # different merges: the same text maps to other ids
    teacher_dir = tmp_path / "other-teacher"
    build_tiny_model(other_tokenizer, hidden_size=32, vocab_size=400).save_pretrained(teacher_dir)
    other_tokenizer.save_pretrained(teacher_dir)
    message = r"(?s)other-teacher.*does not share the tokenizer of the student.*student"
    # Refused before either model loads (an 8B teacher takes minutes and tens of GB to load).
    refuse_loading = mock.patch.object(
        PreTrainedModel, "from_pretrained", side_effect=AssertionError("a model loaded")
    )
    with refuse_loading, pytest.raises(ValueError, match=message):
        build_scope(student_path, str(teacher_dir), toy_dataset, tmp_path)
    # The teacher passed as a model instance: checked once it is loaded, as before.
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    with pytest.raises(ValueError, match=r"(?s)does not share the tokenizer of the student.*student"):
        build_scope(student_path, None, toy_dataset, tmp_path, teacher_model=teacher)


def test_teacher_with_too_small_a_vocabulary(student_path, toy_paths, toy_dataset, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(toy_paths["tokenizer"])
    teacher = build_tiny_model(tokenizer, hidden_size=32)
    teacher.resize_token_embeddings(len(tokenizer) - 20)
    with pytest.raises(ValueError, match="some student token ids do not exist for the teacher"):
        build_scope(student_path, None, toy_dataset, tmp_path, teacher_model=teacher)


def test_teacher_instance_with_padded_vocabulary_is_accepted(student_path, toy_paths, toy_dataset, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(toy_paths["tokenizer"])
    padded_dir = tmp_path / "padded-teacher"
    build_tiny_model(tokenizer, hidden_size=32, vocab_size=len(tokenizer) + 64, seed=5).save_pretrained(padded_dir)
    tokenizer.save_pretrained(padded_dir)
    teacher = AutoModelForCausalLM.from_pretrained(padded_dir)
    trainer = build_scope(student_path, None, toy_dataset, tmp_path, teacher_model=teacher, max_steps=1)
    trainer.train()
    assert logged(trainer, "scope/opd_loss")


def test_correctness_reward_by_name_position_or_error(student_path, teacher_path, toy_dataset, tmp_path):
    def length_reward(completions, **kwargs):
        return [float(len(str(c))) for c in completions]

    funcs = [length_reward, contains_digit_reward]
    by_name = build_scope(
        student_path, teacher_path, toy_dataset, tmp_path, funcs, correctness_reward="contains_digit_reward"
    )
    assert by_name._verifier_index == 1
    assert (
        build_scope(student_path, teacher_path, toy_dataset, tmp_path, funcs, correctness_reward="1")._verifier_index
        == 1
    )
    assert build_scope(student_path, teacher_path, toy_dataset, tmp_path, funcs)._verifier_index == 0
    with pytest.raises(ValueError, match=r"correctness_reward='accuracy' names no reward function.*length_reward"):
        build_scope(student_path, teacher_path, toy_dataset, tmp_path, funcs, correctness_reward="accuracy")
    with pytest.raises(ValueError, match="position from 0 to 1"):
        build_scope(student_path, teacher_path, toy_dataset, tmp_path, funcs, correctness_reward="2")


def test_init_kwargs_with_a_teacher_instance_are_refused(student_path, teacher_path, toy_dataset, tmp_path):
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path)
    with pytest.raises(ValueError, match="teacher_model_init_kwargs is set"):
        build_scope(
            student_path,
            None,
            toy_dataset,
            tmp_path,
            teacher_model=teacher,
            teacher_model_init_kwargs={"dtype": "float32"},
        )


# ------------------------------------------------------------------------------------------------------------------
# The loss on a hand-made batch
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", ["official", "per_path", "global"])
@pytest.mark.parametrize("surrogate", ["ppo", "dgpo"])
def test_loss_gradient_at_ratio_one(student_path, teacher_path, toy_dataset, tmp_path, aggregation, surrogate):
    """At ρ = 1: −mle_coef·w^stu/D_mle on correct tokens, −opd_coef·A/D_opd on incorrect tokens, 0 on excluded."""
    trainer = hand_batch_scope(
        student_path,
        teacher_path,
        toy_dataset,
        tmp_path,
        scope_loss_aggregation=aggregation,
        policy_surrogate=surrogate,
        mle_coef=0.5,
        opd_coef=2.0,
    )
    torch.manual_seed(0)
    path = torch.tensor([MLE, OPD, OPD, EXCLUDED, MLE, OPD])
    inputs = hand_batch(trainer, student_path, torch.zeros(6), torch.zeros(6, 5))
    mask = inputs["completion_mask"].float()
    advantages = torch.randn(6, 5)
    advantages[path == MLE] = torch.tensor([[0.7], [1.3]]).expand(-1, 5)
    advantages[path == EXCLUDED] = 0.0
    tokens = mask.sum(1)
    n_correct, n_incorrect = tokens[path == MLE].sum(), tokens[path == OPD].sum()
    inputs.update(
        advantages=advantages,
        scope_route=path,
        outcome_advantages=torch.zeros(6),
        scope_num_tokens_mle=n_correct,
        scope_num_tokens_opd=n_incorrect,
        num_items_in_batch=n_correct + n_incorrect,
    )
    del inputs["old_per_token_logps"]  # aligned case: ρ ≡ 1
    _, grad = per_token_logps_grad(trainer, inputs)
    micro = trainer.current_gradient_accumulation_steps / trainer.args.steps_per_generation  # share of the batch
    d_all = (n_correct + n_incorrect) * micro
    d_mle = d_all if aggregation == "global" else n_correct * micro
    d_opd = n_incorrect * micro if aggregation == "per_path" else d_all
    expected = torch.zeros(6, 5)
    expected[path == MLE] = -0.5 * advantages[path == MLE] / d_mle
    expected[path == OPD] = -2.0 * advantages[path == OPD] / d_opd
    torch.testing.assert_close(grad, expected * mask, rtol=1e-4, atol=1e-7)


def test_outcome_advantage_term(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = hand_batch_scope(
        student_path,
        teacher_path,
        toy_dataset,
        tmp_path,
        outcome_advantage_coef=0.25,
        mle_coef=0.0,
        opd_coef=0.0,
    )
    path = torch.tensor([MLE, OPD, EXCLUDED, OPD])
    inputs = hand_batch(trainer, student_path, torch.zeros(4), torch.zeros(4, 5))
    del inputs["old_per_token_logps"]
    mask = inputs["completion_mask"].float()
    tokens = mask.sum(1)
    outcome = torch.tensor([1.0, -0.5, 3.0, 0.5])
    inputs.update(
        advantages=torch.zeros(4, 5),
        scope_route=path,
        outcome_advantages=outcome,
        scope_num_tokens_mle=tokens[0],
        scope_num_tokens_opd=tokens[[1, 3]].sum(),
        num_items_in_batch=tokens[[0, 1, 3]].sum(),
    )
    _, grad = per_token_logps_grad(trainer, inputs)
    d_all = tokens[[0, 1, 3]].sum() * trainer.current_gradient_accumulation_steps / trainer.args.steps_per_generation
    expected = -0.25 * outcome.unsqueeze(1) * (path != EXCLUDED).unsqueeze(1) / d_all * mask
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-7)


def test_evaluation_routes_and_logs_eval_metrics(student_path, teacher_path, toy_dataset, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SCOPETrainer(
            model=student_path,
            reward_funcs=contains_digit_reward,
            args=scope_args(tmp_path, teacher_path, max_steps=1, eval_strategy="no", per_device_eval_batch_size=4),
            train_dataset=toy_dataset,
            eval_dataset=toy_dataset.select(range(4)),
        )
    metrics = trainer.evaluate()
    for key in ("eval_loss", "eval_policy_loss", "eval_scope/frac_correct", "eval_scope/opd_loss"):
        assert key in metrics, key
    assert 0.0 <= metrics["eval_scope/frac_correct"] <= 1.0


def test_distillation_advantage_clip_bounds_the_per_token_signal(student_path, teacher_path, toy_dataset, tmp_path):
    trainer = build_scope(
        student_path, teacher_path, toy_dataset, tmp_path, distillation_advantage_clip=0.01, routing=False, max_steps=2
    )
    batches = record_generation_batches(trainer)
    trainer.train()
    for batch in batches:
        out = batch["out"]
        bound = 0.01 * out["scope_weight"].unsqueeze(1)  # the weight multiplies the clamped log-ratio
        assert (out["advantages"].abs() <= bound + 1e-7).all()
        assert (out["advantages"].abs() == bound).any()  # random tiny models disagree by more than 0.01 somewhere


@pytest.mark.parametrize("eval_batch_size", [8, 16, 32])
def test_evaluation_batch_larger_than_the_generation_batch(
    student_path, teacher_path, toy_dataset, tmp_path, eval_batch_size
):
    """TRL's completions-table buffers hold one generation batch (4 rows here); an evaluation batch of 2x, 4x, 8x that
    must neither crash the table rewrite nor put values in the wrong rows: the `advantage` column holds what SCOPE
    trained on for the rows the buffer kept, the last ones."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SCOPETrainer(
            model=student_path,
            reward_funcs=contains_digit_reward,
            args=scope_args(
                tmp_path,
                teacher_path,
                max_steps=1,
                eval_strategy="no",
                per_device_train_batch_size=4,
                steps_per_generation=1,
                num_generations_eval=4,
                per_device_eval_batch_size=eval_batch_size,
            ),
            train_dataset=toy_dataset,
            eval_dataset=toy_dataset,
        )
    rewrites = []
    original = trainer._log_completion_columns
    trainer._log_completion_columns = lambda *columns: rewrites.append(columns) or original(*columns)
    metrics = trainer.evaluate()
    assert "eval_scope/frac_correct" in metrics
    routes, weights, trained_on = rewrites[-1]
    assert len(trained_on) == eval_batch_size
    kept = trainer._logs["advantages"].maxlen
    assert list(trainer._logs["advantages"]) == pytest.approx(trained_on[-kept:])
    assert list(trainer._logs["extra"]["scope_weight"]) == pytest.approx(weights[-kept:])


def _length_bonus(completions, **kwargs):
    return [0.1 * len(str(c)) for c in completions]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {},
            r"routes rollouts on the verifier 'contains_digit_reward' \(the first reward function; correctness_reward "
            r"chooses another\); the other reward functions \['_length_bonus'\] .*train only through "
            r"outcome_advantage_coef > 0",
        ),
        ({"correctness_reward": "_length_bonus"}, r"verifier '_length_bonus' \(correctness_reward\)"),
        ({"routing": False}, r"routing=False distils every rollout: none of the reward functions"),
        ({"outcome_advantage_coef": 0.5}, None),
    ],
)
def test_reward_functions_that_do_not_train_are_named_at_construction(
    student_path, teacher_path, toy_dataset, tmp_path, overrides, expected
):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SCOPETrainer(
            model=student_path,
            reward_funcs=[contains_digit_reward, _length_bonus],
            args=scope_args(tmp_path, teacher_path, **overrides),
            train_dataset=toy_dataset,
        )
    messages = [
        str(w.message)
        for w in caught
        if "of the reward functions" in str(w.message) or "other reward" in str(w.message)
    ]
    if expected is None:
        assert messages == []
    else:
        assert len(messages) == 1 and re.search(expected, messages[0]), messages


def test_teacher_kl_is_the_sampled_token_estimate_and_can_be_negative(
    student_path, teacher_path, toy_dataset, tmp_path
):
    """`scope/teacher_kl` (docs/metrics.md) is the mean of log π_old − log π_T over the loss tokens of the incorrect
    rollouts: a sampled-token estimate of the reverse KL, negative when the teacher gives the tokens the student
    sampled more probability than the student did, although no KL is negative."""
    import math

    from scope_trl.scope_trainer import _ScoredBatch

    trainer = build_scope(student_path, teacher_path, toy_dataset, tmp_path)
    # Probabilities of the sampled tokens: row 0 is correct (never scored, so no teacher log-prob), rows 1-3 are
    # incorrect; the last token of row 3 is padding.
    student = [[0.5, 0.5, 0.5], [0.2, 0.4, 0.5], [0.1, 0.5, 0.5], [0.8, 0.25, 0.5]]
    teacher = [[1.0, 1.0, 1.0], [0.4, 0.8, 0.5], [0.8, 0.5, 0.9], [0.4, 0.5, 1.0]]
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]])
    correct = torch.tensor([True, False, False, False])
    scored = _ScoredBatch(
        position=torch.arange(4),
        mask=mask,
        teacher_logps=torch.tensor(teacher).log() * mask,
        nonfinite_teacher=torch.zeros(4, dtype=torch.bool),
        mle=correct,
        opd=~correct,
        score_seconds=torch.zeros(4),
        offload_seconds=torch.zeros(4),
    )
    trainer.model.train()  # a training generation batch: the metric goes to the training logs
    trainer._weight_generation_batch(scored, torch.tensor(student).log())
    differences = [
        math.log(s / t)
        for row in (1, 2, 3)
        for s, t, m in zip(student[row], teacher[row], mask[row].tolist())
        if m  # padding does not count
    ]
    expected = sum(differences) / len(differences)  # (−0.693 − 0.693 + 0 − 2.079 + 0 − 0.588 + 0.693 − 0.693) / 8
    assert trainer._metrics["train"]["scope/teacher_kl"][-1] == pytest.approx(expected, rel=1e-5)
    assert expected < 0 and expected == pytest.approx(-0.5067, abs=1e-4)


@pytest.mark.parametrize("method", ["dgpo", "scope"])
def test_the_model_card_of_a_local_base_model_names_it_without_a_hub_link(method, toy_paths, toy_dataset, tmp_path):
    """TRL links the base model's Hub page, and for a student loaded from a local directory wrote "a fine-tuned version
    of [None](https://huggingface.co/None)". The card names the directory, links nowhere, and leaves `base_model` out
    of the metadata (which takes Hub ids only)."""
    from pathlib import Path

    from scope_trl import DGPOConfig, DGPOTrainer
    from scope_trl.apps.toy import contains_digit_reward

    if method == "scope":
        trainer_class, args = SCOPETrainer, scope_args(tmp_path, toy_paths["teacher"])
    else:
        trainer_class, args = DGPOTrainer, tiny_args(tmp_path, DGPOConfig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = trainer_class(toy_paths["student"], contains_digit_reward, args=args, train_dataset=toy_dataset)
    trainer.create_model_card(model_name="tiny", dataset_name="toy-arithmetic")
    card = (tmp_path / "README.md").read_text()
    name = Path(toy_paths["student"]).name
    assert f"a fine-tuned version of `{name}` (loaded from a local directory) on the [toy-arithmetic]" in card, card
    assert "[None]" not in card and "huggingface.co/None" not in card and "base_model:" not in card
    trainer.model.config._name_or_path = ""  # a model built in memory: no path at all
    trainer.create_model_card(model_name="tiny")
    card = (tmp_path / "README.md").read_text()
    assert "This model is a fine-tuned version of a model without a Hub id.\n" in card, card
    assert "[None]" not in card
