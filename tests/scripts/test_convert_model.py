"""scripts/convert_model.py and model/convert.py: exported folders compute what the project computes.

Oracles: the project's own greedy generation (ParallelGenerator) and logits of the native checkpoint;
the `hf` folder is loaded in a fresh interpreter (`python -I`, cwd elsewhere, no PYTHONPATH) where this
repository cannot be imported; round trips (native -> folder -> native) give the same weights and
bit-identical logits; a merged LoRA gives the logits of base + adapter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import tiny_minimind

from model.checkpoint import load_checkpoint, save_checkpoint
from model.tokenizer import load_tokenizer
from parallel.layout import build_flat_linear_layout
from parallel.masks import build_attention_mask
from parallel.sampling import SamplingParams
from scripts import convert_model

PROMPT = "the quick brown fox jumps over"
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def _ckpt(tmp_path: Path, tok, name: str, **overrides) -> Path:
    model = tiny_minimind(seed=len(name), vocab_size=len(tok), **overrides)
    path = tmp_path / f"{name}.pth"
    save_checkpoint(path, model, tokenizer=tok)
    return path


def _convert(*argv) -> int:
    return convert_model.main([str(a) for a in argv])


def _project_greedy(model, tok, prompt_ids: list[int]) -> list[int]:
    from model.parallel_generation import ParallelGenerator

    gen = ParallelGenerator(model, tok, mask_mode="columnar")
    res = gen.generate([{"branches": [prompt_ids]}], SamplingParams(do_sample=False), max_new_tokens=NEW_TOKENS)
    return list(res[0].branches[0].token_ids)


def _two_branch_inputs(tok, stride: int) -> dict:
    """One sample with a main and two branches: ids `[1, T]`, positions `[1, T, 3]`, columnar mask `[1, 1, T, T]`."""
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    lay = build_flat_linear_layout(None, [{"main": ids("context: seven birds"),
                                           "branches": [ids("question one"), ids("another longer question two")]}],
                                   branch_stride=stride)
    return {"input_ids": lay.input_ids, "position_ids": lay.position_ids(),
            "attention_mask": build_attention_mask(lay.time_ids, lay.branch_ids, "columnar")}


REMOTE = textwrap.dedent("""
    import importlib.util, json, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    # this repository must not be importable here
    assert all(importlib.util.find_spec(m) is None for m in ("model", "parallel", "trainer")), sys.path
    job = json.load(open(sys.argv[1]))
    out = {}
    for name, folder in job["folders"].items():
        m = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        prompt = torch.tensor([tok(job["text"], add_special_tokens=False)["input_ids"]])
        gen = m.generate(prompt, max_new_tokens=job["new_tokens"], do_sample=False)
        two = torch.load(job["two_branch"][name], weights_only=True)
        with torch.no_grad():
            out[name] = {"generated": gen[0, prompt.shape[1]:].clone(), "logits": m(input_ids=prompt).logits,
                         "two_branch": m(**two).logits, "class": type(m).__module__ + "." + type(m).__name__,
                         "prompt": prompt[0],
                         "eos": torch.tensor(m.generation_config.eos_token_id)}
    torch.save(out, job["out"])
