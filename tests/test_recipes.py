"""The training recipes (`examples/configs/*.yaml`) and the packaged accelerate configs, offline and without a GPU.

- Every recipe parses through its training script's parser (`make_parser().parse_args_and_config(["--config", ...])`,
  unknown keys rejected) into valid configs. TrainingArguments refuses `bf16: true` on a machine without a GPU, so the
  command line overrides it with `--bf16 false --use_cpu true` (TrlParser lets flags override the YAML); nothing else
  is overridden. The key values are checked against the papers' settings (docs/scope.md and docs/dgpo.md,
  "Reproduce the paper", give each value's source).
- Each recipe's header names its accelerate config and both launch commands, and its batch layout on that config's
  number of processes gives the intended generation batch (256 prompts x 8 completions).
- Every packaged accelerate config loads with accelerate's own loader; the GPU profiles match TRL's where they say so.
- `scope_trl.cli.accelerate_config_path` resolves every packaged name.
"""

import re
from pathlib import Path

import pytest
import trl
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

from scope_trl.cli import ACCELERATE_CONFIG_DIR, accelerate_config_path
from scope_trl.data import BOXED_INSTRUCTION


REPO_ROOT = Path(__file__).resolve().parent.parent
RECIPE_DIR = REPO_ROOT / "examples" / "configs"
RECIPES = sorted(RECIPE_DIR.glob("*.yaml"))
TRL_CONFIG_DIR = Path(trl.__file__).parent / "accelerate_configs"

DEEPMATH = "zwhe99/DeepMath-103K"
R1_1_5B = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"

# name -> (distributed_type, num_processes, num_machines, mixed_precision, ZeRO stage or None, use_cpu)
ACCELERATE_CONFIGS = {
    "cpu": ("NO", 1, 1, "no", None, True),
    "cpu_multi": ("MULTI_GPU", 2, 1, "no", None, True),
    "zero2_cpu": ("DEEPSPEED", 2, 1, "no", 2, True),
    "zero3_cpu": ("DEEPSPEED", 2, 1, "no", 3, True),
    "single_gpu": ("NO", 1, 1, "bf16", None, False),
    "multi_gpu": ("MULTI_GPU", 8, 1, "bf16", None, False),
    "zero2": ("DEEPSPEED", 8, 1, "bf16", 2, False),
    "zero3": ("DEEPSPEED", 8, 1, "bf16", 3, False),
    "fsdp2": ("FSDP", 8, 1, "bf16", None, False),
    "multi_node": ("DEEPSPEED", 16, 2, "bf16", 3, False),
}
GPU_CONFIGS = ["single_gpu", "multi_gpu", "zero2", "zero3", "fsdp2", "multi_node"]

# Values each recipe must carry (the papers' settings, or this project's choice where the paper is silent).
EXPECTED = {
    "scope_r1_distill_qwen_1.5b_deepmath.yaml": {
        "accelerate_config": "zero3",
        "model_name_or_path": R1_1_5B,
        "teacher_model_name_or_path": "Skywork/Skywork-OR1-7B",
    },
    "scope_qwen3_1.7b_deepmath.yaml": {
        "accelerate_config": "zero3",
        "model_name_or_path": "Qwen/Qwen3-1.7B-Base",
        "teacher_model_name_or_path": "Qwen/Qwen3-8B",
    },
    "dgpo_r1_distill_qwen_1.5b.yaml": {"accelerate_config": "zero2", "model_name_or_path": R1_1_5B, "dgpo_n": 2.0},
    "dgpo_r1_distill_qwen_7b.yaml": {
        "accelerate_config": "zero3",
        "model_name_or_path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "dgpo_n": 1.0,
    },
}


def method_of(recipe: Path) -> str:
    method = recipe.name.split("_", 1)[0]
    assert method in ("scope", "dgpo"), f"{recipe.name}: a recipe's name starts with the method, scope_ or dgpo_."
    return method


def header_text(recipe: Path) -> str:
    """The leading comment block, with `#`, line continuations and runs of whitespace collapsed."""
    lines = []
    for line in recipe.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return re.sub(r"\s+", " ", " ".join(lines).replace("\\ ", " "))


