"""Verify 2D-RoPE patching and parallel decoding on a real Hugging Face model; JSON report.

    python scripts/fetch_smollm2.py                                     # once: out/models/SmolLM2-135M-Instruct
    python scripts/verify_hf_model.py --model out/models/SmolLM2-135M-Instruct
    python -m scripts.verify_hf_model --model <folder> --max_new_tokens 48 --out out/verify_hf_model.json

Every check compares against an oracle computed with the UNPATCHED model, with no tolerance:

1. ``patched_single_branch``: logits of the patched model on single-branch inputs equal the unpatched
   model's bit for bit, both for a plain `[1, T]` call and for a batch of one-branch layouts with
   `[B, T, 3]` positions and the 4-D columnar mask (the unpatched model gets the same mask).
2. ``isolated_parallel_chat``: several chat prompts decoded greedily as the branches of ONE sample
   (isolated mask, one forward per step) give exactly the tokens `model.generate` gives for each
   prompt alone (greedy, stopping at the tokenizer's EOS).
3. ``prefix_sharing``: a shared context (the main) and several questions (the branches) decoded with
   `branch_stride=0` and the isolated mask give exactly what `model.generate` gives for each
   "context + question" alone. Reported as skipped when the generation engine does not support
   branch stride 0.

Exit status: 0 when every check that ran passed, 1 when one failed, 2 on bad input (missing
folder, a model that cannot be patched).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from evaluation.benchmarking import emit_json, environment
from trainer import args as flags
from trainer.cli import ArgParser, UsageError, cli_main, make_parser

PROMPTS = ["What is the capital of France?", "How many legs does a spider have?",
           "Write a haiku about the sea.", "Give me three tips for learning to code.",
           "What is 12 times 7?", "Explain what a rainbow is in one sentence."]
CONTEXT = ("Big Ben is the nickname of the Great Bell of the clock at the north end of the Palace of Westminster "
           "in London. The tower was completed in 1859 and was renamed Elizabeth Tower in 2012. The clock's four "
           "dials are 7 metres in diameter.")
QUESTIONS = ["In which city is Big Ben?", "When was the tower completed?", "What is the tower called since 2012?",
             "How large are the clock's dials?"]


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "verify_hf_model")
    p.add_check(_check_model_folder, paths=True)  # first: the model must be a local folder
    flags.add_model_source_args(p, checkpoint=False, lora=False, tokenizer=False, hf_aliases=("--model",),
                                hf_required=True)
    c = p.add_argument_group("checks")
    flags.add_prompts_arg(c, default=PROMPTS, nargs="+", help="chat prompts for the parallel chat check")
    c.add_argument("--context", default=CONTEXT, help="shared context of the prefix-sharing check")
    c.add_argument("--questions", nargs="+", default=QUESTIONS, help="questions about --context")
    flags.add_max_new_tokens_arg(c, 32, minimum=1)
    c.add_argument("--attn_implementation", choices=["sdpa", "eager"], default="sdpa",
                   help="attention of the Hugging Face model")
    flags.add_rope_args(p, stride=False, schemes=("additive",), ratio_default=0.5)  # additive: one branch == base
    flags.add_runtime_args(p, seed=None, device="cpu", dtype="float32")
    flags.add_output_args(p, out_path=True, out_path_help="also write the JSON report here")
    return p


def _check_model_folder(args) -> None:
    if not (Path(args.hf_base_model) / "config.json").is_file():
        raise UsageError(f"--model {args.hf_base_model}: no config.json there (fetch SmolLM2 with "
                         "scripts/fetch_smollm2.py)")


def chat_ids(tok, messages: list[dict]) -> list[int]:
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def eos_ids(tok) -> list[int]:
    ids = {tok.eos_token_id}
    for t in ("<|im_end|>", "<|endoftext|>"):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i != tok.unk_token_id:
            ids.add(i)
    return sorted(i for i in ids if i is not None)


@torch.no_grad()
def reference_generate(model, ids: list[int], eos: list[int], n: int, pad: int) -> list[int]:
    """Greedy `model.generate` of one prompt; the generated tokens without a final EOS."""
    x = torch.tensor([ids], device=model.device)
    out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n,
                         eos_token_id=eos, pad_token_id=pad, top_p=None, top_k=None, temperature=None)[0, len(ids):]
    toks = out.tolist()
    return toks[:-1] if toks and toks[-1] in eos else toks


def single_branch_logits(model, prompts_ids: list[list[int]], patched: bool) -> tuple[list, list]:
    """Plain `[1, T]` logits per prompt, and the real-token logits of one batch of one-branch layouts."""
    from parallel.columnar import build_attention_mask, build_flat_linear_layout

    plain = [model(torch.tensor([ids], device=model.device)).logits[0] for ids in prompts_ids]
    lay = build_flat_linear_layout(None, [{"branches": [ids]} for ids in prompts_ids], model.device)
    mask = build_attention_mask(lay.time_ids, lay.branch_ids, "columnar")
    kw = {"position_ids": lay.position_ids()} if patched else {}  # unpatched: its own arange positions
    logits = model(lay.input_ids, attention_mask=mask, **kw).logits
    real = lay.time_ids >= 0
    return plain, [logits[b][real[b]] for b in range(len(prompts_ids))]


def compare_logits(a: list[torch.Tensor], b: list[torch.Tensor]) -> dict:
    diffs = [(x.float() - y.float()).abs().max().item() for x, y in zip(a, b)]
    return {"bit_exact": all(torch.equal(x, y) for x, y in zip(a, b)), "max_abs_diff": max(diffs)}


def token_report(prompts: list[str], got: list[list[int]], ref: list[list[int]], tok) -> dict:
    rows = []
    for p, g, r in zip(prompts, got, ref):
        first = next((i for i, (x, y) in enumerate(zip(g, r)) if x != y), None if len(g) == len(r) else min(len(g), len(r)))
        rows.append({"prompt": p, "tokens_identical": g == r, "num_tokens": len(r), "first_difference": first,
                     "text": tok.decode(r, skip_special_tokens=True)})
    return {"passed": all(r["tokens_identical"] for r in rows), "prompts": rows}


def log(msg: str) -> None:
    print(f"[verify_hf_model] {msg}", file=sys.stderr, flush=True)


def run(args) -> dict:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from model.device import resolve_device, resolve_dtype
    from model.parallel_generation import ParallelGenerator
    from model.tokenizer import load_tokenizer
    from parallel.columnar import patch_model_with_interleaved_2d_rope

    hf_logging.disable_progress_bar()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    tok = load_tokenizer(args.hf_base_model)
    model = AutoModelForCausalLM.from_pretrained(args.hf_base_model, dtype=dtype,
                                                 attn_implementation=args.attn_implementation).to(device).eval()
    eos = eos_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    n = args.max_new_tokens
    chats = [chat_ids(tok, [{"role": "user", "content": p}]) for p in args.prompts]
    # prefix sharing: the main is everything up to the question, each branch the rest of its chat
    main_text = f"Context: {args.context}\nQuestion: "
    full = [chat_ids(tok, [{"role": "user", "content": main_text + q}]) for q in args.questions]
    cut = min(len(_common_prefix(full[0], f)) for f in full[1:]) if len(full) > 1 else len(full[0]) - 1
    main_ids, branch_ids = full[0][:cut], [f[cut:] for f in full]
    report = {"model": str(args.hf_base_model), "model_type": model.config.model_type, "max_new_tokens": n,
              "rope_2d_ratio": args.rope_2d_ratio, "env": environment(device, dtype), "checks": {}}
    t0 = time.perf_counter()
    log(f"unpatched reference: logits and model.generate of {len(chats)} chat prompts and {len(full)} "
        f"context + question prompts, {n} new tokens each")
    with torch.no_grad():
        ref_plain, ref_layout = single_branch_logits(model, chats, patched=False)
        ref_chat = [reference_generate(model, ids, eos, n, pad) for ids in chats]
        ref_prefix = [reference_generate(model, f, eos, n, pad) for f in full]
    report["seconds_reference"] = round(time.perf_counter() - t0, 2)
    log(f"reference done in {report['seconds_reference']} s; patching")

    patch_model_with_interleaved_2d_rope(model, ratio=args.rope_2d_ratio, scheme=args.rope_2d_scheme)
    report["parallelmind"] = model.config.parallelmind
    t0 = time.perf_counter()
    with torch.no_grad():
        plain, layout = single_branch_logits(model, chats, patched=True)
    c1 = {"plain_call": compare_logits(plain, ref_plain), "one_branch_layouts": compare_logits(layout, ref_layout),
          "prompts": len(chats), "tokens": sum(len(c) for c in chats)}
    c1["passed"] = c1["plain_call"]["bit_exact"] and c1["one_branch_layouts"]["bit_exact"]
    report["checks"]["patched_single_branch"] = c1

    log(f"single branch: bit-exact {c1['passed']}; isolated parallel chat of {len(chats)} branches")
    gen = ParallelGenerator(model, tok, mask_mode="isolated")
    res = gen.generate([{"branches": chats}], eos_token_ids=eos, max_new_tokens=n)
    c2 = token_report(args.prompts, [b.token_ids for b in res[0].branches], ref_chat, tok)
    c2["branches_in_one_sample"] = len(chats)
    report["checks"]["isolated_parallel_chat"] = c2

    log(f"isolated parallel chat: token-identical {c2['passed']}; prefix sharing")
    c3 = prefix_sharing_check(model, tok, main_ids, branch_ids, args.questions, ref_prefix, eos, n)
    report["checks"]["prefix_sharing"] = c3
    report["seconds_patched"] = round(time.perf_counter() - t0, 2)
    ran = [c["passed"] for c in report["checks"].values() if c.get("passed") is not None]
    report["passed"] = all(ran)
    return report


def prefix_sharing_check(model, tok, main_ids: list[int], branch_ids: list[list[int]], questions: list[str],
                         ref_prefix: list[list[int]], eos: list[int], n: int) -> dict:
    """Prefix sharing (branch_stride 0, isolated): the main prefilled once, each question continuing it, must
    give the tokens of model.generate on main + question."""
    from model.parallel_generation import ParallelGenerator

    c3 = {"main_tokens": len(main_ids), "questions": len(branch_ids)}
    try:
        shared = ParallelGenerator(model, tok, mask_mode="isolated", branch_stride=0)
        supported = shared.branch_stride == 0
    except ValueError as e:
        supported, c3["reason"] = False, str(e)
    if supported:
        res = shared.generate([{"main": main_ids, "branches": branch_ids}], eos_token_ids=eos, max_new_tokens=n)
        c3.update(token_report(questions, [b.token_ids for b in res[0].branches], ref_prefix, tok))
    else:
        c3.setdefault("reason", f"this generation engine decodes branch_stride 0 as stride {shared.branch_stride}: "
                                "prefix sharing is not available in it")
        c3.update({"skipped": True, "passed": None})
    return c3


def _common_prefix(a: list[int], b: list[int]) -> list[int]:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return a[:k]


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    report = run(args)  # a ValueError (e.g. a model type 2D RoPE cannot patch) is one line and exit 2
    emit_json(report, args.out_path)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
