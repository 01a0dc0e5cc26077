"""Convert models: MiniMind checkpoints to Hugging Face folders (remote code or plain Llama) and back, LoRA merged in.

    # a MiniMind checkpoint -> a Hugging Face folder any transformers install loads (trust_remote_code=True)
    python scripts/convert_model.py --model_path out/full_sft_512.pth --out_dir out/export/sft-hf --format hf
    # -> a plain Llama folder (no remote code): only when its 2D RoPE is 1D on one branch (additive scheme)
    python scripts/convert_model.py --model_path out/full_sft_512.pth --out_dir out/export/sft-llama --format llama
    # back: a folder written above (or a plain Llama folder) -> a self-contained MiniMind checkpoint
    python scripts/convert_model.py --model_path out/export/sft-llama --out_path out/sft_back_512.pth --format native
    # LoRA merged into a full model (any format)
    python scripts/convert_model.py --model_path out/full_sft_512.pth --lora_path out/lora/lora_identity_512.pth \\
        --out_path out/sft_identity_512.pth --format native
    # a Hugging Face base + adapter -> one merged folder of the base's own architecture
    python scripts/convert_model.py --base_model out/models/SmolLM2-135M-Instruct \\
        --lora_path out/lora/hf_lora_hf_final.pth --out_dir out/export/smollm2-merged --format llama

Formats (model/convert.py; docs/CONVERSION.md):
  hf      safetensors + config.json (model_type "minimind", the 2D-RoPE settings, auto_map) + two self-contained
          modeling files (torch + transformers only) + generation_config.json (EOS, pad) + tokenizer. Loads with
          AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True) anywhere, and natively here.
  llama   a plain LlamaForCausalLM folder, refused (exit 2) when the model does not reduce to one exactly:
          the reference 2D-RoPE scheme, pe=fpe, MoE. config.json keeps the 2D-RoPE settings under
          "parallelmind", so this project decodes branches in parallel with it as with the checkpoint.
          A Hugging Face model (--base_model, + LoRA) is written as its own architecture.
  native  a MiniMind checkpoint .pth (--out_path): from a MiniMind folder, or a Llama folder whose
          architecture maps exactly (no biases, plain RoPE frequencies, silu/gelu); others are refused.

After writing, the output is loaded again (the hf folder through its remote code) and its logits on a probe
sequence are compared with the source's; the line printed says the largest difference (0 when bit-identical).
An existing output is refused unless --overwrite; folders are written under a temporary name and renamed.
Weights load only from safetensors or torch.load(weights_only=True).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import args as flags
from trainer.cli import ArgParser, UsageError, cli_main, make_parser, refuse_overwrite

PROG = "convert_model"
FORMATS = ("hf", "llama", "native")
PROBE_TOKENS = 24


def build_parser() -> ArgParser:
    p = make_parser(__doc__, PROG)
    flags.add_model_source_args(p)
    g = p.add_argument_group("conversion")
    g.add_argument("--format", dest="export_format", choices=FORMATS, required=True,
                   help="hf: remote-code folder; llama: plain Llama folder; native: MiniMind .pth")
    flags.add_rope_args(p, patch_rope=True, pe=False)
    flags.add_runtime_args(p, seed=None, device="cpu")
    flags.add_output_args(p, out_path=True, out_path_help="--format native: the checkpoint file (.pth)",
                          out_dir="", out_dir_is_output=False,
                          out_dir_help="--format hf / llama: the output folder (no default; required there)")
    flags.add_overwrite_arg(p, "replace an existing output")
    p.add_check(_check_flags)
    p.add_check(_check_paths, paths=True)
    return p


def _check_flags(args) -> None:
    if args.model_path is None and args.hf_base_model is None:
        raise UsageError("give the model to convert: --model_path (a MiniMind .pth or a saved folder) or "
                         "--base_model (a Hugging Face folder, with --lora_path to merge an adapter)")
    if args.export_format == "native":
        if args.out_dir:
            raise UsageError("--format native writes one checkpoint file: give --out_path FILE.pth, not --out_dir")
        if not args.out_path:
            raise UsageError("--format native needs --out_path (the checkpoint file to write, e.g. out/x_512.pth)")
        if Path(args.out_path).suffix not in (".pth", ".pt"):
            raise UsageError(f"--out_path {args.out_path}: a MiniMind checkpoint is a .pth file")
    else:
        if args.out_path:
            raise UsageError(f"--format {args.export_format} writes a folder: give --out_dir DIR, not --out_path")
        if not args.out_dir:
            raise UsageError(f"--format {args.export_format} needs --out_dir (the folder to write)")
    if args.export_format == "hf" and args.hf_base_model is not None:
        raise UsageError("--format hf exports MiniMind models; a Hugging Face model (--base_model) is already one: "
                         "use --format llama to write it (with its LoRA merged) as its own architecture")


def _check_paths(args) -> None:
    src = Path(args.model_path or args.hf_base_model).expanduser()
    if args.export_format == "native":
        out = Path(args.out_path).expanduser()
        flags.check_writable_file(out, "--out_path")
        refuse_overwrite(out, "--out_path", args.overwrite)
        if out.resolve() == src.resolve():
            raise UsageError(f"--out_path {args.out_path} is the input model; write to another file")
        return
    out = Path(args.out_dir).expanduser()
    flags.check_writable_dir(out, "--out_dir")
    if src.exists() and (out.resolve() == src.resolve() or out.resolve() in src.resolve().parents):
        raise UsageError(f"--out_dir {args.out_dir} holds the input model; write to another folder")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"--out_dir {args.out_dir} already exists and is not empty; pass --overwrite to replace it")


# --- the run ------------------------------------------------------------------------------------------

def _log(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _load(args):
    from model.loading import load_parallel_model

    return load_parallel_model(model_path=args.model_path, hf_base_model=args.hf_base_model,
                               lora_path=args.lora_path, lora_rank=args.lora_rank, tokenizer_path=args.tokenizer,
                               device=args.device or "cpu", dtype=args.dtype, rope_2d_ratio=args.rope_2d_ratio,
                               rope_2d_scheme=args.rope_2d_scheme, branch_stride=args.branch_stride,
                               patch_rope=args.patch_rope)


def _write(args, loaded, model) -> tuple[str, object]:
    """Write the output; -> (what was written, the model whose logits the output must reproduce)."""
    from model import convert
    from model.checkpoint import save_checkpoint

    src = loaded.source
    fmt = args.export_format
    meta = {"converted_from": src, **({"lora_merged": args.lora_path} if args.lora_path else {})}
    if fmt == "hf":
        if not loaded.is_minimind:
            raise ValueError(f"{src} is a {model.config.model_type!r} model: --format hf exports MiniMind models; "
                             "use --format llama to write it as its own architecture")
        return str(convert.export_hf_folder(model, loaded.tokenizer, args.out_dir, source=src)), model
    if fmt == "llama":
        if loaded.is_minimind:
            return str(convert.export_llama_folder(model, loaded.tokenizer, args.out_dir, source=src)), model
        return str(convert.export_plain_hf_folder(model, loaded.tokenizer, args.out_dir, source=src)), model
    native = model
    if not loaded.is_minimind:
        settings = {"rope_2d_ratio": args.rope_2d_ratio, "rope_2d_scheme": args.rope_2d_scheme,
                    "branch_stride": args.branch_stride}
        native = convert.minimind_from_hf(model, settings=settings, source=src)
    convert.check_vocab(native, loaded.tokenizer, src)
    save_checkpoint(args.out_path, native, tokenizer=loaded.tokenizer, meta=meta)
    return args.out_path, model


def _reload(args, written: str):
    """The written output, loaded the way its users load it (the hf folder through its remote code)."""
    from transformers import AutoModelForCausalLM

    from model.checkpoint import load_checkpoint

    if args.export_format == "native":
        return load_checkpoint(written)[0]
    remote = args.export_format == "hf"
    return AutoModelForCausalLM.from_pretrained(written, trust_remote_code=remote, dtype="auto").eval()


@cli_main(build_parser)
def main(args) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    from model import convert

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    print(f"{PROG}: loading {args.model_path or args.hf_base_model}"
          + (f" with the LoRA {args.lora_path} (merged)" if args.lora_path else ""), flush=True)
    loaded = _load(args)
    model = convert.merged(loaded.model)
    print(f"{PROG}: writing --format {args.export_format} to {args.out_dir or args.out_path}", flush=True)
    written, reference = _write(args, loaded, model)
    print(f"{PROG}: loading {written} again to compare its logits with the source's", flush=True)
    out = _reload(args, written).to(next(reference.parameters()).device)
    vocab = min(int(reference.config.vocab_size), len(loaded.tokenizer))
    probe = torch.randint(0, vocab, (1, PROBE_TOKENS), generator=torch.Generator().manual_seed(0))
    diff = convert.max_logit_difference(reference, out, probe.to(next(out.parameters()).device))
    params = sum(p.numel() for p in out.parameters())
    merged = f", LoRA {args.lora_path} merged" if args.lora_path else ""
    print(f"{PROG}: wrote {written} (--format {args.export_format}, {params / 1e6:.2f}M parameters{merged}); "
          f"max |logit difference| vs the source on a {PROBE_TOKENS}-token probe: {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
