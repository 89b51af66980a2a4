"""Task F's regime check: is the teacher's token signal trustworthy on some incorrect rollouts of a prompt and not on
others, and does its perplexity show which?

For each incorrect rollout of the SFT student (k per validation problem): its style, the teacher's mean token
log-prob ℓ_T (what DPAW's teacher weight reads: weight ∝ exp(ℓ_T / τ) within the prompt's incorrect rollouts), and the
usefulness of the per-token signal log π_T − log π_S (the OPD advantage at the start of RL): the probability that a
token the rollout got right has a higher signal than one it got wrong (an AUC: 1 points at every error, 0.5 says
nothing). Reported by style and within prompt groups.
"""

from __future__ import annotations

import statistics

from .sampling import sample_completions
from .tasks import Problem, StyleTask


def token_auc(signal: list[float], wrong: list[bool]) -> float | None:
    """P(signal of a right token > signal of a wrong token), ties counting half; None without both kinds."""
    right = [s for s, w in zip(signal, wrong) if not w]
    bad = [s for s, w in zip(signal, wrong) if w]
    if not right or not bad:
        return None
    wins = sum((r > b) + 0.5 * (r == b) for r in right for b in bad)
    return wins / (len(right) * len(bad))


def _completion_logps(model, tokenizer, prompts: list[str], completions: list[str]):
    """Per-token log-probs of each completion (its characters, then EOS) after its prompt: a list of lists."""
    import torch

    rows = []
    for prompt, completion in zip(prompts, completions):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt_ids, completion_ids))
    out = []
    with torch.no_grad():
        for prompt_ids, completion_ids in rows:
            ids = torch.tensor([prompt_ids + completion_ids])
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            targets = ids[0, 1:]
            picked = logps.gather(1, targets.unsqueeze(1)).squeeze(1)[len(prompt_ids) - 1 :]
            out.append(picked.tolist())
    return out


def teacher_reliability(task: StyleTask, student, teacher, tokenizer, problems: list[Problem], k: int, seed: int):
    """The regime statistics of task F for an SFT'd `student` and `teacher` (models) on `problems` (see the module
    docstring). Returns a dict of plain numbers."""
    samples = sample_completions(student, tokenizer, [p.prompt for p in problems], k, task.max_completion_length, seed)
    records = []  # (group, style, ℓ_T, auc)
    for group, (problem, completions) in enumerate(zip(problems, samples)):
        wrong_rollouts = [
            c.strip() for c in completions if c.strip()[:1] in task.STYLES and not task.is_correct(problem.prompt, c)
        ]
        if not wrong_rollouts:
            continue
        prompts = [problem.prompt] * len(wrong_rollouts)
        teacher_logps = _completion_logps(teacher, tokenizer, prompts, wrong_rollouts)
        student_logps = _completion_logps(student, tokenizer, prompts, wrong_rollouts)
        reference = task.scratchpad(*task.operands(problem.prompt))
        for completion, t, s in zip(wrong_rollouts, teacher_logps, student_logps):
            style = completion[0]
            target = task.styled(reference, style)
            digits = range(1, min(len(completion), len(target)))  # the answer tokens after the style letter
            signal = [t[i] - s[i] for i in digits]
            wrong = [completion[i] != target[i] for i in digits]
            records.append((group, style, statistics.fmean(t), token_auc(signal, wrong)))
    by_style = {}
    for style in task.STYLES:
        mine = [r for r in records if r[1] == style]
        aucs = [r[3] for r in mine if r[3] is not None]
        by_style[style] = {
            "share": len(mine) / max(1, len(records)),
            "teacher_mean_logp": statistics.fmean(r[2] for r in mine) if mine else float("nan"),
            "signal_auc": statistics.fmean(aucs) if aucs else float("nan"),
        }
    gaps, spreads, centred = [], [], []
    for group in sorted({r[0] for r in records}):
        mine = [r for r in records if r[0] == group]
        styles = {style: [r[2] for r in mine if r[1] == style] for style in task.STYLES}
        if all(styles.values()):
            gaps.append(statistics.fmean(styles["a"]) - statistics.fmean(styles["b"]))
        if len(mine) > 1:
            spreads.append(statistics.pstdev(r[2] for r in mine))
            scored = [r for r in mine if r[3] is not None]
            if len(scored) > 1:
                mean_l, mean_auc = statistics.fmean(r[2] for r in scored), statistics.fmean(r[3] for r in scored)
                centred += [(r[2] - mean_l, r[3] - mean_auc) for r in scored]
    groups = len({r[0] for r in records})
    correlation = float("nan")
    if len(centred) > 2 and statistics.pstdev(x for x, _ in centred) > 0 and statistics.pstdev(y for _, y in centred):
        correlation = statistics.correlation([x for x, _ in centred], [y for _, y in centred])
    return {
        "incorrect_rollouts": len(records),
        "by_style": by_style,
        "groups_with_both_styles": len(gaps) / max(1, groups),
        "within_group_logp_gap_a_minus_b": statistics.fmean(gaps) if gaps else float("nan"),
        "within_group_logp_std": statistics.fmean(spreads) if spreads else float("nan"),
        "within_group_corr_logp_auc": correlation,
    }


def style_accuracy(task: StyleTask, model, tokenizer, problems: list[Problem], k: int, seed: int, style: str) -> float:
    """Mean accuracy of k samples per problem when the completion is made to start with `style` (task F's teacher is
    judged in the style it learned: its free samples pick style b, where it knows nothing, half the time)."""
    prompts = [p.prompt + style for p in problems]
    samples = sample_completions(model, tokenizer, prompts, k, task.max_completion_length - 1, seed)
    right = sum(task.is_correct(p.prompt, style + c) for p, completions in zip(problems, samples) for c in completions)
    return right / (k * len(problems))