def parse_recipe(recipe: Path, monkeypatch):
    """(script_args, training_args, model_args) of a recipe, through its training script's own parser."""
    if method_of(recipe) == "scope":
        from scope_trl.scripts.scope import make_parser
    else:
        from scope_trl.scripts.dgpo import make_parser
    # The parser exports the recipe's `env:` block to os.environ; register the keys so that the test restores them.
    for key in (yaml.safe_load(recipe.read_text()) or {}).get("env", {}):
        monkeypatch.setenv(key, "")
    return make_parser().parse_args_and_config(args=["--config", str(recipe), "--bf16", "false", "--use_cpu", "true"])


def recipe_accelerate_config(recipe: Path) -> str:
    match = re.search(r"--accelerate_config (\S+)", header_text(recipe))
    assert match, f"{recipe.name}: the header must give the `scope-trl ... --accelerate_config NAME` command."
    return match.group(1)


# ---------------------------------------------------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------------------------------------------------


def test_the_recipes_exist():
    assert {p.name for p in RECIPES} >= set(EXPECTED)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_into_valid_configs(recipe, monkeypatch):
    script_args, training_args, model_args = parse_recipe(recipe, monkeypatch)
    from scope_trl.scripts.common import reward_funcs_from_names

    assert model_args.model_name_or_path
    assert model_args.dtype == "bfloat16"
    assert script_args.dataset_name
    assert all(callable(func) for func in reward_funcs_from_names(script_args.reward_funcs))
    # What the recipes promise on a GPU machine (bf16 itself is overridden here, see the module docstring).
    raw = yaml.safe_load(recipe.read_text())
    assert raw["bf16"] is True
    assert training_args.gradient_checkpointing is True
    assert training_args.use_vllm and training_args.vllm_mode == "colocate"
    assert training_args.beta == 0.0
    assert training_args.num_iterations == 1
    assert training_args.log_completions is True
    assert training_args.report_to and set(training_args.report_to) <= {"trackio", "wandb"}
    assert training_args.save_strategy == "steps" and training_args.save_steps > 0


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_header_names_gpus_accelerate_config_and_launch_commands(recipe):
    method, header = method_of(recipe), header_text(recipe)
    name = recipe_accelerate_config(recipe)
    assert accelerate_config_path(name) == ACCELERATE_CONFIG_DIR / f"{name}.yaml"
    config_file = f"examples/configs/{recipe.name}"
    assert "GPUs:" in header
    launch = (
        f"accelerate launch --config_file accelerate_configs/{name}.yaml examples/{method}.py --config {config_file}"
    )
    assert launch in header
    assert f"scope-trl {method} --config {config_file} --accelerate_config {name}" in header


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_value_carries_a_comment(recipe):
    """Each value says where it comes from: the paper, the official code, the project, or "chosen: <reason>"."""
    for number, line in enumerate(recipe.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or re.fullmatch(r"[\w.-]+:", stripped):
            continue  # blank, comment, or the key of a nested block (env:, reward_funcs:)
        assert " # " in line, f"{recipe.name}:{number}: no comment on {stripped!r}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_batch_layout_on_its_accelerate_config(recipe, monkeypatch):
    """The generation batch holds whole prompt groups on the number of processes the recipe is meant for."""
    _, args, _ = parse_recipe(recipe, monkeypatch)
    processes = load_config_from_file(str(accelerate_config_path(recipe_accelerate_config(recipe)))).num_processes
    generation_batch = args.per_device_train_batch_size * processes * args.steps_per_generation
    optimizer_batch = args.per_device_train_batch_size * processes * args.gradient_accumulation_steps
    assert generation_batch == 256 * args.num_generations  # 256 prompts per generation batch
    assert generation_batch % args.num_generations == 0 and optimizer_batch % args.num_generations == 0
    assert args.steps_per_generation % args.gradient_accumulation_steps == 0


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.startswith("scope_")))
def test_scope_recipe_follows_the_paper(name, monkeypatch):
    expected = EXPECTED[name]
    script_args, args, model_args = parse_recipe(RECIPE_DIR / name, monkeypatch)
    assert model_args.model_name_or_path == expected["model_name_or_path"]
    assert args.teacher_model_name_or_path == expected["teacher_model_name_or_path"]
    assert recipe_accelerate_config(RECIPE_DIR / name) == expected["accelerate_config"]
    assert script_args.dataset_name == DEEPMATH and script_args.dataset_layout == "deepmath"
    assert script_args.instruction == BOXED_INSTRUCTION
    assert script_args.reward_funcs[0] == "accuracy_reward"  # the verifier that routes
    # The paper's optimiser settings (docs/scope.md, Reproduce the paper)
    assert args.learning_rate == 5e-5 and args.lr_scheduler_type == "constant" and args.warmup_steps == 0
    assert args.weight_decay == 0.01 and args.max_grad_norm == 1.0
    assert args.num_generations == 8 and args.temperature == 0.6 and args.max_completion_length == 12288
    assert args.steps_per_generation == args.gradient_accumulation_steps  # one optimizer step per generation batch
    assert args.num_iterations == 1 and args.beta == 0.0
    assert args.scope_tau == 1.0 and args.routing and args.outcome_advantage_coef == 0.0
    assert args.mle_coef == 1.0 and args.opd_coef == 1.0 and args.teacher_temperature == 1.0
    assert args.student_weight_direction == "paper" and args.teacher_weight_direction == "paper"
    assert args.loss_type == "dapo"  # the only value SCOPEConfig accepts
    assert args.vllm_importance_sampling_correction is False  # the official run has none
    assert args.save_steps == 8  # SAVE_FREQ of the official scripts


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.startswith("dgpo_")))
def test_dgpo_recipe_takes_off_policy_steps(name, monkeypatch):
    expected = EXPECTED[name]
    script_args, args, model_args = parse_recipe(RECIPE_DIR / name, monkeypatch)
    assert model_args.model_name_or_path == expected["model_name_or_path"]
    assert recipe_accelerate_config(RECIPE_DIR / name) == expected["accelerate_config"]
    assert script_args.dataset_name == DEEPMATH  # chosen: the paper's training set is unknown
    # DGPO's official script: 4 optimizer steps per generation batch, as the official script's 4 mini-batches per rollout.
    assert args.steps_per_generation == 4 * args.gradient_accumulation_steps
    assert args.num_iterations == 1
    assert not args.dgpo_is_on_policy
    # DGPO paper §4.5: n per model size, m = 2, epsilon 0.2 / 0.2
    assert args.dgpo_n == expected["dgpo_n"] and args.dgpo_m == 2.0
    assert args.epsilon == 0.2 and args.epsilon_high == 0.2
    # DGPO paper §4.6: GRPO advantages, no KL, no entropy bonus, no rollout importance-sampling correction
    assert args.scale_rewards == "group" and args.beta == 0.0 and args.entropy_coef == 0.0
    assert args.vllm_importance_sampling_correction is False
    assert args.importance_sampling_level == "token"
    assert args.learning_rate == 1e-6 and args.lr_scheduler_type == "constant"
    assert args.weight_decay == 0.01 and args.max_grad_norm == 1.0
    assert args.num_generations == 8 and args.temperature == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# Accelerate configs
