r"""Avg@k / Pass@k evaluation on the standard maths benchmarks, graded by `scope_trl.rewards.accuracy_reward`.

The SCOPE and DGPO papers report "Avg@32 / Pass@32" on AIME24, AIME25, AMC23, MATH500, Minerva Math and
OlympiadBench, without defining Pass@32 (docs/evaluation.md). Decisions:

* **Which estimator each figure uses.** For a problem with n samples of which c are correct:

  - `Avg@k` = mean over problems of c / n, with n = k samples per problem (verl's `mean@N`, lighteval's
    `math_pass@1:{N}_samples`);
  - `Pass@k` = the unbiased estimator of Chen et al. 2021, 1 - C(n - c, k) / C(n, k), averaged over problems. The
    evaluator samples n = k completions, so our reported Pass@k is simply "at least one of the k samples is correct"
    (1[c > 0]): the quantity the name promises, with no estimation error. `pass_at_k` accepts any k <= n, so a run
    with n > k samples gives the lower-variance estimate the literature recommends;
  - `best@k (bootstrap)`, reported next to them in the JSON file only: verl's `best@N/mean` as used by the SCOPE
    authors' evaluation script (draw k of the n samples *with replacement*, take the max, 1,000 rounds, seed 42).
    Its expectation is 1 - (1 - c/n)^k, *below* "any correct" (c = 1, n = k = 32 gives about 0.64), so it is kept
    apart from Pass@k and named for what it is.

* **Grading.** One grader for every benchmark, our math-verify `accuracy_reward` (the SCOPE script mixes three).
  A problem whose *reference* cannot be graded (the reward is None) is excluded from both figures and counted in
  `num_excluded`, rather than counted as unsolved.

* **Averages.** The "Average" row is the unweighted mean of the per-benchmark figures, as in the papers' tables (a
  pooled mean would let MATH500's 500 problems swamp AIME's 30).

* **Sampling.** The papers' evaluation settings by default: temperature 0.6, top-p 0.95, top-k 20, k = 32 samples
  per problem; `max_new_tokens` is the caller's choice (the SCOPE script uses 16k). Prompts are conversational and go
  through the tokenizer's chat template. Generation is seeded inside `torch.random.fork_rng`, so a periodic
  evaluation does not perturb the training run's random stream; with the transformers backend the samples depend on
  `batch_size` too (the random draws are consumed per batch).

* **During training** (`PeriodicEvaluationCallback`): the evaluation runs on the main process only, on the unwrapped
  model, while the other processes wait at a barrier; DeepSpeed ZeRO-3 and FSDP are refused with a clear error (each process
  holds a shard of the weights, so generation would need every process to take part). The metrics
  `eval/<benchmark>/avg@k` and `eval/<benchmark>/pass@k` are logged with `transformers.Trainer.log`, so they reach
  `state.log_history` and the trackers; TRL's own `log` override is bypassed on purpose, since it would flush (and
  clear) the trainer's accumulated training metrics into our entry.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from transformers import TrainerCallback


logger = logging.getLogger(__name__)

# The papers' evaluation sampling settings (SCOPE's evaluation script).
DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 20
# verl's bootstrap settings, used by the SCOPE authors' evaluation script.
BOOTSTRAP_ROUNDS = 1000
BOOTSTRAP_SEED = 42

# Benchmark name -> (file in the data dir, Hub dataset, Hub split, layout). The Hub sources are the usual copies of
# each benchmark; OlympiadBench's text-only maths subset has no canonical Hub copy, use the offline file.
BENCHMARKS = {
    "aime24": ("aime24.jsonl", "math-ai/aime24", "test", None),
    "aime25": ("aime25.jsonl", "math-ai/aime25", "test", None),
    "amc23": ("amc23.jsonl", "math-ai/amc23", "test", None),
    "math500": ("math500.jsonl", "HuggingFaceH4/MATH-500", "test", "math_eval"),
    "minerva_math": ("minerva_math.jsonl", "math-ai/minervamath", "test", None),
    "olympiadbench": ("olympiadbench.jsonl", None, None, None),
    "gsm8k": ("gsm8k_test.jsonl", "openai/gsm8k", "test", "gsm8k"),
}
JSONL_FORMAT = 'one JSON object per line, {"problem": ..., "answer": ...}, "id" optional; gsm8k reads gsm8k_test.jsonl'
DEFAULT_BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench")
BACKENDS = ("transformers", "vllm")


# --------------------------------------------------------------------------------------------------------------------
# Estimators (pure functions)
# --------------------------------------------------------------------------------------------------------------------


def avg_at_k(correct_counts, num_samples) -> float:
    """Avg@k: the mean over problems of c_i / n_i, the per-problem accuracy of the samples.

    `num_samples` is one n for all problems or one per problem. An empty list gives NaN (there is nothing to average).
    """
    counts = np.asarray(correct_counts, dtype=float)
    samples = np.broadcast_to(np.asarray(num_samples, dtype=float), counts.shape)
    if np.any(samples <= 0) or np.any(counts < 0) or np.any(counts > samples):
        raise ValueError("Each problem needs 0 <= correct <= num_samples and num_samples >= 1.")
    return float(np.mean(counts / samples)) if counts.size else math.nan


def _pass_at_k_one(n: int, c: int, k: int) -> float:
    """1 - C(n - c, k) / C(n, k) for one problem, as a product of k-independent factors.

    C(n - c, k) / C(n, k) = prod_{i = n - c + 1}^{n} (1 - k / i) (Chen et al. 2021, the Codex paper's numerically
    stable form): every factor lies in [0, 1), so nothing overflows for n = 1024 where C(n, k) has ~300 digits.
    """
    if c == 0:
        return 0.0
    if n - c < k:  # every draw of k samples contains a correct one
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=float)
    # exp(sum(log1p)) keeps the relative error of a product of up to 1024 factors near machine precision.
    return float(1.0 - np.exp(np.sum(np.log1p(-k / i))))


def pass_at_k(num_samples, num_correct, k: int):
    """The unbiased Pass@k estimator of Chen et al. 2021: 1 - C(n - c, k) / C(n, k).

    Args:
        num_samples: n, the number of samples per problem (a scalar or one per problem).
        num_correct: c, the number of correct samples (a scalar or one per problem).
        k: the k of Pass@k, 1 <= k <= n.

    Returns:
        A float for scalar inputs, else a float array with one estimate per problem (average it for the benchmark
        figure). Exactly 0.0 when c = 0 and exactly 1.0 when n - c < k (with k = n: 1[c > 0]).
    """
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    k = int(k)
    n_array, c_array = np.broadcast_arrays(np.asarray(num_samples), np.asarray(num_correct))
    if np.any(n_array < 1) or np.any(c_array < 0) or np.any(c_array > n_array):
        raise ValueError("Each problem needs num_samples >= 1 and 0 <= num_correct <= num_samples.")
    if np.any(k > n_array):
        raise ValueError(
            f"pass_at_k needs k <= n: k = {k} but only {int(n_array.min())} samples for some problem "
            "(sample at least k completions per problem)."
        )
    values = np.array([_pass_at_k_one(int(n), int(c), k) for n, c in zip(n_array.ravel(), c_array.ravel())])
    values = values.reshape(n_array.shape)
    return float(values) if values.ndim == 0 else values


def bootstrap_best_at_k(
    correctness: Sequence[Sequence[float]], k: int, rounds: int = BOOTSTRAP_ROUNDS, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """verl's bootstrap `best@k`: the SCOPE authors' "Pass@k".

    In each round every problem draws k of its n sample verdicts *with replacement* and keeps the best; the round's
    value is the mean over problems. Returns the mean and the (population) standard deviation over the rounds. The
    expectation per problem is 1 - (1 - c/n)^k, below "any correct" (see the module docstring). Seeded with numpy's
    `default_rng(seed)`, so the result is reproducible.

    Args:
        correctness: one sequence of 0/1 verdicts per problem (problems may have different n); k > n is allowed, since
            draws are with replacement.
        k: draws per problem and round.
        rounds: bootstrap rounds.
        seed: the generator's seed.
    """
    if k < 1 or rounds < 1:
        raise ValueError(f"k and rounds must be >= 1, got k={k}, rounds={rounds}.")
    if not correctness:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    per_round = np.zeros(rounds)
    for verdicts in correctness:
        verdicts = np.asarray(verdicts, dtype=float)
        if verdicts.size == 0:
            raise ValueError("Every problem needs at least one sample.")
        draws = rng.integers(0, verdicts.size, size=(rounds, k))
        per_round += verdicts[draws].max(axis=1)
    per_round /= len(correctness)
    return float(per_round.mean()), float(per_round.std())


# --------------------------------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------------------------------


def load_benchmarks(
    names: str | Sequence[str] = DEFAULT_BENCHMARKS, data_dir: str | Path | None = None, limit: int | None = None
) -> dict:
    """The named benchmarks as `prompt` + `solution` datasets, keyed by name, in the given order.

    With `data_dir`, `NAME` is read from `data_dir/NAME.jsonl` (`gsm8k` from `gsm8k_test.jsonl`): one JSON object per
    line with the fields `problem` and `answer` (and optionally `id`), the format docs/evaluation.md describes; without
    it, from the Hub sources in `BENCHMARKS`. `limit` keeps the first N problems of each benchmark (for smoke tests).
    Prompts carry the default `\\boxed{}` instruction of `scope_trl.data`.
    """
    from .data import load_math_dataset

    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise ValueError(f"Unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}.")
    local = f"data_dir (`scope-trl eval --data-dir FOLDER`): a folder of NAME.jsonl files ({JSONL_FORMAT})"
    if data_dir is None:
        without_source = [name for name in names if BENCHMARKS[name][1] is None]
        if without_source:  # before downloading the others
            raise ValueError(
                f"Benchmark(s) {', '.join(without_source)} have no Hub source: pass {local}, or leave them out of the "
                "benchmarks."
            )
    benchmarks = {}
    for name in names:
        file_name, hub_name, hub_split, hub_layout = BENCHMARKS[name]
        if data_dir is not None:
            path = Path(data_dir) / file_name
            if not path.is_file():
                raise FileNotFoundError(f"Benchmark {name!r}: no file {path} ({JSONL_FORMAT}).")
            dataset = load_math_dataset(path, split="test", layout="math_eval")
        else:
            load_kwargs = {"name": "main"} if name == "gsm8k" else {}
            try:
                dataset = load_math_dataset(hub_name, split=hub_split, layout=hub_layout, **load_kwargs)
            except OSError as error:  # offline (ConnectionError), or the Hub unreachable or refusing
                raise OSError(
                    f"Could not load benchmark {name!r} from the Hub dataset {hub_name} ({type(error).__name__}: "
                    f"{error}). Offline, pass {local}."
                ) from error
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        benchmarks[name] = dataset
    return benchmarks


# --------------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class BenchmarkResult:
    """The figures of one benchmark. `avg_at_k` and `pass_at_k` are fractions in [0, 1] (NaN with no problem)."""

    name: str
    k: int
    num_problems: int  # graded problems (excluded ones not counted)
    num_excluded: int  # problems whose reference could not be graded (accuracy_reward returned None)
    avg_at_k: float
    pass_at_k: float  # unbiased estimator with k = n: the share of problems with at least one correct sample
    bootstrap_best_at_k: float
    bootstrap_best_at_k_std: float
    num_correct: list[int] = field(default_factory=list)  # per graded problem, in dataset order


@dataclass
class EvaluationResult:
    """Per-benchmark results plus the settings they were produced with."""

    benchmarks: dict[str, BenchmarkResult]
    settings: dict

    @property
    def k(self) -> int:
        return self.settings["k"]

    def average(self) -> dict[str, float]:
        """The unweighted mean over benchmarks of each figure (the papers' "Average" column)."""
        results = list(self.benchmarks.values())
        return {
            metric: float(np.mean([getattr(r, metric) for r in results])) if results else math.nan
            for metric in ("avg_at_k", "pass_at_k", "bootstrap_best_at_k")
        }

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Flat `prefix/<benchmark>/avg@k` and `prefix/<benchmark>/pass@k` values (and `prefix/average/...`)."""
        k = self.k
        metrics = {}
        for name, result in self.benchmarks.items():
            metrics[f"{prefix}/{name}/avg@{k}"] = result.avg_at_k
            metrics[f"{prefix}/{name}/pass@{k}"] = result.pass_at_k
        if len(self.benchmarks) > 1:
            average = self.average()
            metrics[f"{prefix}/average/avg@{k}"] = average["avg_at_k"]
            metrics[f"{prefix}/average/pass@{k}"] = average["pass_at_k"]
        return metrics

    def _rows(self) -> list[tuple[str, str, str, str, str]]:
        rows = [
            (name, f"{100 * r.avg_at_k:.1f}", f"{100 * r.pass_at_k:.1f}", str(r.num_problems), str(r.num_excluded))
            for name, r in self.benchmarks.items()
        ]
        average = self.average()
        total = sum(r.num_problems for r in self.benchmarks.values())
        excluded = sum(r.num_excluded for r in self.benchmarks.values())
        rows.append(
            (
                "average",
                f"{100 * average['avg_at_k']:.1f}",
                f"{100 * average['pass_at_k']:.1f}",
                str(total),
                str(excluded),
            )
        )
        return rows

    def _header(self) -> tuple[str, ...]:
        return ("benchmark", f"Avg@{self.k}", f"Pass@{self.k}", "problems", "excluded")

    def table(self) -> str:
        """A plain-text table (percentages), one row per benchmark plus the unweighted average."""
        rows = [self._header(), *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        # The benchmark name left-aligned, the figures right-aligned.
        lines = [
            "  ".join([row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))])
            for row in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "estimators": {
                "avg@k": "mean over problems of c/n (n = k samples per problem)",
                "pass@k": "unbiased estimator 1 - C(n-c,k)/C(n,k) (Chen et al. 2021); with n = k: any sample correct",
                "bootstrap_best@k": f"verl best@k/mean: k draws with replacement, {BOOTSTRAP_ROUNDS} rounds, "
                f"seed {BOOTSTRAP_SEED}",
                "average": "unweighted mean over benchmarks",
            },
            "benchmarks": {name: asdict(result) for name, result in self.benchmarks.items()},
            "average": self.average(),
        }

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def to_markdown(self, path: str | Path | None = None) -> str:
        """The table in Markdown (percentages), with a line naming the estimators; written to `path` when given."""
        header = self._header()
        lines = [
            f"Model: `{self.settings.get('model', '?')}`; k = {self.k} samples per problem, temperature "
            f"{self.settings.get('temperature')}, top-p {self.settings.get('top_p')}, top-k {self.settings.get('top_k')}"
            f", max {self.settings.get('max_new_tokens')} new tokens, seed {self.settings.get('seed')}.",
            "",
            f"Avg@{self.k}: mean accuracy of the samples. Pass@{self.k}: unbiased estimator (Chen et al. 2021) with "
            f"n = k, i.e. at least one correct sample. Graded with math-verify (`scope_trl.rewards.accuracy_reward`); "
            "problems whose reference cannot be graded are excluded.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
            *("| " + " | ".join(row) + " |" for row in self._rows()),
        ]
        text = "\n".join(lines) + "\n"
        if path is not None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return text


def summarize(name: str, rewards: Sequence[Sequence[float | None]], k: int) -> BenchmarkResult:
    """The figures of one benchmark from its per-problem rewards (k per problem; None = ungradable reference)."""
    graded = [[float(r) for r in row] for row in rewards if not any(r is None for r in row)]
    counts = [int(sum(row)) for row in graded]
    mean, std = bootstrap_best_at_k(graded, k) if graded else (math.nan, math.nan)
    return BenchmarkResult(
        name=name,
        k=k,
        num_problems=len(graded),
        num_excluded=len(rewards) - len(graded),
        avg_at_k=avg_at_k(counts, k) if graded else math.nan,
        pass_at_k=float(np.mean(pass_at_k(k, counts, k))) if graded else math.nan,
        bootstrap_best_at_k=mean,
        bootstrap_best_at_k_std=std,
        num_correct=counts,
    )


# --------------------------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------------------------


def prompt_texts(tokenizer, prompts: Sequence) -> list[str]:
    """Conversational prompts through the chat template (with the generation prompt); plain strings as they are."""
    return [
        prompt
        if isinstance(prompt, str)
        else tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        for prompt in prompts
    ]


def _generate_transformers(
    model, tokenizer, texts, k, batch_size, max_new_tokens, temperature, top_p, top_k, seed, progress
) -> list[list[str]]:
    """k completions per text with `model.generate`, `batch_size` sequences (prompt copies) per call, left-padded."""
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    # Each prompt is repeated k times so that a batch may hold several prompts or part of one (k = 32 on long prompts).
    rows = [text for text in texts for _ in range(k)]
    sampling = temperature > 0
    generation_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else None,
        top_p=top_p if sampling else None,
        top_k=top_k if sampling and top_k and top_k > 0 else None,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        eos_token_id=model.generation_config.eos_token_id or tokenizer.eos_token_id,
        use_cache=True,  # training may have switched the cache off (gradient checkpointing)
    )
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only generation continues from the last position of each row
    was_training = model.training
    model.eval()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    outputs: list[str] = []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)  # fork_rng: the caller's (e.g. the trainer's) random stream is left untouched
            for start in tqdm(range(0, len(rows), batch_size), desc="Generating", disable=not progress):
                batch = tokenizer(
                    rows[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(model.device)
                generated = model.generate(**batch, generation_config=generation_config)
                completions = generated[:, batch["input_ids"].shape[1] :]
                outputs += tokenizer.batch_decode(completions, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return [outputs[i * k : (i + 1) * k] for i in range(len(texts))]


def _import_vllm():
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "backend='vllm' needs vLLM, which is not installed: `pip install vllm`, or use backend='transformers'."
        ) from error
    return vllm


def _vllm_engine(model, seed: int):
    """`model` as a `vllm.LLM`: itself when it is one, else an engine loading that path or Hub name (once for all
    benchmarks: an engine start costs seconds to minutes)."""
    vllm = _import_vllm()
    return model if isinstance(model, vllm.LLM) else vllm.LLM(model=str(model), seed=seed)


def _generate_vllm(llm, tokenizer, texts, k, max_new_tokens, temperature, top_p, top_k, seed) -> list[list[str]]:
    """k completions per text with the `vllm.LLM` engine `llm`.

    The prompts go in as token ids tokenised without special tokens, as with the transformers backend: the chat
    template already holds any BOS, which vLLM's own tokenisation of a text prompt would add a second time.
    """
    params = _import_vllm().SamplingParams(
        n=k,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k if top_k and top_k > 0 else -1,
        max_tokens=max_new_tokens,
        seed=seed,
    )
    prompts = [{"prompt_token_ids": tokenizer(text, add_special_tokens=False)["input_ids"]} for text in texts]
    return [[choice.text for choice in output.outputs] for output in llm.generate(prompts, params)]


# --------------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------------


def grade(completions: Sequence[Sequence[str]], solutions: Sequence, progress: bool = True, chunk: int = 256):
    """`accuracy_reward` for every completion: a list (per problem) of lists (per sample) of 1.0 / 0.0 / None."""
    from tqdm.auto import tqdm

    from .rewards import accuracy_reward

    flat = [(text, solution) for texts, solution in zip(completions, solutions) for text in texts]
    rewards: list[float | None] = []
    for start in tqdm(range(0, len(flat), chunk), desc="Grading", disable=not progress):
        part = flat[start : start + chunk]
        rewards += accuracy_reward([text for text, _ in part], [solution for _, solution in part])
    per_problem, index = [], 0
    for texts in completions:
        per_problem.append(rewards[index : index + len(texts)])
        index += len(texts)
    return per_problem


def evaluate(
    model,
    tokenizer,
    benchmarks: Mapping[str, object],
    k: int = 32,
    batch_size: int = 64,
    max_new_tokens: int = 4096,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float = DEFAULT_TOP_P,
    top_k: int = DEFAULT_TOP_K,
    seed: int = 0,
    backend: str = "transformers",
    progress: bool = True,
    model_name: str | None = None,
) -> EvaluationResult:
    """Sample k completions per problem, grade them with math-verify, and compute Avg@k and Pass@k per benchmark.

    Args:
        model: a causal LM (transformers backend), or a path / Hub name / `vllm.LLM` (vLLM backend).
        tokenizer: its tokenizer; conversational prompts go through its chat template.
        benchmarks: name -> dataset (or list of rows) with `prompt` (conversational or text) and `solution` columns,
            e.g. from `load_benchmarks`.
        k: samples per problem (n = k; see the module docstring for the estimators).
        batch_size: sequences per `generate` call (transformers backend).
        max_new_tokens, temperature, top_p, top_k: sampling settings (temperature 0 means greedy; top_k <= 0: off).
        seed: seeds the sampling (the caller's random state is restored afterwards).
        backend: "transformers" or "vllm".
        progress: show tqdm progress bars.
        model_name: recorded in the settings (default: the model's `name_or_path`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if k < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"k, batch_size and max_new_tokens must be >= 1, got {k}, {batch_size}, {max_new_tokens}.")
    if model_name is None:
        model_name = model if isinstance(model, str) else getattr(model, "name_or_path", type(model).__name__)
    settings = {
        "model": str(model_name),
        "k": k,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "seed": seed,
        "backend": backend,
        "batch_size": batch_size,
        "grader": "scope_trl.rewards.accuracy_reward (math-verify)",
    }
    if backend == "vllm":
        model = _vllm_engine(model, seed)
    results = {}
    for name, dataset in benchmarks.items():
        started = time.monotonic()
        prompts = [row["prompt"] for row in dataset]
        solutions = [row["solution"] for row in dataset]
        texts = prompt_texts(tokenizer, prompts)
        if backend == "vllm":
            completions = _generate_vllm(model, tokenizer, texts, k, max_new_tokens, temperature, top_p, top_k, seed)
        else:
            completions = _generate_transformers(
                model, tokenizer, texts, k, batch_size, max_new_tokens, temperature, top_p, top_k, seed, progress
            )
        results[name] = summarize(name, grade(completions, solutions, progress), k)
        logger.info(f"{name}: {len(prompts)} problems x {k} samples in {time.monotonic() - started:.1f} s.")
    return EvaluationResult(results, settings)


# --------------------------------------------------------------------------------------------------------------------
# Periodic evaluation during training
# --------------------------------------------------------------------------------------------------------------------


class PeriodicEvaluationCallback(TrainerCallback):
    """Evaluate the model being trained every `every_n_steps` optimizer steps and log `eval/<benchmark>/avg@k` and
    `eval/<benchmark>/pass@k` (plus `eval/average/...` with several benchmarks) into the trainer's log history.

    ```python
    callback = PeriodicEvaluationCallback(load_benchmarks("aime24,math500", "shared/data/math_eval", limit=50), 100)
    trainer.add_callback(callback.attach(trainer))
    ```

    The callback needs the trainer to log through it: pass `trainer=` or call `attach(trainer)`. It evaluates on the
    main process only (the other processes wait at a barrier, so keep an evaluation well under the collective timeout,
    30 min by default; their log history lacks the `eval/...` entries) with the transformers backend, and refuses
    DeepSpeed ZeRO-3 and FSDP (see the module docstring). Sampling runs in a forked RNG, so training draws the same random numbers
    with or without the callback. Keep the benchmarks small: every evaluation samples k completions per problem.
    """

    def __init__(
        self,
        benchmarks: Mapping[str, object],
        every_n_steps: int,
        k: int = 4,
        batch_size: int = 64,
        max_new_tokens: int = 1024,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = DEFAULT_TOP_P,
        top_k: int = DEFAULT_TOP_K,
        seed: int = 0,
        trainer=None,
        tokenizer=None,
    ):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}.")
        self.benchmarks = dict(benchmarks)
        self.every_n_steps = every_n_steps
        self.tokenizer = tokenizer
        self.trainer = trainer
        self.kwargs = {
            "k": k,
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k,
            "seed": seed,
        }
        self.results: list[tuple[int, EvaluationResult]] = []  # (global step, result) on the main process

    def attach(self, trainer) -> PeriodicEvaluationCallback:
        self.trainer = trainer
        return self

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise ValueError("PeriodicEvaluationCallback needs the trainer to log: pass trainer= or use attach().")
        sharded = None
        if getattr(self.trainer, "is_deepspeed_enabled", False):
            plugin = self.trainer.accelerator.state.deepspeed_plugin
            if plugin is not None and plugin.zero_stage == 3:
                sharded = "DeepSpeed ZeRO-3"
        if getattr(self.trainer, "is_fsdp_enabled", False):
            sharded = "FSDP"
        if sharded is not None:
            raise ValueError(
                f"PeriodicEvaluationCallback does not support {sharded}: it generates on the main process only, "
                "while sharded weights can only be gathered by every process together (the run would hang). "
                "Evaluate the saved checkpoints with `scope-trl eval` instead."
            )

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every_n_steps:
            return
        trainer = self.trainer
        accelerator = trainer.accelerator
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(trainer.model)
            tokenizer = self.tokenizer or trainer.processing_class
            result = evaluate(model, tokenizer, self.benchmarks, progress=False, **self.kwargs)
            self.results.append((state.global_step, result))
            # transformers.Trainer.log, not TRL's override: that one would pour (and clear) the accumulated training
            # metrics into this entry. Logging resets `control.should_log`, which the flow callback may have just set
            # for this step's regular training log: keep it.
            from transformers import Trainer

            should_log = control.should_log
            Trainer.log(trainer, result.metrics("eval"))
            control.should_log = trainer.control.should_log = should_log
        accelerator.wait_for_everyone()