""")


def _run_remote(tmp_path: Path, job: dict) -> dict:
    """Load the folders in `job` in a fresh interpreter without this repository -> its results."""
    script, job_file, work = tmp_path / "remote.py", tmp_path / "job.json", tmp_path / "elsewhere"
    work.mkdir()
    script.write_text(REMOTE)
    job["out"] = str(tmp_path / "remote_out.pt")
    job_file.write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf_modules")
    proc = subprocess.run([sys.executable, "-I", str(script), str(job_file)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(job["out"], weights_only=True)


def _strip_eos(ids: list[int], eos) -> list[int]:
    eos = set(eos.reshape(-1).tolist())
    return ids[:-1] if ids and ids[-1] in eos else ids


CASES = {"additive": {}, "reference": {"rope_2d_scheme": "reference"}, "moe": {"use_moe": True},
         "fpe": {"pe": "fpe", "tie_word_embeddings": False}}


def test_hf_folder_runs_without_the_repository_and_matches_the_project(tmp_path, tok):
    prompt = tok(PROMPT, add_special_tokens=False)["input_ids"]
    job = {"folders": {}, "two_branch": {}, "text": PROMPT, "new_tokens": NEW_TOKENS}
    natives = {}
    for name, kw in CASES.items():
        ckpt = _ckpt(tmp_path, tok, name, **kw)
        out = tmp_path / f"{name}-hf"
        assert _convert("--model_path", ckpt, "--out_dir", out, "--format", "hf") == 0
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["model_type"] == "minimind" and set(cfg["auto_map"]) == {"AutoConfig", "AutoModelForCausalLM"}
        assert {k: cfg[k] for k in ("rope_2d_scheme", "pe", "use_moe")} == \
            {"rope_2d_scheme": kw.get("rope_2d_scheme", "additive"), "pe": kw.get("pe", "rope"),
             "use_moe": kw.get("use_moe", False)}
        assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
        gen_cfg = json.loads((out / "generation_config.json").read_text())
        assert (gen_cfg["eos_token_id"], gen_cfg["pad_token_id"]) == (tok.eos_token_id, tok.pad_token_id)
        natives[name] = load_checkpoint(ckpt)[0]
        two = _two_branch_inputs(tok, natives[name].config.branch_stride)
        torch.save(two, tmp_path / f"{name}-two.pt")
        job["folders"][name], job["two_branch"][name] = str(out), str(tmp_path / f"{name}-two.pt")
    remote = _run_remote(tmp_path, job)
    for name, model in natives.items():
        r = remote[name]
        assert r["prompt"].tolist() == prompt  # the folder's own tokenizer files
        assert r["class"].endswith("modeling_parallelmind.ParallelMindForCausalLM")
        assert set(r["eos"].reshape(-1).tolist()) == {tok.eos_token_id}
        with torch.no_grad():
            assert torch.equal(r["logits"], model(input_ids=torch.tensor([prompt])).logits), name
            two = torch.load(tmp_path / f"{name}-two.pt", weights_only=True)
            assert torch.equal(r["two_branch"], model(**two).logits), name
        assert _strip_eos(r["generated"].tolist(), r["eos"]) == _project_greedy(model, tok, prompt), name


def test_additive_scheme_on_one_branch_is_plain_rope_and_reference_is_not():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from parallel.rope2d import Interleaved2DRoPE

    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, rope_theta=1e6)
    plain = LlamaRotaryEmbedding(cfg)
    t = torch.arange(40)[None]
    pos3 = torch.stack([torch.zeros_like(t), t, t], dim=-1)  # branch coordinate 0, time = flat index
    x = torch.zeros(1, 1, 40, 16)
    want = plain(x, t)
    for ratio in (0.25, 0.5, 1.0):
        got = Interleaved2DRoPE(plain.inv_freq, ratio=ratio, scheme="additive")(x, pos3)
        assert all(torch.equal(g, w) for g, w in zip(got, want))
        ref = Interleaved2DRoPE(plain.inv_freq, ratio=ratio, scheme="reference")(x, pos3)
        assert not torch.allclose(ref[1], want[1])


@pytest.mark.parametrize("tied", [True, False])
def test_llama_folder_is_plain_and_generates_as_the_project(tmp_path, tok, tied):
    from transformers import AutoModelForCausalLM

    from model.loading import load_parallel_model

    ckpt = _ckpt(tmp_path, tok, "dense", tie_word_embeddings=tied, rope_theta=5e4, rms_norm_eps=1e-6,
                 rope_2d_ratio=0.25)
    out = tmp_path / "llama"
    assert _convert("--model_path", ckpt, "--out_dir", out, "--format", "llama") == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llama" and "auto_map" not in cfg and not list(out.glob("*.py"))
    assert cfg["rms_norm_eps"] == 1e-6 and cfg["rope_parameters"]["rope_theta"] == 5e4
    assert cfg["tie_word_embeddings"] is tied
    native = load_checkpoint(ckpt)[0]
    llama = AutoModelForCausalLM.from_pretrained(out).eval()  # plain transformers, no remote code
    assert type(llama).__name__ == "LlamaForCausalLM"
    prompt = tok(PROMPT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        assert torch.equal(llama(input_ids=torch.tensor([prompt])).logits, native(input_ids=torch.tensor([prompt])).logits)
    eos = torch.tensor(llama.generation_config.eos_token_id)
    gen = llama.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False)[0, len(prompt):]
    assert _strip_eos(gen.tolist(), eos) == _project_greedy(native, tok, prompt)
    # the project re-patches the folder from config.parallelmind: parallel decoding as the checkpoint
    loaded = load_parallel_model(model_path=str(out))
    assert loaded.kind == "hf" and loaded.branch_stride == native.config.branch_stride
    two = _two_branch_inputs(tok, native.config.branch_stride)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**two).logits, native(**two).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fmt", ["hf", "llama"])
def test_round_trip_back_to_native_is_identical(tmp_path, tok, fmt):
    ckpt = _ckpt(tmp_path, tok, "rt", tie_word_embeddings=False, branch_stride=32, mask_mode="isolated")
    out, back = tmp_path / "folder", tmp_path / "back.pth"
    assert _convert("--model_path", ckpt, "--out_dir", out, "--format", fmt) == 0
    assert _convert("--model_path", out, "--out_path", back, "--format", "native") == 0
    a, pa = load_checkpoint(ckpt)
    b, pb = load_checkpoint(back)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    for key in ("rope_2d_scheme", "rope_2d_ratio", "branch_stride", "mask_mode", "rope_theta", "rms_norm_eps",
                "tie_word_embeddings", "intermediate_size", "num_key_value_heads"):
        assert getattr(a.config, key) == getattr(b.config, key), key
    assert pb["tokenizer_files"]["tokenizer.json"] == pa["tokenizer_files"]["tokenizer.json"]
    two = _two_branch_inputs(tok, 32)
    with torch.no_grad():
        assert torch.equal(a(**two).logits, b(**two).logits)


def _tiny_llama(tmp_path: Path, tok, **kw) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, rope_theta=1e4, tie_word_embeddings=True, **kw)
    torch.manual_seed(0)
    folder = tmp_path / "plain-llama"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_plain_llama_folder_to_minimind_and_back(tmp_path, tok):
    from transformers import AutoModelForCausalLM

    src = _tiny_llama(tmp_path, tok)
    ckpt, again = tmp_path / "from_llama.pth", tmp_path / "again"
    assert _convert("--model_path", src, "--out_path", ckpt, "--format", "native", "--rope_2d_ratio", "0.25",
                    "--branch_stride", "64") == 0
    native, _ = load_checkpoint(ckpt)
    assert (native.config.rope_2d_ratio, native.config.branch_stride) == (0.25, 64)
    llama = AutoModelForCausalLM.from_pretrained(src).eval()
    ids = torch.tensor([tok(PROMPT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(native(input_ids=ids).logits, llama(input_ids=ids).logits, rtol=0, atol=1e-5)
    assert _convert("--model_path", ckpt, "--out_dir", again, "--format", "llama") == 0
    back = AutoModelForCausalLM.from_pretrained(again).eval()
    sa, sb = llama.state_dict(), back.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _random_lora(model, rank: int = 4) -> None:
    from model.model_lora import apply_lora, lora_parameters

    apply_lora(model, rank=rank)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)  # B != 0: the adapter changes the outputs


def test_lora_merged_into_a_minimind_checkpoint(tmp_path, tok):
    from model.loading import load_parallel_model
    from model.model_lora import save_lora

    base = _ckpt(tmp_path, tok, "base")
    model = load_checkpoint(base)[0]
    _random_lora(model)
    save_lora(model, tmp_path / "lora" / "x_64.pth")
    merged = tmp_path / "merged.pth"
    assert _convert("--model_path", base, "--lora_path", tmp_path / "lora" / "x_64.pth", "--out_path", merged,
                    "--format", "native") == 0
    with_lora = load_parallel_model(model_path=str(base), lora_path=str(tmp_path / "lora" / "x_64.pth")).model
    out, payload = load_checkpoint(merged)
    assert payload["meta"]["lora_merged"].endswith("x_64.pth")
    plain = load_checkpoint(base)[0]
    two = _two_branch_inputs(tok, plain.config.branch_stride)
    with torch.no_grad():
        want = with_lora(**two).logits
        torch.testing.assert_close(out(**two).logits, want, rtol=0, atol=1e-5)
        assert (plain(**two).logits - want).abs().max() > 1e-3  # the adapter mattered


def test_hf_base_with_lora_merged_into_its_own_architecture(tmp_path, tok):
    from model.loading import load_parallel_model
    from model.model_lora import save_lora

    src = _tiny_llama(tmp_path, tok)
    loaded = load_parallel_model(hf_base_model=str(src))
    _random_lora(loaded.model)
    save_lora(loaded.model, tmp_path / "adapter.pth")
    out = tmp_path / "merged"
    assert _convert("--base_model", src, "--lora_path", tmp_path / "adapter.pth", "--out_dir", out,
                    "--format", "llama") == 0
    want = load_parallel_model(hf_base_model=str(src), lora_path=str(tmp_path / "adapter.pth")).model
    got = load_parallel_model(model_path=str(out)).model  # re-patched from its config.parallelmind
    two = _two_branch_inputs(tok, 128)
    with torch.no_grad():
        torch.testing.assert_close(got(**two).logits, want(**two).logits, rtol=0, atol=1e-5)


def _refused(capsys, *argv) -> str:
    assert _convert(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("convert_model: error: ")
    return err[0]


def test_refusals_are_one_line_and_write_nothing(tmp_path, tok, capsys):
    ref = _ckpt(tmp_path, tok, "ref", rope_2d_scheme="reference")
    moe = _ckpt(tmp_path, tok, "moe", use_moe=True)
    fpe = _ckpt(tmp_path, tok, "fpe", pe="fpe")
    qwen = tmp_path / "qwen2"
    from conftest import build_tiny_hf

    build_tiny_hf("qwen2", qwen)
    out = tmp_path / "out"
    capsys.readouterr()  # the set-up's own output
    assert "'reference'" in _refused(capsys, "--model_path", ref, "--out_dir", out, "--format", "llama")
    assert "mixture of experts" in _refused(capsys, "--model_path", moe, "--out_dir", out, "--format", "llama")
    assert "pe=fpe" in _refused(capsys, "--model_path", fpe, "--out_dir", out, "--format", "llama")
    assert "q/k/v biases" in _refused(capsys, "--model_path", qwen, "--out_path", tmp_path / "q.pth",
                                      "--format", "native")
    assert "already one" in _refused(capsys, "--base_model", qwen, "--out_dir", out, "--format", "hf")
    assert "is a 'qwen2' model" in _refused(capsys, "--model_path", qwen, "--out_dir", out, "--format", "hf")
    assert "'reference' 2D-RoPE scheme" in _refused(capsys, "--base_model", qwen, "--rope_2d_scheme", "reference",
                                                    "--out_dir", out, "--format", "llama")
    assert "--out_path" in _refused(capsys, "--model_path", ref, "--out_dir", out, "--format", "native")
    assert not out.exists() and not (tmp_path / "q.pth").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_existing_output_needs_overwrite(tmp_path, tok, capsys):
    a, b = _ckpt(tmp_path, tok, "a"), _ckpt(tmp_path, tok, "bb", rope_2d_ratio=0.25)
    out = tmp_path / "out"
    assert _convert("--model_path", a, "--out_dir", out, "--format", "hf") == 0
    before = (out / "model.safetensors").read_bytes()
    assert "pass --overwrite" in _refused(capsys, "--model_path", b, "--out_dir", out, "--format", "hf")
    assert (out / "model.safetensors").read_bytes() == before
    assert _convert("--model_path", b, "--out_dir", out, "--format", "hf", "--overwrite") == 0
    assert json.loads((out / "config.json").read_text())["rope_2d_ratio"] == 0.25
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


DOC = Path(__file__).resolve().parents[2] / "docs" / "CONVERSION.md"


def _doc_commands() -> list[list[str]]:
    """The convert_model.py command lines of docs/CONVERSION.md's first bash block, continuation lines joined."""
    import shlex

    text = DOC.read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [shlex.split(line, comments=True)[2:] for line in block.splitlines()
            if line.startswith("python scripts/convert_model.py")]


