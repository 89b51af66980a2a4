"""DGPOTrainer on the tiny offline model: training runs, GRPO features, the loss on hand-made batches, checkpoints."""

import math
import warnings

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from scope_trl import DGPOConfig, DGPOTrainer
from scope_trl.apps.toy import digit_fraction_reward
from scope_trl.losses import dgpo_surrogate

from .helpers import changed, hand_batch, logged, make_trainer, per_token_logps_grad, snapshot, tiny_args


DGPO_METRICS = [
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "clip_ratio/region_mean",
    "clip_ratio/low_min",
    "clip_ratio/high_max",
    "policy_loss",
]


def tiny_dgpo_args(tmp_path, config_class=DGPOConfig, **overrides):
    return tiny_args(tmp_path, config_class, **overrides)


def make_dgpo_trainer(student_path, dataset, tmp_path, config_class=DGPOConfig, **overrides):
    trainer_class = DGPOTrainer if config_class is DGPOConfig else GRPOTrainer
    return make_trainer(
        trainer_class, config_class, student_path, dataset, tmp_path, digit_fraction_reward, **overrides
    )


def build_dgpo(student_path, dataset, tmp_path, eval_dataset=None, peft_config=None, **overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DGPOTrainer(
            model=student_path,
            reward_funcs=digit_fraction_reward,
            args=tiny_dgpo_args(tmp_path, **overrides),
            train_dataset=dataset,
            eval_dataset=eval_dataset,
            peft_config=peft_config,
        )


def train_dgpo(student_path, dataset, tmp_path, eval_dataset=None, **overrides):
    trainer = build_dgpo(student_path, dataset, tmp_path, eval_dataset, **overrides)
    before = snapshot(trainer.model)
    trainer.train()
    return trainer, changed(before, trainer.model)


# ------------------------------------------------------------------------------------------------------------------
# End-to-end training
# ------------------------------------------------------------------------------------------------------------------


def test_off_policy_training_changes_parameters_and_logs_dgpo_metrics(student_path, toy_dataset, tmp_path):
    # steps_per_generation = 4 x GA: one generation batch feeds 4 optimizer steps, so the ratio departs from 1.
    trainer, changed_params = train_dgpo(student_path, toy_dataset, tmp_path, max_steps=8)
    assert len(changed_params) == len(snapshot(trainer.model))
    for key in DGPO_METRICS:
        assert len(logged(trainer, key)) == 8, key
    region = logged(trainer, "clip_ratio/region_mean")
    assert region[0] == 0.0  # the first step of a generation batch is on-policy
    assert max(region) > 0.0  # later steps see boundary tokens
    for low, high, both in zip(
        logged(trainer, "clip_ratio/low_mean"), logged(trainer, "clip_ratio/high_mean"), region
    ):
        assert both == pytest.approx(low + high)  # LN and HP are disjoint
    weights = logged(trainer, "dgpo/low_weight_mean") + logged(trainer, "dgpo/high_weight_mean")
    assert weights and all(0.0 < w <= 1.0 for w in weights)


def test_on_policy_configuration_warns_and_trains_exactly_like_grpo(student_path, toy_dataset, tmp_path):
    common = {"steps_per_generation": None, "max_steps": 2}
    with pytest.warns(UserWarning, match="DGPO trains exactly like GRPO.*steps_per_generation"):
        dgpo = DGPOTrainer(
            model=student_path,
            reward_funcs=digit_fraction_reward,
            args=tiny_dgpo_args(tmp_path / "dgpo", **common),
            train_dataset=toy_dataset,
        )
    dgpo.train()  # each trainer seeds at construction: build and train one after the other for equal samples
    grpo = GRPOTrainer(
        model=student_path,
        reward_funcs=digit_fraction_reward,
        args=tiny_dgpo_args(tmp_path / "grpo", config_class=GRPOConfig, **common),
        train_dataset=toy_dataset,
    )
    grpo.train()
    assert logged(dgpo, "reward") == logged(grpo, "reward")
    for (name, p), q in zip(dgpo.model.named_parameters(), grpo.model.parameters()):
        torch.testing.assert_close(p, q, msg=name)
    torch.testing.assert_close(logged(dgpo, "loss"), logged(grpo, "loss"))


def test_off_policy_configuration_does_not_warn(student_path, toy_dataset, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        DGPOTrainer(
            model=student_path,
            reward_funcs=digit_fraction_reward,
            args=tiny_dgpo_args(tmp_path, num_iterations=2),
            train_dataset=toy_dataset,
        )


@pytest.mark.parametrize("init_kwargs", [None, {"dtype": "float32"}])
def test_a_config_is_not_changed_by_a_trainer_and_can_build_another(student_path, toy_dataset, tmp_path, init_kwargs):
    args = tiny_args(tmp_path, DGPOConfig, model_init_kwargs=init_kwargs)
    before = args.to_dict()
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            DGPOTrainer(model=student_path, reward_funcs=digit_fraction_reward, args=args, train_dataset=toy_dataset)
        assert args.model_init_kwargs is init_kwargs and args.to_dict() == before


def test_requires_a_dgpo_config_and_the_conversion_it_suggests_works(student_path, toy_dataset, tmp_path):
    args = tiny_dgpo_args(tmp_path, config_class=GRPOConfig, learning_rate=1e-3, num_iterations=2, beta=0.01)
    with pytest.raises(
        TypeError, match=r"DGPOTrainer needs a DGPOConfig.*DGPOConfig\.from_grpo_config\(your_config\)"
    ):
        DGPOTrainer(model=student_path, reward_funcs=digit_fraction_reward, args=args, train_dataset=toy_dataset)
    converted = DGPOConfig.from_grpo_config(args, dgpo_n=2.0)
    assert isinstance(converted, DGPOConfig) and converted.dgpo_n == 2.0
    for name in (
        "output_dir",
        "learning_rate",
        "num_iterations",
        "beta",
        "steps_per_generation",
        "max_steps",
        "generation_batch_size",
        "hub_token",
        "report_to",
    ):
        assert getattr(converted, name) == getattr(args, name), name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DGPOTrainer(student_path, digit_fraction_reward, args=converted, train_dataset=toy_dataset)
    trainer.train()
    assert trainer.state.global_step == args.max_steps


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"gradient_accumulation_steps": 2, "steps_per_generation": 8, "max_steps": 4}, id="grad-accum"),
        pytest.param({"num_iterations": 2, "steps_per_generation": None, "max_steps": 4}, id="num-iterations"),
        pytest.param({"importance_sampling_level": "sequence"}, id="sequence-level"),
        pytest.param({"top_entropy_quantile": 0.5}, id="top-entropy-quantile"),
        pytest.param({"off_policy_mask_threshold": 0.0}, id="off-policy-mask"),
        pytest.param({"loss_type": "grpo"}, id="loss-type-grpo"),
        pytest.param({"loss_type": "dr_grpo"}, id="loss-type-dr-grpo"),
        pytest.param({"loss_type": "bnpo", "dgpo_n": 2.0, "dgpo_m": 1.0}, id="bnpo-n2-m1"),
    ],
)
def test_grpo_features_keep_working(student_path, toy_dataset, tmp_path, overrides):
    trainer, changed_params = train_dgpo(student_path, toy_dataset, tmp_path, **overrides)
    assert changed_params
    assert trainer.state.global_step == overrides.get("max_steps", 4)
    for key in DGPO_METRICS:
        assert logged(trainer, key), key
    if overrides.get("importance_sampling_level") != "sequence":  # sequence means rarely leave [0.8, 1.2] this fast
        assert max(logged(trainer, "clip_ratio/region_mean")) > 0.0


