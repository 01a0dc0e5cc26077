"""Teach a pretrained chat model columnar decoding with LoRA, offline: self-distillation, tuning, before/after.

Run from the repo root (SmolLM2 from `python scripts/fetch_smollm2.py`; `make demo-hf` runs this):

    python scripts/hf_columnar_experiment.py --model out/models/SmolLM2-135M-Instruct \\
        --out_dir out/hf_columnar --n_train 160 --n_eval 32 --epochs 8

1. Data: the bundled prompt set (parallel_data/demo/chat_prompts.py), answered by the base model itself,
   one prompt at a time (isolated parallel decoding, greedy, which equals `generate` of each prompt
   alone): `train.jsonl` / `heldout.jsonl` conversations. Kept and reused when the model and settings
   are the same.
2. Before: for N in --branches (1, 2, 4, 8), the held-out conversations as samples of N branches under
   the columnar layout: the NLL per answer token of the reference answers, and greedy columnar
   decoding of the N prompts together compared with the answers the same model gives one prompt at a
   time (N = 1): exact match and token agreement over the first --max_new_tokens tokens, and the
   teacher-forced agreement (each branch fed its N = 1 answer: the share of answer positions whose
   columnar argmax is that answer's token, i.e. the flips the other branches cause without the cascade).
3. LoRA tuning in columnar mode on the training conversations (trainer/train_hf_lora.py, parallel_sft,
   --min_train_branches to max(--branches) branches per sample; by default max(--branches), the hard case).
4. After: step 2 again with the adapter. Writes `results.json`, `results.png` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import args as flags
from trainer.cli import ArgParser, UsageError, check_flags_first, cli_main, make_parser, positive_int

DEFAULT_MODEL = "out/models/SmolLM2-135M-Instruct"


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "hf_columnar_experiment")
    flags.add_model_source_args(p, checkpoint=False, lora=False, tokenizer=False, hf_aliases=("--model",))
    p.set_defaults(hf_base_model=DEFAULT_MODEL)
    flags.add_rope_args(p, pe=False)
    flags.add_output_args(p, out_dir="out/hf_columnar", out_dir_help="data, adapter and results go here")
    g = p.add_argument_group("experiment")
    g.add_argument("--n_train", type=positive_int, default=160, help="training prompts")
    g.add_argument("--n_eval", type=positive_int, default=32, help="held-out prompts")
    flags.add_max_new_tokens_arg(g, 32, minimum=1)
    flags.add_branch_counts_arg(g, default=[1, 2, 4, 8], help="comma-separated branch counts N to evaluate")
    t = p.add_argument_group("LoRA tuning (trainer/train_hf_lora.py)")
    flags.add_epochs_arg(t, 8)
    flags.add_learning_rate_arg(t, 2e-3)
    flags.add_lora_rank_arg(t, 8, "LoRA rank")
    flags.add_batch_size_arg(t, 1, "samples per optimizer step")
    t.add_argument("--min_train_branches", type=positive_int, default=None,
                   help="fewest branches per training sample (the most is max(--branches); default: the most, "
                        "so every sample has the hardest case's N branches)")
    flags.add_lora_layer_args(t)
    flags.add_self_distill_args(p)
    flags.add_runtime_args(p, seed=0, dtype=False)
    p.set_defaults(lora_rank=8, rope_2d_ratio=0.5, branch_stride=128)
    p.add_check(_check, paths=True)
    return p


def _check(args) -> None:
    if args.min_train_branches is None:
        args.min_train_branches = max(args.branches)
    if args.min_train_branches > max(args.branches):
        raise UsageError(f"--min_train_branches {args.min_train_branches} is more than the largest of --branches "
                         f"({max(args.branches)})")
    if not (Path(args.hf_base_model) / "config.json").is_file():
        raise UsageError(f"--model {args.hf_base_model}: no config.json there (fetch SmolLM2 with "
                         "`python scripts/fetch_smollm2.py`)")


if __name__ == "__main__":  # a bad flag is reported before torch is imported
    check_flags_first(build_parser)

import torch  # noqa: E402

from model.loading import load_parallel_model  # noqa: E402
from model.parallel_generation import ParallelGenerator  # noqa: E402
from parallel_data.demo.chat_prompts import chat_prompts  # noqa: E402
from parallel_data.io import write_jsonl_atomic  # noqa: E402
from parallel_data.parallel_collator import ParallelCollator  # noqa: E402
from parallel_data.parallel_dataset import ParallelSFTDataset  # noqa: E402
from trainer.logprobs import target_logits  # noqa: E402
from trainer.loss import CrossEntropyLoss  # noqa: E402


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def chunks(items: list, n: int) -> list[list]:
    return [items[i:i + n] for i in range(0, len(items), n)]


def prompt_ids(tok, prompt: str) -> list[int]:
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def distil(args, out: Path) -> tuple[Path, Path]:
    """The base model's own isolated greedy answers: train.jsonl and heldout.jsonl (reused when present)."""
    settings = {"model": str(Path(args.hf_base_model).resolve()), "n_train": args.n_train, "n_eval": args.n_eval,
                "max_new_tokens": args.max_new_tokens, "seed": args.seed, "version": 2}
    train, held, meta = out / "train.jsonl", out / "heldout.jsonl", out / "data.json"
    if meta.is_file() and json.loads(meta.read_text()) == settings and train.is_file() and held.is_file():
        log(f"data: reusing {train} and {held}")
        return train, held
    loaded = load_parallel_model(hf_base_model=args.hf_base_model, rope_2d_ratio=args.rope_2d_ratio,
                                 branch_stride=args.branch_stride, rope_2d_scheme=args.rope_2d_scheme)
    tok, gen = loaded.tokenizer, ParallelGenerator(loaded.model, loaded.tokenizer, mask_mode="isolated",
                                                   branch_stride=args.branch_stride)
    prompts = chat_prompts(args.n_train + args.n_eval, seed=args.seed)
    records, t0 = [], time.time()
    for group in chunks(prompts, 64):  # 8 samples of 8 isolated branches per call, each sample a row
        res = gen.generate([{"branches": [prompt_ids(tok, p) for p in g]} for g in chunks(group, 8)],
                           max_new_tokens=args.max_new_tokens)
        for p, b in zip(group, [b for r in res for b in r.branches]):
            records.append({"conversations": [{"role": "user", "content": p},
                                              {"role": "assistant", "content": b.text.strip()}]})
        log(f"distillation: {len(records)}/{len(prompts)} answers ({time.time() - t0:.0f} s)")
    empty = [i for i, r in enumerate(records) if not r["conversations"][1]["content"]]
    if empty:  # an answer that is only EOS or whitespace gives no target: left out, and said so
        log(f"distillation: {len(empty)} empty answers left out (prompts {empty[:8]})")
    keep = [r for i, r in enumerate(records) if i not in set(empty)]
    n_train = args.n_train - sum(i < args.n_train for i in empty)
    write_jsonl_atomic(train, keep[:n_train])
    write_jsonl_atomic(held, keep[n_train:])
    meta.write_text(json.dumps(settings, indent=1))
    return train, held


