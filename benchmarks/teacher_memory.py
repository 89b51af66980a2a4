"""Peak memory of SCOPE's teacher scoring against a naive full-logits `log_softmax`, by completion length.

SCOPE scores every incorrect rollout with the teacher: the log-probability of each sampled token. The naive way
materialises the batch × length × vocabulary logits, then their `log_softmax` (in float32, as most implementations
upcast), then gathers one value per token: at Qwen3's 151,936-row vocabulary and 8k tokens that is 5 GB per copy for a
single completion. `SCOPETrainer._score_with_teacher` scores through TRL's fused LM head, which projects tiles of at
most 4,096 tokens × 32,768 vocabulary columns and keeps a running log-sum-exp, so no full-vocabulary row of all
tokens exists at once.

This script builds a narrow Qwen3 teacher (and student) with the real vocabulary, then for each completion length
measures, in this process, the peak memory above the resting level of (a) `SCOPETrainer._score_with_teacher` on a
batch of rollouts and (b) the naive path on the same ids, and checks that the two agree. On CPU the peak is the
process's resident high-water mark (`VmHWM`, reset through `/proc/self/clear_refs` before each measurement); on CUDA
it is `torch.cuda.max_memory_allocated`. Targets (exit status 1 if one is missed): ours grows at most linearly in
length, and stays at least 10× below the naive path at the longest length.

Outputs in `--output-dir` (default `benchmarks/results`): `teacher_memory.md`, `teacher_memory.json`,
`teacher_memory.png` (memory against length).

    python benchmarks/teacher_memory.py                     # lengths 1k-8k, vocabulary 151,936 (about 2 min on CPU)
    python benchmarks/teacher_memory.py --device cuda
    python benchmarks/teacher_memory.py --smoke --output-dir /tmp/tm   # seconds; part of the tests
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from benchmarks.peak_memory import PeakMemory  # noqa: E402
from benchmarks.report import finish  # noqa: E402


QWEN3_VOCABULARY = 151_936
TARGET_RATIO = 10.0
LINEAR_SLACK = 1.25  # ours(L_max) / ours(L_min) may be at most 1.25 x L_max / L_min


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1024,2048,4096,8192", help="completion lengths (tokens)")
    parser.add_argument("--vocab", type=int, default=QWEN3_VOCABULARY)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1, help="rollouts scored at once")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens before each completion")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--smoke", action="store_true", help="vocabulary 4,096, lengths 64 and 128: seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.vocab, args.lengths = 4096, "64,128"
    args.lengths = [int(x) for x in args.lengths.split(",")]
    return args


def build_trainer(args, root: Path):
    from scope_trl import SCOPEConfig, SCOPETrainer
    from scope_trl.apps.toy import build_tokenizer, contains_digit_reward, make_arithmetic_dataset, save_tiny_model

    tokenizer = build_tokenizer()
    shape = {
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": args.vocab,
        "max_position_embeddings": args.prompt + max(args.lengths) + 8,
    }
    student = save_tiny_model(root / "student", tokenizer, seed=0, **shape)
    teacher = save_tiny_model(root / "teacher", tokenizer, seed=1, **shape)
    config = SCOPEConfig(
        output_dir=str(root / "out"),
        use_cpu=args.device == "cpu",
        bf16=False,
        report_to="none",
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = SCOPETrainer(
            model=student,
            teacher_model=teacher,
            reward_funcs=contains_digit_reward,
            args=config,
            train_dataset=make_arithmetic_dataset(16, seed=0),
        )
    return trainer


def measure(trainer, args, length: int) -> dict:
    import torch

    device = trainer.accelerator.device
    generator = torch.Generator().manual_seed(length)
    ids = torch.randint(0, args.vocab, (args.batch, args.prompt + length), generator=generator).to(device)
    mask = torch.ones_like(ids)
    rows = torch.ones(args.batch, dtype=torch.bool, device=device)
    teacher = trainer.teacher_model
    with torch.no_grad():
        start = time.perf_counter()
        with PeakMemory(args.device) as ours:
            scores = trainer._score_with_teacher(ids, mask, length, rows, args.batch)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        with PeakMemory(args.device) as naive:  # the unfused forward: logits, then log_softmax over the vocabulary
            logits = teacher(input_ids=ids, attention_mask=mask).logits[:, args.prompt - 1 : -1]
            reference = logits.float().log_softmax(-1).gather(-1, ids[:, args.prompt :, None]).squeeze(-1)
            del logits
        naive_s = time.perf_counter() - start
    difference = (scores - reference).abs().max().item()
    return {
        "length": length,
        "ours_mib": ours.mib,
        "naive_mib": naive.mib,
        "ratio": naive.mib / max(ours.mib, 1e-9),
        "ours_s": ours_s,
        "naive_s": naive_s,
        "max_abs_difference": difference,
    }


def checks(rows: list[dict]) -> dict:
    first, last = rows[0], rows[-1]
    growth = last["ours_mib"] / max(first["ours_mib"], 1e-9)
    allowed = LINEAR_SLACK * last["length"] / first["length"]
    return {
        "ratio_at_longest": {"value": last["ratio"], "target": TARGET_RATIO, "passed": last["ratio"] >= TARGET_RATIO},
        "ours_growth": {"value": growth, "allowed": allowed, "passed": growth <= allowed},
        "agreement": {
            "value": max(r["max_abs_difference"] for r in rows),
            "passed": all(r["max_abs_difference"] < 1e-3 for r in rows),
        },
    }


def markdown(record: dict) -> str:
    a = record["settings"]
    lines = [
        f"# Teacher-scoring memory ({record['date']})",
        "",
        f"`python benchmarks/teacher_memory.py{' --smoke' if a['smoke'] else ''}` on {record['machine']}: a Qwen3 "
        f"teacher of hidden {a['hidden']} x {a['layers']} layers with a {a['vocab']:,}-row vocabulary, {a['batch']} "
        f"rollout(s) of {a['prompt']} prompt tokens plus the completion, float32. Peak memory above the resting "
        f"level ({'CUDA allocator' if a['device'] == 'cuda' else 'resident high-water mark'}).",
        "",
        "| completion tokens | ours (MiB) | naive log_softmax (MiB) | naive / ours | ours (s) | naive (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['length']:,} | {r['ours_mib']:.0f} | {r['naive_mib']:.0f} | {r['ratio']:.1f}x | "
            f"{r['ours_s']:.2f} | {r['naive_s']:.2f} |"
        )
    c = record["checks"]
    lines += [
        "",
        f"Checks: naive / ours at the longest length {c['ratio_at_longest']['value']:.1f}x (target >= "
        f"{TARGET_RATIO:g}x) {'✓' if c['ratio_at_longest']['passed'] else '✗'}; ours grows "
        f"{c['ours_growth']['value']:.2f}x from the shortest to the longest length (at most "
        f"{c['ours_growth']['allowed']:.2f}x allowed: linear) {'✓' if c['ours_growth']['passed'] else '✗'}; "
        f"largest difference between the two paths' log-probs {c['agreement']['value']:.1e} "
        f"{'✓' if c['agreement']['passed'] else '✗'}.",
    ]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    from scope_trl.optional import import_pyplot

    plt = import_pyplot("drawing the teacher-memory plot")
    lengths = [r["length"] for r in record["rows"]]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(lengths, [r["naive_mib"] for r in record["rows"]], "o-", label="naive logits + log_softmax")
    axis.plot(lengths, [r["ours_mib"] for r in record["rows"]], "o-", label="SCOPETrainer (fused LM head)")
    axis.set(
        xlabel="completion tokens",
        ylabel="peak memory above rest (MiB)",
        xscale="log",
        yscale="log",
        title=f"teacher scoring, vocabulary {record['settings']['vocab']:,}",
    )
    axis.set_xticks(lengths, [f"{n:,}" for n in lengths])
    axis.legend()
    axis.grid(alpha=0.3, which="both")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    import platform

    import torch

    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="teacher-memory-") as root:
        trainer = build_trainer(args, Path(root))
        measure(trainer, args, min(args.lengths))  # warm-up: lazily initialised kernels and allocator pools
        rows = []
        for length in args.lengths:
            rows.append(measure(trainer, args, length))
            r = rows[-1]
            print(
                f"  {length:>6} tokens: ours {r['ours_mib']:8.0f} MiB, naive {r['naive_mib']:8.0f} MiB "
                f"({r['ratio']:.1f}x)",
                flush=True,
            )
    machine = (torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.machine()} CPU") + (
        f", torch {torch.__version__}"
    )
    record = {"date": time.strftime("%Y-%m-%d"), "machine": machine, "settings": vars(args), "rows": rows}
    record["checks"] = checks(rows)
    stem = "teacher_memory_smoke" if args.smoke else "teacher_memory"
    return finish(record, output_dir, stem, markdown, plot, smoke=args.smoke)


if __name__ == "__main__":
    sys.exit(main())