def test_reference_model_kl(student_path, toy_dataset, tmp_path):
    trainer, changed_params = train_dgpo(student_path, toy_dataset, tmp_path, beta=0.1)
    assert trainer.ref_model is not None and changed_params
    kl = logged(trainer, "kl")
    assert len(kl) == 4 and kl[0] == pytest.approx(0.0, abs=1e-6) and max(kl) > 0.0


def test_entropy_bonus_static_and_adaptive(student_path, toy_dataset, tmp_path):
    trainer, _ = train_dgpo(student_path, toy_dataset, tmp_path / "static", entropy_coef=0.5, max_steps=2)
    losses, policy_losses, entropies = (logged(trainer, k) for k in ("loss", "policy_loss", "entropy"))
    for loss, policy_loss, entropy in zip(losses, policy_losses, entropies):
        assert loss == pytest.approx(policy_loss - 0.5 * entropy, rel=1e-4, abs=1e-5)
    trainer, _ = train_dgpo(
        student_path,
        toy_dataset,
        tmp_path / "adaptive",
        use_adaptive_entropy=True,
        entropy_coef=0.0,
        entropy_target=100.0,
        entropy_coef_delta=0.01,
        max_steps=3,
    )
    assert logged(trainer, "entropy_coef") == pytest.approx([0.01, 0.02, 0.03])