def test_every_command_of_the_guide_runs(tmp_path, tok, monkeypatch):
    """The guide's commands, in order, on tiny stand-ins for the files they name (out/... under tmp_path)."""
    from model.loading import load_parallel_model
    from model.model_lora import save_lora

    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "lora").mkdir(parents=True)
    base = load_checkpoint(_ckpt(tmp_path / "out", tok, "full_sft_512"))[0]
    _random_lora(base)
    save_lora(base, "out/lora/lora_identity_512.pth")
    (tmp_path / "out" / "models").mkdir()
    _tiny_llama(tmp_path, tok).rename(tmp_path / "out" / "models" / "SmolLM2-135M-Instruct")
    hf = load_parallel_model(hf_base_model="out/models/SmolLM2-135M-Instruct")
    _random_lora(hf.model)
    save_lora(hf.model, "out/lora/hf_lora_hf_final.pth")
    commands = _doc_commands()
    assert len(commands) == 5
    for argv in commands:
        assert convert_model.main(argv) == 0, argv
    code = DOC.read_text().split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["out"].shape[1] > 0


@pytest.mark.parametrize("scheme", ["additive", "reference"])
def test_remote_model_decodes_branches_with_a_cache_as_one_full_forward(tmp_path, tok, scheme):
    """The exported modeling code (imported here as a module) fed a 2-branch sample token by token through a
    cache, with explicit `[1, 1, 3]` positions and mask rows, gives the full forward's logits."""
    from transformers.cache_utils import DynamicCache

    from model.remote_code.modeling_parallelmind import ParallelMindForCausalLM

    out = tmp_path / "hf"
    assert _convert("--model_path", _ckpt(tmp_path, tok, scheme, rope_2d_scheme=scheme), "--out_dir", out,
                    "--format", "hf") == 0
    model = ParallelMindForCausalLM.from_pretrained(out).eval()
    two = _two_branch_inputs(tok, model.config.branch_stride)
    ids, pos, mask = two["input_ids"], two["position_ids"], two["attention_mask"]
    T, P = ids.shape[1], ids.shape[1] // 2
    with torch.no_grad():
        full = model(**two).logits
        cache = DynamicCache()
        steps = [model(input_ids=ids[:, :P], position_ids=pos[:, :P], attention_mask=mask[:, :, :P, :P],
                       past_key_values=cache, use_cache=True).logits]
        for j in range(P, T):
            steps.append(model(input_ids=ids[:, j:j + 1], position_ids=pos[:, j:j + 1],
                               attention_mask=mask[:, :, j:j + 1, :j + 1], past_key_values=cache,
                               use_cache=True).logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)


def test_remote_model_loss_follows_the_transformers_convention(tmp_path, tok):
    """labels = input_ids (shifted inside, as transformers models do) == the native loss on aligned labels."""
    from model.remote_code.modeling_parallelmind import ParallelMindForCausalLM

    ckpt = _ckpt(tmp_path, tok, "loss")
    out = tmp_path / "hf"
    assert _convert("--model_path", ckpt, "--out_dir", out, "--format", "hf") == 0
    remote = ParallelMindForCausalLM.from_pretrained(out).eval()
    native = load_checkpoint(ckpt)[0]
    ids = torch.tensor([tok(PROMPT + " while seven small birds sing", add_special_tokens=False)["input_ids"]])
    labels = ids.clone()
    labels[0, :3] = -100  # a prompt without targets
    aligned = torch.cat([labels[:, 1:], torch.full((1, 1), -100)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(remote(input_ids=ids, labels=labels).loss,
                                   native(input_ids=ids, labels=aligned).loss, rtol=0, atol=1e-6)
