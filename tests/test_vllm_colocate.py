"""Generation with colocated vLLM (`use_vllm=True, vllm_mode="colocate"`), against vLLM itself (its CPU build here).

- GRPO (the control), DGPO and SCOPE train with vLLM generating every rollout, SCOPE on both of its π_old paths and
  with a LoRA student;
- the weights really reach vLLM: after several optimizer steps at a large learning rate, vLLM's log-probs of the
  tokens it sampled equal the trainer's to float32 precision, and the same check fails when the sync is switched off or
  when vLLM's CPU LM head keeps its packed copy (`tests/vllm_cpu.py` says why the CPU build needs patching at all);
- TRL's vLLM importance-sampling correction multiplies DGPO's and SCOPE's per-token loss exactly as GRPO's (on a
  hand-made batch, no engine needed).

Every engine start costs ~10-30 s on CPU, so each trainer runs 3-4 short steps and the checks share its run.
"""

import gc
import math
import warnings

import pytest
import torch
from peft import LoraConfig
from trl import GRPOConfig, GRPOTrainer

from scope_trl import DGPOConfig, DGPOTrainer, SCOPEConfig, SCOPETrainer
from scope_trl.apps.toy import contains_digit_reward, digit_fraction_reward
from scope_trl.routing import EXCLUDED, MLE, OPD

from .helpers import changed, hand_batch, logged, make_trainer, per_token_logps_grad, snapshot, tiny_args
from .vllm_cpu import colocated_vllm_on_cpu


# float32 agreement between vLLM's and the trainer's log-probs of a sampled token (observed: ~1e-6). A stale engine
# is off by 0.1-10 nats after one optimizer step at the learning rate used here (5e-2).
SYNC_TOLERANCE = 1e-4
ENGINES = []  # the engines built by the running test, shut down after it (each holds a 1 GiB KV cache)


@pytest.fixture(autouse=True)
def shut_down_engines():
    yield
    while ENGINES:
        generation = ENGINES.pop()
        generation.llm.llm_engine.engine_core.shutdown()
        del generation.llm
    gc.collect()


def colocated(trainer_class, config_class, paths, dataset, tmp_path, reward=digit_fraction_reward, **kwargs):
    """A trainer generating with colocated vLLM (3 steps, one generation batch each, unless overridden), whose
    engine's `generate` and `sync_weights` calls are counted in `trainer.vllm_calls`."""
    lm_head_unpacked = kwargs.pop("lm_head_unpacked", True)
    trainer_kwargs = kwargs.pop("trainer_kwargs", {})
    overrides = {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_max_model_length": 512,
        "max_steps": 3,
        "steps_per_generation": 1,
        **kwargs,
    }
    with colocated_vllm_on_cpu(lm_head_unpacked=lm_head_unpacked), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = trainer_class(
            model=paths["student"],
            reward_funcs=reward,
            args=tiny_args(tmp_path, config_class, **overrides),
            train_dataset=dataset,
            **trainer_kwargs,
        )
    engine = trainer.vllm_generation
    ENGINES.append(engine)
    trainer.vllm_calls = {"generate": 0, "sync_weights": 0}
    for name in trainer.vllm_calls:
        original = getattr(engine, name)

        def counted(*args, _name=name, _original=original, **kw):
            trainer.vllm_calls[_name] += 1
            return _original(*args, **kw)

        setattr(engine, name, counted)
    return trainer