def test_lora_trains_only_the_adapter(student_path, toy_dataset, tmp_path):
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = build_dgpo(student_path, toy_dataset, tmp_path, peft_config=peft_config)
    before = snapshot(trainer.model)
    trainer.train()
    changed_params = changed(before, trainer.model)
    assert changed_params and all("lora_" in name for name in changed_params)
    assert any("lora_B" in name for name in changed_params)
    assert logged(trainer, "clip_ratio/region_mean")


def test_model_card_cites_dgpo_and_trl(student_path, toy_dataset, tmp_path):
    trainer = build_dgpo(student_path, toy_dataset, tmp_path)
    trainer.create_model_card(model_name="tiny-dgpo", dataset_name="toy-arithmetic")
    card = (tmp_path / "README.md").read_text()
    for needle in (
        "DGPO",
        "2603.14389",
        "fu2026dgpo",
        "Bilateral Decoupled Decay",
        "TRL",
        "vonwerra2020trl",
        "toy-arithmetic",
    ):
        assert needle in card, needle
    # Tagged so that it is not confused with the two other methods called DGPO (docs/dgpo.md).
    tags = card.split("tags:", 1)[1].split("---", 1)[0]
    assert "- dgpo-softclip" in tags and "- arxiv:2603.14389" in tags and "- dgpo\n" not in tags