# ---------------------------------------------------------------------------------------------------------------------


def test_top_level_accelerate_configs_is_the_package_directory():
    assert (REPO_ROOT / "accelerate_configs").resolve() == ACCELERATE_CONFIG_DIR.resolve()


@pytest.mark.parametrize("name", sorted(ACCELERATE_CONFIGS))
def test_accelerate_config_loads_with_accelerate(name):
    distributed_type, processes, machines, precision, stage, use_cpu = ACCELERATE_CONFIGS[name]
    config = load_config_from_file(str(ACCELERATE_CONFIG_DIR / f"{name}.yaml"))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == distributed_type
    assert config.num_processes == processes and config.num_machines == machines
    assert config.mixed_precision == precision and config.use_cpu is use_cpu
    assert config.deepspeed_config.get("zero_stage") == stage
    if stage == 3 and not use_cpu:  # TRL's zero3 profile
        assert config.deepspeed_config["zero3_init_flag"] is True
        assert config.deepspeed_config["zero3_save_16bit_model"] is True
    if name == "fsdp2":
        assert config.fsdp_config["fsdp_version"] == 2


@pytest.mark.parametrize("path", sorted(ACCELERATE_CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_packaged_accelerate_config_loads_and_has_a_header(path):
    assert isinstance(ClusterConfig.from_yaml_file(yaml_file=str(path)), ClusterConfig)
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    assert "accelerate launch --config_file accelerate_configs/" in header


@pytest.mark.parametrize("name", GPU_CONFIGS)
def test_gpu_accelerate_config_header_says_where_the_teacher_lives(name):
    header = "\n".join(
        line for line in (ACCELERATE_CONFIG_DIR / f"{name}.yaml").read_text().splitlines() if line[:1] == "#"
    )
    assert "SCOPE teacher" in header
    assert f"--config_file accelerate_configs/{name}.yaml" in header
    assert f"--accelerate_config {name}" in header


@pytest.mark.parametrize(
    ("name", "trl_name", "differences"),
    [
        ("single_gpu", "single_gpu", {"num_processes": 1}),
        ("multi_gpu", "multi_gpu", {}),
        ("zero2", "zero2", {}),
        ("zero3", "zero3", {}),
        ("fsdp2", "fsdp2", {}),
        (
            "multi_node",
            "zero3",
            {"num_machines": 2, "num_processes": 16, "main_process_ip": None, "main_process_port": 29500},
        ),
    ],
)
def test_gpu_accelerate_config_matches_trl_profile(name, trl_name, differences):
    ours = yaml.safe_load((ACCELERATE_CONFIG_DIR / f"{name}.yaml").read_text())
    theirs = yaml.safe_load((TRL_CONFIG_DIR / f"{trl_name}.yaml").read_text())
    assert ours == {**theirs, **differences}


def test_multi_node_config_is_a_two_node_rank_zero_template():
    config = load_config_from_file(str(ACCELERATE_CONFIG_DIR / "multi_node.yaml"))
    assert config.machine_rank == 0 and config.main_process_ip is None and config.main_process_port == 29500
    assert config.num_processes % config.num_machines == 0  # processes per node
    assert config.deepspeed_config["deepspeed_multinode_launcher"] == "standard"
    header = (ACCELERATE_CONFIG_DIR / "multi_node.yaml").read_text()
    assert "--machine_rank $NODE_RANK --main_process_ip $MASTER_ADDR" in header


# ---------------------------------------------------------------------------------------------------------------------
# scope-trl --accelerate_config NAME
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(ACCELERATE_CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_accelerate_config_path_resolves_every_packaged_name(path):
    assert accelerate_config_path(path.stem) == path
    assert accelerate_config_path(path.name) == path
    assert accelerate_config_path(str(path)) == path


def test_accelerate_config_path_names_the_packaged_configs_on_error():
    with pytest.raises(ValueError, match="zero3") as error:
        accelerate_config_path("no_such_config")
    for name in GPU_CONFIGS:
        assert name in str(error.value)


def test_the_documented_gpu_scaling_keeps_dgpo_off_policy(monkeypatch):
    """docs/recipes.md tells users to scale `gradient_accumulation_steps` and `steps_per_generation` together for
    another number of GPUs; done so, a DGPO recipe keeps its off-policy updates and its batches on 1, 4, 8 and 16 GPUs.
    (Scaling only the accumulation, the old advice, made every update on-policy: DGPO trained like GRPO.)"""
    advice = (REPO_ROOT / "docs" / "recipes.md").read_text()
    assert "scale\n`gradient_accumulation_steps` and `steps_per_generation` together" in advice
    for recipe in (r for r in RECIPES if method_of(r) == "dgpo"):
        _, args, _ = parse_recipe(recipe, monkeypatch)
        assert not args.dgpo_is_on_policy, recipe.name
        for gpus in (1, 4, 16):
            scale = 8 / gpus
            accumulation = int(args.gradient_accumulation_steps * scale)
            steps = int(args.steps_per_generation * scale)
            assert args.per_device_train_batch_size * gpus * steps == 256 * args.num_generations, (recipe.name, gpus)
            assert accumulation % (steps * args.num_iterations) != 0, f"{recipe.name} on {gpus} GPU(s) is on-policy"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_header_installs_what_the_recipe_needs(recipe, monkeypatch):
    """The header's install line brings the tracker of `report_to` (through an extra that declares its package),
    DeepSpeed for a DeepSpeed accelerate config and vLLM for `use_vllm`."""
    import tomllib

    match = re.search(
        r"Install, from the repository root: pip install -e \"\.\[([\w,-]+)\]\"( \"trl\[vllm\]\")?",
        header_text(recipe),
    )
    assert match, f"{recipe.name}: the header must say what to install"
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installed = {
        re.split(r"[<>=!;\[ ]", requirement)[0] for name in match.group(1).split(",") for requirement in extras[name]
    }
    _, args, _ = parse_recipe(recipe, monkeypatch)
    from scope_trl.checks import TRACKER_PACKAGES

    for tracker in args.report_to:
        assert TRACKER_PACKAGES[tracker][0][0] in installed, (recipe.name, tracker, installed)
    accelerate = load_config_from_file(str(accelerate_config_path(recipe_accelerate_config(recipe))))
    if accelerate.distributed_type == "DEEPSPEED":
        assert "deepspeed" in installed
    assert bool(match.group(2)) == args.use_vllm