def agreement(a: list[int], b: list[int], k: int) -> float:
    """Share of the first k positions where both answers have the same token (a missing token disagrees)."""
    a, b = a[:k], b[:k]
    n = max(len(a), len(b))
    return 1.0 if n == 0 else sum(x == y for x, y in zip(a, b)) / n


@torch.no_grad()
def forced_agreement(model, collate, prompts: list[list[int]], alone: list[list[int]], n: int) -> float:
    """Teacher-forced agreement: every branch is fed its N = 1 answer, and the share of answer positions where the
    columnar argmax is that answer's token. 1 at N = 1 by construction; below 1 where the other branches flip a
    prediction by themselves (greedy agreement adds the cascade: one flipped token changes what follows)."""
    same = total = 0
    units = [{"input_ids": p + a, "loss_mask": [0] * len(p) + [1] * len(a)} for p, a in zip(prompts, alone) if a]
    for group in chunks(units, n):
        logits, labels, _ = target_logits(model, collate([{"branches": group}]), "columnar")
        same, total = same + int((logits.argmax(-1) == labels).sum()), total + labels.numel()
    return same / max(total, 1)


@torch.no_grad()
def evaluate(args, model, tok, held: Path) -> dict:
    """{N: {"nll", "exact", "agreement"}} over the held-out conversations (see the module docstring)."""
    units = list(ParallelSFTDataset(tok, data_path=str(held), max_seq_len=512).all_units())
    prompts = [u["input_ids"][:u["loss_mask"].index(1)] for u in units]
    collate = ParallelCollator(tok, branch_stride=args.branch_stride).collate
    loss_fn, model = CrossEntropyLoss("columnar"), model.eval()
    gen = ParallelGenerator(model, tok, mask_mode="columnar", branch_stride=args.branch_stride)
    out, alone = {}, None
    for n in sorted(args.branches):
        total, targets = 0.0, 0
        samples = [{"branches": group} for group in chunks(units, n)]
        for batch in chunks(samples, max(1, 8 // n)):  # a batch of samples == its samples one by one (tested)
            o = loss_fn(model, collate(batch))
            total, targets = total + float(o.loss), targets + o.targets
        res = gen.generate([{"branches": group} for group in chunks(prompts, n)], max_new_tokens=args.max_new_tokens)
        answers = [b.token_ids for r in res for b in r.branches]  # every sample a row of its own
        alone = answers if n == 1 else alone
        row = {"nll": total / targets}
        if alone is not None:
            k = args.max_new_tokens
            row["exact"] = sum(a[:k] == b[:k] for a, b in zip(answers, alone)) / len(answers)
            row["agreement"] = sum(agreement(a, b, k) for a, b in zip(answers, alone)) / len(answers)
            row["tf_agreement"] = forced_agreement(model, collate, prompts, alone, n)
        row["examples"] = [tok.decode(a) for a in answers[:2]]
        out[n] = row
        log(f"  N={n}: NLL {row['nll']:.4f}" + (f", exact {row['exact']:.2f}, agreement {row['agreement']:.3f}, "
                                                 f"teacher-forced agreement {row['tf_agreement']:.3f}"
                                                 if "exact" in row else ""))
    return out


def train_lora(args, train: Path, out: Path) -> Path:
    from trainer import train_hf_lora

    argv = ["--base_model", args.hf_base_model, "--data_path", str(train), "--data_mode", "parallel_sft",
            "--batch_size", str(args.batch_size), "--batch_by_samples",
            "--max_branches_per_sample", str(max(args.branches)),
            "--min_branches_per_sample", str(args.min_train_branches),
            "--branch_stride", str(args.branch_stride), "--rope_2d_ratio", str(args.rope_2d_ratio),
            *(["--rope_2d_scheme", args.rope_2d_scheme] if args.rope_2d_scheme else []),
            "--lora_rank", str(args.lora_rank), "--epochs", str(args.epochs), "--learning_rate", str(args.learning_rate),
            *(["--lora_alpha", str(args.lora_alpha)] if args.lora_alpha is not None else []),
            *(["--lora_dropout", str(args.lora_dropout)] if args.lora_dropout else []),
            *(["--lora_target_modules", *args.lora_target_modules] if args.lora_target_modules else []),
            *(["--self_distill", "--distill_alpha", str(args.distill_alpha), "--distill_temperature",
               str(args.distill_temperature)] if args.self_distill else []),
            "--max_seq_len", "256", "--log_interval", "5", "--save_interval", "100000", "--out_dir", str(out),
            "--seed", str(args.seed), "--overwrite", "--num_workers", "0"]
    log("training: python trainer/train_hf_lora.py " + " ".join(argv))
    if train_hf_lora.main(argv) != 0:
        raise SystemExit("the LoRA run failed (see above)")
    return out / "lora" / "hf_lora_hf_final.pth"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in (("before", "o--"), ("after", "o-")):
        ns = sorted(int(n) for n in results[name])
        a.plot(ns, [results[name][n]["nll"] for n in ns], style, label=f"{name} LoRA")
        b.plot(ns, [results[name][n]["agreement"] for n in ns], style, label=f"{name} LoRA: token agreement")
        b.plot(ns, [results[name][n]["exact"] for n in ns], style.replace("o", "s"), alpha=0.6,
               label=f"{name} LoRA: exact match")
        if name == "after":
            b.plot(ns, [results[name][n]["tf_agreement"] for n in ns], "^:", alpha=0.8,
                   label="after LoRA: teacher-forced agreement")
    a.set(xscale="log", xlabel="branches N (columnar)", ylabel="NLL per answer token", title="held-out reference NLL")
    b.set(xscale="log", xlabel="branches N (columnar)", ylabel="vs one prompt at a time", ylim=(0, 1.05),
          title="greedy columnar answers")
    for ax in (a, b):
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train, held = distil(args, out)
    base = load_parallel_model(hf_base_model=args.hf_base_model, rope_2d_ratio=args.rope_2d_ratio,
                               branch_stride=args.branch_stride, rope_2d_scheme=args.rope_2d_scheme)
    log("before LoRA:")
    before = evaluate(args, base.model, base.tokenizer, held)
    del base
    adapter = train_lora(args, train, out)
    tuned = load_parallel_model(hf_base_model=args.hf_base_model, lora_path=str(adapter))
    log("after LoRA:")
    after = evaluate(args, tuned.model, tuned.tokenizer, held)
    results = {"before": before, "after": after, "settings": {k: v for k, v in vars(args).items()},
               "adapter": str(adapter), "seconds": round(time.time() - t0, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    plot(results, out / "results.png")
    print(f"{'N':>3} | {'NLL before':>10} {'after':>8} | {'exact before':>12} {'after':>6} | "
          f"{'agree before':>12} {'after':>6} | {'forced before':>13} {'after':>6}")
    for n in sorted(before):
        b, a = before[n], after[n]
        print(f"{n:>3} | {b['nll']:>10.4f} {a['nll']:>8.4f} | {b['exact']:>12.2f} {a['exact']:>6.2f} | "
              f"{b['agreement']:>12.3f} {a['agreement']:>6.3f} | {b['tf_agreement']:>13.3f} {a['tf_agreement']:>6.3f}")
    print(f"results: {out / 'results.json'}, plot: {out / 'results.png'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