def test_checkpoint_resume_continues(student_path, toy_dataset, tmp_path):
    first, _ = train_dgpo(student_path, toy_dataset, tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    checkpoint = tmp_path / "checkpoint-2"
    assert (checkpoint / "model.safetensors").exists() and (checkpoint / "trainer_state.json").exists()
    assert "DGPO" in (tmp_path / "README.md").read_text()  # the card is written next to the checkpoints
    resumed = build_dgpo(student_path, toy_dataset, tmp_path, max_steps=4)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    steps = [entry["step"] for entry in resumed.state.log_history if "loss" in entry]
    assert steps == [1, 2, 3, 4]
    saved = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert not torch.equal(saved.lm_head.weight, resumed.model.lm_head.weight.detach())  # training went on


# ------------------------------------------------------------------------------------------------------------------
# The loss on hand-made batches
# ------------------------------------------------------------------------------------------------------------------


def test_boundary_tokens_get_a_gradient_where_grpo_gets_none(student_path, toy_dataset, tmp_path):
    # Rows: A = -1 at r = 0.5 (LN), A = +1 at r = 2 (HP), A = +1 at r = 0.5 (reverse left), A = -1 inside.
    advantages = torch.tensor([-1.0, 1.0, 1.0, -1.0])
    ratios = torch.tensor([0.5, 2.0, 0.5, 1.1])
    offsets = ratios.log().unsqueeze(1).expand(4, 6).clone()
    dgpo = make_dgpo_trainer(student_path, toy_dataset, tmp_path / "dgpo")
    grpo = make_dgpo_trainer(student_path, toy_dataset, tmp_path / "grpo", config_class=GRPOConfig)
    inputs = hand_batch(dgpo, student_path, advantages, offsets)
    _, grad_dgpo = per_token_logps_grad(dgpo, inputs)
    _, grad_grpo = per_token_logps_grad(grpo, inputs)
    mask = inputs["completion_mask"].float()
    # 'dapo' on one process: a micro-batch is 1 / steps_per_generation of the generation batch's N tokens.
    normalizer = mask.sum() * dgpo.current_gradient_accumulation_steps / dgpo.args.steps_per_generation
    # GRPO: boundary rows (0 and 1) get exactly zero gradient; the others get -A·r / N.
    assert (grad_grpo[:2] == 0).all()
    # DGPO: every loss token gets -A·w(r) / N with the oracle's w.
    w = torch.tensor([0.5**2 / 0.8, math.sqrt(1.2 * 2.0), 0.5, 1.1]).unsqueeze(1)
    expected = -advantages.unsqueeze(1) * w / normalizer * mask
    torch.testing.assert_close(grad_dgpo, expected, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(grad_grpo[2:], expected[2:], rtol=1e-4, atol=1e-7)
    metrics = dgpo._metrics["train"]
    n_loss_tokens = mask.sum().item()
    assert metrics["clip_ratio/low_mean"][-1] == pytest.approx(mask[0].sum().item() / n_loss_tokens)
    assert metrics["clip_ratio/high_mean"][-1] == pytest.approx(mask[1].sum().item() / n_loss_tokens)
    assert metrics["dgpo/low_weight_mean"][-1] == pytest.approx(0.5 / 0.8, rel=1e-4)
    assert metrics["dgpo/high_weight_mean"][-1] == pytest.approx(math.sqrt(1.2 / 2.0), rel=1e-4)


def test_vllm_importance_sampling_ratio_multiplies_the_per_token_loss(student_path, toy_dataset, tmp_path):
    trainer = make_dgpo_trainer(student_path, toy_dataset, tmp_path)
    advantages = torch.tensor([-1.0, 1.0, 0.5, -0.5])
    offsets = torch.linspace(-0.8, 0.8, 24).reshape(4, 6)
    inputs = hand_batch(trainer, student_path, advantages, offsets)
    loss_plain, grad_plain = per_token_logps_grad(trainer, inputs)
    is_ratio = torch.linspace(0.2, 1.5, 24).reshape(4, 6)
    trainer.use_vllm, trainer.vllm_importance_sampling_correction = True, True
    loss_is, grad_is = per_token_logps_grad(
        trainer,
        {**inputs, "importance_sampling_ratio": is_ratio, "sampling_per_token_logps": inputs["old_per_token_logps"]},
    )
    torch.testing.assert_close(grad_is, grad_plain * is_ratio)
    assert not torch.isclose(loss_is, loss_plain)
    trainer.vllm_importance_sampling_correction = False  # correction off: the ratio is ignored, as in the paper
    loss_off, grad_off = per_token_logps_grad(trainer, {**inputs, "importance_sampling_ratio": is_ratio})
    torch.testing.assert_close(grad_off, grad_plain)


def test_gradient_accumulation_gives_the_same_step(student_path, toy_dataset, tmp_path):
    """One micro-batch of 8 rows with GA = 1, or two of 4 rows with GA = 2: the same accumulated gradient."""
    trainer = make_dgpo_trainer(student_path, toy_dataset, tmp_path)
    torch.manual_seed(0)
    advantages = torch.randn(8)
    offsets = torch.randn(8, 6) * 0.4
    inputs = hand_batch(trainer, student_path, advantages, offsets)

    def grads(micro_batches):
        trainer.current_gradient_accumulation_steps = micro_batches
        trainer.args.steps_per_generation = micro_batches
        trainer.model.zero_grad()
        for rows in torch.arange(8).chunk(micro_batches):
            part = {k: (v[rows] if v.dim() > 0 else v) for k, v in inputs.items()}
            trainer._compute_loss(trainer.model, part).backward()
        return {n: p.grad.clone() for n, p in trainer.model.named_parameters()}

    one, two = grads(1), grads(2)
    for name in one:
        torch.testing.assert_close(one[name], two[name], rtol=1e-4, atol=1e-7, msg=name)


def test_sequence_level_soft_clips_the_geometric_mean_ratio(student_path, toy_dataset, tmp_path):
    token = make_dgpo_trainer(student_path, toy_dataset, tmp_path / "token")
    sequence = make_dgpo_trainer(student_path, toy_dataset, tmp_path / "seq", importance_sampling_level="sequence")
    advantages = torch.tensor([-1.0, 1.0, 1.0, -1.0])
    # Uniform log-ratio within each sequence: the sequence ratio equals every token ratio.
    offsets = torch.tensor([0.5, 2.0, 0.9, 1.1]).log().unsqueeze(1).expand(4, 6).clone()
    inputs = hand_batch(token, student_path, advantages, offsets)
    loss_token, _ = per_token_logps_grad(token, inputs)
    loss_sequence, grad_sequence = per_token_logps_grad(sequence, inputs)
    torch.testing.assert_close(loss_sequence, loss_token)
    # Non-uniform: S(mean log r) is decided per sequence and its gradient spreads evenly over the tokens; under
    # 'dapo' a sequence's loss counts once per token, so each token's gradient is -A·S / N.
    offsets = torch.randn(4, 6) * 0.5
    inputs = hand_batch(token, student_path, advantages, offsets)
    _, grad_sequence = per_token_logps_grad(sequence, inputs)
    mask = inputs["completion_mask"].float()
    mean_log_ratio = (offsets * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)
    surrogate = dgpo_surrogate(mean_log_ratio, advantages.unsqueeze(1))
    normalizer = mask.sum() * sequence.current_gradient_accumulation_steps / sequence.args.steps_per_generation
    expected = -advantages.unsqueeze(1) * surrogate * mask / normalizer
    torch.testing.assert_close(grad_sequence, expected, rtol=1e-4, atol=1e-7)


def test_evaluation_logs_eval_metrics(student_path, toy_dataset, tmp_path):
    trainer, _ = train_dgpo(
        student_path,
        toy_dataset,
        tmp_path,
        max_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        per_device_eval_batch_size=4,
        eval_dataset=toy_dataset.select(range(4)),
    )
    assert logged(trainer, "eval_clip_ratio/region_mean") == [0.0]  # evaluation is on-policy
    metrics = trainer.evaluate()
    for key in ("eval_loss", "eval_policy_loss", "eval_clip_ratio/region_mean", "eval_entropy"):
        assert key in metrics, key
    assert metrics["eval_clip_ratio/region_mean"] == 0.0  # evaluation is on-policy


def test_mixture_of_experts_aux_loss(toy_paths, toy_dataset, tmp_path):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(toy_paths["tokenizer"])
    config = Qwen3MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        moe_intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=4,
        num_experts=4,
        num_experts_per_tok=2,
        decoder_sparse_step=1,
        router_aux_loss_coef=0.01,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    Qwen3MoeForCausalLM(config).save_pretrained(tmp_path / "moe")
    tokenizer.save_pretrained(tmp_path / "moe")
    trainer, changed_params = train_dgpo(str(tmp_path / "moe"), toy_dataset, tmp_path / "run", max_steps=2)
    assert trainer.aux_loss_enabled and changed_params
    aux = logged(trainer, "aux_loss")
    assert len(aux) == 2 and all(a > 0 for a in aux)