def train(trainer):
    """Train; return the names of the parameters that changed."""
    before = snapshot(trainer.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    return changed(before, trainer.model)


def assert_trained_with_vllm(trainer, changed_names, generation_batches):
    from vllm import LLM

    assert isinstance(trainer.vllm_generation.llm, LLM)
    assert trainer.vllm_calls["generate"] == generation_batches  # every rollout came from the engine
    assert changed_names
    losses = logged(trainer, "loss")
    assert len(losses) == trainer.args.max_steps and all(math.isfinite(loss) for loss in losses)


def sampler_differences(trainer):
    """Per generation batch, the largest |log π_vLLM − log π_trainer| over its sampled tokens, as TRL logs it when
    `vllm_importance_sampling_correction=True` (vLLM's log-prob against the trainer's at generation time)."""
    return logged(trainer, "sampling/sampling_logp_difference/max")


def check_vllm_follows_trainer(differences, generation_batches):
    """Raise `AssertionError` unless vLLM sampled every generation batch with the trainer's weights of that moment:
    `differences` (one per generation batch, see `sampler_differences`) all within float32 tolerance. At least two
    batches, so that one was sampled after an optimizer step (the first is sampled before any)."""
    assert generation_batches >= 2 and len(differences) == generation_batches, differences
    worst = max(differences)
    assert worst <= SYNC_TOLERANCE, (
        f"vLLM's log-probs of its own samples differ from the trainer's by up to {worst:.3g} nats "
        f"(per generation batch: {[f'{d:.3g}' for d in differences]}): vLLM samples with stale weights."
    )


# ------------------------------------------------------------------------------------------------------------------
# GRPO, the control: training, and the weight sync proven (synced / not synced / stale LM head)
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.vllm
def test_grpo_colocate_trains_and_vllm_samples_with_the_trained_weights(vllm_toy_paths, toy_dataset, tmp_path):
    """TRL's own GRPOTrainer, the control: 3 steps at learning rate 5e-2, one generation batch each, the weights pushed
    to vLLM before each; vLLM's log-probs of its samples equal the trainer's at every batch."""
    trainer = colocated(GRPOTrainer, GRPOConfig, vllm_toy_paths, toy_dataset, tmp_path)
    changed_names = train(trainer)
    assert_trained_with_vllm(trainer, changed_names, generation_batches=3)
    assert len(changed_names) == len(snapshot(trainer.model))
    assert trainer.vllm_calls["sync_weights"] == 3  # before each generation batch: the weights of steps 0, 1, 2
    check_vllm_follows_trainer(sampler_differences(trainer), generation_batches=3)
    assert max(logged(trainer, "sampling/sampling_logp_difference/mean")) <= SYNC_TOLERANCE


@pytest.mark.vllm
@pytest.mark.parametrize("broken", ["no_sync", "packed_lm_head"])
def test_the_sync_check_fails_when_vllm_samples_with_stale_weights(vllm_toy_paths, toy_dataset, tmp_path, broken):
    """The same run as above, with the sync switched off (`no_sync`), or with vLLM's CPU LM head left packed
    (`packed_lm_head`: every other layer is synced, nothing fails, and the head still samples from the initial
    weights, see tests/vllm_cpu.py): the first batch agrees (nothing trained yet), the later ones do not."""
    trainer = colocated(
        GRPOTrainer, GRPOConfig, vllm_toy_paths, toy_dataset, tmp_path, lm_head_unpacked=broken != "packed_lm_head"
    )
    if broken == "no_sync":
        trainer.vllm_generation.sync_weights = lambda: None
    changed_names = train(trainer)
    assert_trained_with_vllm(trainer, changed_names, generation_batches=3)
    differences = sampler_differences(trainer)
    with pytest.raises(AssertionError, match="stale weights"):
        check_vllm_follows_trainer(differences, generation_batches=3)
    assert differences[0] <= SYNC_TOLERANCE  # before the first optimizer step, engine and trainer agree
    assert min(logged(trainer, "sampling/sampling_logp_difference/mean")[1:]) > 0.05  # then they part, far


# ------------------------------------------------------------------------------------------------------------------
# DGPO and SCOPE
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.vllm
def test_dgpo_colocate_with_several_steps_per_generation(vllm_toy_paths, toy_dataset, tmp_path):
    """2 optimizer steps per generation batch (DGPO's soft clip acts off-policy), 4 steps: 2 generation batches, the
    second sampled with weights 2 steps ahead of the first."""
    trainer = colocated(
        DGPOTrainer, DGPOConfig, vllm_toy_paths, toy_dataset, tmp_path, steps_per_generation=2, max_steps=4
    )
    changed_names = train(trainer)
    assert_trained_with_vllm(trainer, changed_names, generation_batches=2)
    assert trainer.vllm_calls["sync_weights"] == 2
    check_vllm_follows_trainer(sampler_differences(trainer), generation_batches=2)
    assert logged(trainer, "clip_ratio/region_mean") and logged(trainer, "policy_loss")


@pytest.mark.vllm
def test_scope_colocate_with_pi_old_from_the_loss_forward(vllm_toy_paths, toy_dataset, tmp_path):
    """One on-policy micro-batch per generation batch and no vLLM importance sampling (the official SCOPE setting):
    TRL computes no old log-probs, so SCOPE weighs each batch in its loss forward, with no extra student forward. The
    loss forward's log-probs are then π_θ at sampling time: they must equal vLLM's log-probs of the same tokens."""
    trainer = colocated(
        SCOPETrainer,
        SCOPEConfig,
        vllm_toy_paths,
        toy_dataset,
        tmp_path,
        reward=contains_digit_reward,
        vllm_importance_sampling_correction=False,
        trainer_kwargs={"teacher_model": vllm_toy_paths["teacher"]},
    )
    weighted_in_loss_forward, no_grad_student_forwards, differences = [], [], []
    policy_batch, weight = trainer._policy_batch, trainer._weight_in_loss_forward
    logps_and_entropies = trainer._get_per_token_logps_and_entropies

    def record_policy_batch(model, inputs):
        assert "old_per_token_logps" not in inputs  # TRL computed none
        batch = policy_batch(model, inputs)
        mask = inputs["completion_mask"].bool()
        gap = (batch.per_token_logps.detach() - inputs["sampling_per_token_logps"]).abs()[mask]
        differences.append(gap.max().item())
        return batch

    def record_weight(batch, inputs):
        weighted_in_loss_forward.append("scope_scored/position" in inputs)  # the scored rows travelled with the batch
        return weight(batch, inputs)

    def record_forward(model, *args, **kwargs):
        if model is not trainer.teacher_model and not torch.is_grad_enabled():
            no_grad_student_forwards.append(model)
        return logps_and_entropies(model, *args, **kwargs)

    trainer._policy_batch = record_policy_batch
    trainer._weight_in_loss_forward = record_weight
    trainer._get_per_token_logps_and_entropies = record_forward
    changed_names = train(trainer)
    assert_trained_with_vllm(trainer, changed_names, generation_batches=3)
    assert weighted_in_loss_forward == [True] * 3
    assert no_grad_student_forwards == []
    check_vllm_follows_trainer(differences, generation_batches=3)
    assert not logged(trainer, "sampling/importance_sampling_ratio/mean")  # the correction is off
    assert logged(trainer, "scope/mle_loss") and logged(trainer, "scope/opd_loss")


@pytest.mark.vllm
def test_scope_colocate_lora_with_several_steps_per_generation(vllm_toy_paths, toy_dataset, tmp_path):
    """2 optimizer steps per generation batch: π_old is TRL's old log-probs (computed anyway, since vLLM's importance
    sampling is on by default). The student is LoRA: TRL merges the adapter into the weights it pushes to vLLM."""
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = colocated(
        SCOPETrainer,
        SCOPEConfig,
        vllm_toy_paths,
        toy_dataset,
        tmp_path,
        reward=contains_digit_reward,
        steps_per_generation=2,
        max_steps=4,
        trainer_kwargs={"teacher_model": vllm_toy_paths["teacher"], "peft_config": peft_config},
    )
    trainer._weight_in_loss_forward = lambda *args: pytest.fail("π_old taken from the loss forward")
    before = snapshot(trainer.model)
    changed_names = train(trainer)
    assert_trained_with_vllm(trainer, changed_names, generation_batches=2)
    assert {name for name in before if "lora_" in name} <= changed_names
    # The frozen weights under the adapters move by float32 rounding only: each sync merges the adapter into them
    # (W + BA) for vLLM and unmerges it again (- BA), which is not exact (TRL's sync, seen here as ~1 ulp).
    for name in changed_names - {name for name in before if "lora_" in name}:
        assert name.endswith("base_layer.weight"), name
        drift = (trainer.model.get_parameter(name) - before[name]).abs().max().item()
        assert drift <= 1e-6, (name, drift)
    check_vllm_follows_trainer(sampler_differences(trainer), generation_batches=2)
    assert logged(trainer, "scope/mle_loss") and logged(trainer, "scope/opd_loss")


# ------------------------------------------------------------------------------------------------------------------
# TRL's vLLM importance-sampling correction: the same weighting in GRPO, DGPO and SCOPE (no engine needed)
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["token_truncate", "sequence_mask"])
def test_vllm_importance_sampling_weighs_dgpo_and_scope_as_grpo(
    student_path, teacher_path, toy_dataset, tmp_path, mode
):
    """TRL's ratio π_old / π_vLLM (one per token, or one per sequence, 0 for a masked one: TRL's default
    `sequence_mask`) multiplies each trainer's per-token policy loss, both SCOPE paths included, and not the KL term:
    d loss / d log π_θ = ratio · (policy gradient) + (KL gradient), for GRPO, DGPO and SCOPE alike. TRL applies it in
    the loss whenever `use_vllm` and the correction are on; here the trainers are built without an engine and then
    told they have one."""
    rows, length = 6, 5
    if mode == "token_truncate":
        ratio = torch.linspace(0.2, 2.5, rows * length).reshape(rows, length)
    else:
        ratio = torch.tensor([[0.5], [0.0], [1.7], [1.0], [2.2], [0.8]])
    common = {"vllm_importance_sampling_mode": mode}
    grpo = make_trainer(
        GRPOTrainer, GRPOConfig, student_path, toy_dataset, tmp_path / "g", digit_fraction_reward, **common
    )
    dgpo = make_trainer(
        DGPOTrainer, DGPOConfig, student_path, toy_dataset, tmp_path / "d", digit_fraction_reward, **common
    )
    scope = make_trainer(
        SCOPETrainer,
        SCOPEConfig,
        student_path,
        toy_dataset,
        tmp_path / "s",
        contains_digit_reward,
        trainer_kwargs={"teacher_model": teacher_path},
        **common,
    )
    # Inside the trust region (|log r| <= 0.1 < ε = 0.2), where DGPO's surrogate is GRPO's.
    generator = torch.Generator().manual_seed(0)
    offsets = (torch.rand(rows, length, generator=generator) - 0.5) * 0.2
    base = hand_batch(grpo, student_path, torch.tensor([1.0, -0.5, 0.7, -1.2, 0.3, 2.0]), offsets)
    # A reference policy ~0.5 nats away per token: with beta = 0.5 the KL gradient is as large as the policy's.
    base["ref_per_token_logps"] = base["old_per_token_logps"] + 0.5 * torch.randn(rows, length, generator=generator)
    mask = base["completion_mask"].float()
    path = torch.tensor([MLE, OPD, OPD, EXCLUDED, MLE, OPD])
    tokens = mask.sum(1)
    n_correct, n_incorrect = tokens[path == MLE].sum(), tokens[path == OPD].sum()
    scope_advantages = torch.randn(rows, length, generator=generator)
    scope_advantages[path == MLE] = torch.tensor([[0.7], [1.3]]).expand(-1, length)  # w^stu on the MLE path
    scope_advantages[path == EXCLUDED] = 0.0
    scope_inputs = {
        **base,
        "advantages": scope_advantages,
        "scope_route": path,
        "scope_num_tokens_mle": n_correct,
        "scope_num_tokens_opd": n_incorrect,
        "num_items_in_batch": n_correct + n_incorrect,
    }

    def gradient(trainer, inputs, corrected, beta):
        trainer.use_vllm, trainer.vllm_importance_sampling_correction, trainer.beta = corrected, corrected, beta
        extra = {"importance_sampling_ratio": ratio} if corrected else {}
        return per_token_logps_grad(trainer, {**inputs, **extra})[1]

    gradients, policies = {}, {}
    for name, trainer, inputs in (("grpo", grpo, base), ("dgpo", dgpo, base), ("scope", scope, scope_inputs)):
        policy = gradient(trainer, inputs, corrected=False, beta=0.0)
        kl = gradient(trainer, inputs, corrected=False, beta=0.5) - policy
        corrected = gradient(trainer, inputs, corrected=True, beta=0.5)
        torch.testing.assert_close(
            corrected, ratio * policy + kl, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}"
        )
        assert (policy * mask != 0).sum() == (policy != 0).sum() > 0 and (kl * mask != 0).any(), name
        # A ratio present in the batch is ignored when the correction is off, as in GRPO.
        trainer.use_vllm, trainer.vllm_importance_sampling_correction = True, False
        ignored = per_token_logps_grad(trainer, {**inputs, "importance_sampling_ratio": ratio})[1]
        torch.testing.assert_close(ignored, policy + kl, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
        gradients[name], policies[name] = corrected, policy
    torch.testing.assert_close(gradients["dgpo"], gradients["grpo"], rtol=1e-5, atol=1e-6)
    # SCOPE: the identity above covers both paths, each with a policy gradient to weigh; the excluded rollout has none.
    for route in (MLE, OPD):
        assert (policies["scope"][path == route] != 0).any(), route
    assert (gradients["scope"][path == EXCLUDED] == 0).all()
