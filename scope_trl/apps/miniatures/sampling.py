"""Evaluation of a model on a miniature task: k samples per problem at temperature 1, scored by the verifier.

Reports, per problem, the number of correct samples and of distinct correct samples; from them Avg@k (mean fraction
correct), Pass@j for j = 1..k (the unbiased estimator of Chen et al. 2021 with n = k samples) and coverage (mean
number of distinct correct answers). The same seed gives every model the same sampling noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .tasks import Problem, Task


@dataclass
class Evaluation:
    k: int
    correct_counts: list[int]
    distinct_correct: list[int]
    in_slice: list[bool] = field(default_factory=list)
    # Named subsets of the problems reported beside the whole (e.g. "beyond_reach": the problems the SFT student
    # never solved in k samples), each a membership list in problem order.
    subsets: dict[str, list[bool]] = field(default_factory=dict)

    def _subset(self, members: list[bool]) -> Evaluation:
        pick = [i for i, m in enumerate(members) if m]
        return Evaluation(self.k, [self.correct_counts[i] for i in pick], [self.distinct_correct[i] for i in pick])

    def summary(self) -> dict:
        from ...evaluation import avg_at_k, pass_at_k

        n = len(self.correct_counts)
        if n == 0:
            return {"problems": 0}
        result = {
            "problems": n,
            "avg@k": float(avg_at_k(self.correct_counts, self.k)),
            "pass@k": float(sum(pass_at_k(self.k, c, self.k) for c in self.correct_counts) / n),
            "pass_curve": [
                float(sum(pass_at_k(self.k, c, j) for c in self.correct_counts) / n) for j in range(1, self.k + 1)
            ],
            "distinct_correct": sum(self.distinct_correct) / n,
        }
        if any(self.in_slice):
            result["slice"] = self._subset(self.in_slice).summary()
            result["rest"] = self._subset([not s for s in self.in_slice]).summary()
        for name, members in self.subsets.items():
            result[name] = self._subset(members).summary()
        return result


def sample_completions(model, tokenizer, prompts: list[str], k: int, max_new_tokens: int, seed: int, batch=256):
    """k completions per prompt (temperature 1, no truncation of the distribution), decoded without specials."""
    import torch

    model.eval()
    tokenizer.padding_side = "left"  # generation continues the prompt's last token
    texts: list[str] = []
    per_call = max(1, batch // k)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(prompts), per_call):
            chunk = prompts[start : start + per_call]
            encoded = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(
                **encoded,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                num_return_sequences=k,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            texts += tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    return [texts[i * k : (i + 1) * k] for i in range(len(prompts))]


def evaluate(model, tokenizer, task: Task, problems: list[Problem], k: int, seed: int, subsets=None) -> Evaluation:
    samples = sample_completions(
        model, tokenizer, [p.prompt for p in problems], k, task.max_completion_length, seed=seed
    )
    correct_counts, distinct = [], []
    for problem, completions in zip(problems, samples):
        correct = [c.strip() for c in completions if task.is_correct(problem.prompt, c)]
        correct_counts.append(len(correct))
        distinct.append(len(set(correct)))
    return Evaluation(k, correct_counts, distinct, [p.in_slice for p in problems], dict(subsets or {}))
