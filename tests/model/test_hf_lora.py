"""Patched Hugging Face models and LoRA (model/model_lora.py) on tiny random Qwen2, Llama, Qwen3 and MiniMind:
a patched single branch is the unpatched model bit for bit, a fresh adapter changes nothing, an adapter saved
and loaded in every format (PEFT folder, .pth, .safetensors, and `PeftModel.from_pretrained` onto the plain
base) gives identical logits, merging changes nothing, the 2D-RoPE settings travel with the adapter and the
model and contradicting flags are refused, unsupported architectures are refused naming the model type."""

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import HF_ARCHS, build_tiny_hf, load_hf, tiny_minimind

from model.loading import load_parallel_model
from model.model_lora import (
    apply_lora,
    load_lora,
    lora_parameters,
    lora_state_dict,
    merge_lora,
    read_lora,
    save_lora,
    set_lora_state_dict,
)
from model.parallel_generation import ParallelGenerator
from parallel.columnar import build_attention_mask, build_flat_linear_layout, patch_model_with_interleaved_2d_rope

ROOT = Path(__file__).resolve().parents[2]
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SAMPLES = [{"main": [5, 6, 7, 8], "branches": [[10, 11, 12], [20, 21, 22, 23, 24]]},
           {"branches": [[30, 31], [40, 41, 42], [50], [60, 61, 62, 63]]}]
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def parallel_logits(model, samples=SAMPLES, stride=16, mode="columnar"):
    lay = build_flat_linear_layout(None, samples, branch_stride=stride)
    mask = build_attention_mask(lay.time_ids, lay.branch_ids, mode)
    with torch.no_grad():
        return model(lay.input_ids, attention_mask=mask, position_ids=lay.position_ids()).logits


def randomize_lora(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def patched(path, **kw):
    model = load_hf(path)
    patch_model_with_interleaved_2d_rope(model, ratio=kw.pop("ratio", 0.5), branch_stride=kw.pop("stride", 16), **kw)
    return model


# --- patching -------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", HF_ARCHS)
def test_patched_single_branch_is_unpatched_bit_for_bit(tiny_hf_dirs, arch):
    model = load_hf(tiny_hf_dirs[arch])
    ids = torch.randint(3, 256, (2, 12))
    lay = build_flat_linear_layout(None, [{"branches": [ids[0].tolist()]}, {"branches": [ids[1].tolist()]}])
    mask = build_attention_mask(lay.time_ids, lay.branch_ids)
    with torch.no_grad():
        plain, plain_masked = model(ids).logits, model(ids, attention_mask=mask).logits
        patch_model_with_interleaved_2d_rope(model, ratio=0.5)
        assert torch.equal(model(ids).logits, plain)  # [B, T] positions
        assert torch.equal(model(lay.input_ids, attention_mask=mask, position_ids=lay.position_ids()).logits,
                           plain_masked)  # [B, T, 2] positions, one branch at coordinate 0


def _tiny(cfg_cls, **kw):
    from transformers import AutoModelForCausalLM

    base = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, pad_token_id=0)
    return AutoModelForCausalLM.from_config(cfg_cls(**{**base, **kw}))


def _per_layer_rotary():
    from transformers import LlamaConfig

    model = _tiny(LlamaConfig)
    model.model.layers[0].self_attn.rotary_emb = type(model.model.rotary_emb)(model.config)
    return model


def _unsupported():
    from transformers import CohereConfig, Gemma3TextConfig, GPT2Config, GPTNeoXConfig, LlamaConfig, Phi3Config

    longrope = {"rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0] * 8, "long_factor": [2.0] * 8,
                "original_max_position_embeddings": 64}
    return [
        ("llama", "dynamic rotary scaling", lambda: _tiny(LlamaConfig, rope_parameters={
            "rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4})),
        ("phi3", "dynamic rotary scaling ('longrope')", lambda: _tiny(Phi3Config, max_position_embeddings=256,
                                                                       rope_parameters=longrope)),
        ("gpt_neox", "partial rotary", lambda: _tiny(GPTNeoXConfig, rotary_pct=0.25)),
        ("cohere", "does not return standard rotate-half", lambda: _tiny(CohereConfig)),  # interleaved pairs
        ("gemma3_text", "layer types use different rotary settings", lambda: _tiny(Gemma3TextConfig, head_dim=16)),
        ("gpt2", "no model-level `rotary_emb`", lambda: _tiny(GPT2Config, n_embd=32, n_layer=1, n_head=2)),
        ("llama", "second rotary module (layers.0.self_attn.rotary_emb)", _per_layer_rotary),
    ]


@pytest.mark.parametrize("model_type,why,build", _unsupported(), ids=lambda x: x if isinstance(x, str) else "")
def test_unsupported_architectures_are_refused_naming_the_model_type(model_type, why, build):
    model = build()
    with pytest.raises(ValueError, match=f"model type '{model_type}' \\({type(model).__name__}\\)") as e:
        patch_model_with_interleaved_2d_rope(model, ratio=0.5)
    assert why in str(e.value)
    assert "parallelmind" not in model.config.to_dict()  # nothing was half-patched


def test_mrope_is_refused():
    from transformers import LlamaConfig

    model = _tiny(LlamaConfig)
    model.config.rope_parameters = {**model.config.rope_parameters, "mrope_section": [2, 3, 3]}
    with pytest.raises(ValueError, match="model type 'llama'.*M-RoPE"):
        patch_model_with_interleaved_2d_rope(model, ratio=0.5)


# --- LoRA: init, targets, round trips, merge --------------------------------------------------------

@pytest.mark.parametrize("arch", [*HF_ARCHS, "minimind"])
def test_fresh_adapter_changes_nothing_and_targets_every_projection(tiny_hf_dirs, arch):
    model = tiny_minimind() if arch == "minimind" else patched(tiny_hf_dirs[arch])
    ref = parallel_logits(model)
    names = apply_lora(model, rank=4)
    assert sorted(names) == sorted(f"model.layers.{i}.{'self_attn' if p[0] in 'qkvo' else 'mlp'}.{p}"
                                   for i in range(2) for p in PROJECTIONS)  # never lm_head / embeddings
    assert torch.equal(parallel_logits(model), ref)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and sorted(trainable) == sorted(n for n, _ in lora_parameters(model))
    with pytest.raises(ValueError, match="already has a LoRA adapter"):
        apply_lora(model, rank=4)


@pytest.mark.parametrize("arch", [*HF_ARCHS, "minimind"])
def test_adapter_round_trip_every_format_and_merge(tiny_hf_dirs, tmp_path, arch):
    from peft import PeftModel

    def fresh():
        return tiny_minimind() if arch == "minimind" else load_hf(tiny_hf_dirs[arch])

    model = fresh() if arch == "minimind" else patched(tiny_hf_dirs[arch], stride=32, mask_mode="isolated")
    apply_lora(model, rank=4, alpha=8)
    randomize_lora(model)
    ref = parallel_logits(model, stride=32)
    assert (ref - parallel_logits(fresh() if arch == "minimind" else patched(tiny_hf_dirs[arch], stride=32))
            ).abs().max() > 1e-3  # the adapter does something
    pth = tmp_path / "lora" / f"{arch}_final.pth"
    folder = save_lora(model, pth)
    save_lora(model, tmp_path / "lora" / "x.safetensors")
    assert folder == tmp_path / "lora" / f"{arch}_final"
    assert {"adapter_config.json", "adapter_model.safetensors", "parallelmind.json"} <= set(os.listdir(folder))
    raw = torch.load(pth, weights_only=True)
    assert raw["format"] == "parallelmind-lora-v1" and raw["peft_config"]["r"] == 4
    assert set(raw["adapter_state_dict"]) == set(lora_state_dict(model))
    for src in (pth, folder, tmp_path / "lora" / "x.safetensors"):
        other = fresh()  # plain: load_lora re-applies the saved patch
        load_lora(other, src)
        assert torch.equal(parallel_logits(other, stride=32), ref), src
    peft_model = PeftModel.from_pretrained(fresh(), str(folder))
    if arch != "minimind":
        assert json.loads((folder / "parallelmind.json").read_text())["mask_mode"] == "isolated"
        patch_model_with_interleaved_2d_rope(peft_model, ratio=0.5, branch_stride=32)
    assert torch.equal(parallel_logits(peft_model, stride=32), ref)
    merged = merge_lora(model)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert (parallel_logits(merged, stride=32) - ref).abs().max() <= 1e-5


def test_merged_patched_model_saves_and_loads_with_its_settings(tiny_hf_dirs, tmp_path):
    model = patched(tiny_hf_dirs["qwen3"], ratio=0.3, stride=48, mask_mode="isolated")
    apply_lora(model, rank=4)
    randomize_lora(model)
    merged = merge_lora(model)
    merged.save_pretrained(str(tmp_path / "full"))
    ref = parallel_logits(merged, stride=48)
    loaded = load_parallel_model(model_path=str(tmp_path / "full"))
    assert (loaded.branch_stride, loaded.mask_mode, loaded.rope_2d_ratio) == (48, "isolated", 0.3)
    assert loaded.model.config.parallelmind == merged.config.parallelmind
    assert (parallel_logits(loaded.model, stride=48) - ref).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="mask_mode='isolated', but --mask 'columnar' was given"):
        load_parallel_model(model_path=str(tmp_path / "full"), mask_mode="columnar")
    # head_dim 16: 8 pairs; a ratio of 0.25 selects the same 2 pairs as 0.3, 0.5 does not
    assert load_parallel_model(model_path=str(tmp_path / "full"), rope_2d_ratio=0.25).rope_2d_ratio == 0.3
    with pytest.raises(ValueError, match="rope_2d_ratio=0.3, but --rope_2d_ratio 0.5 was given"):
        load_parallel_model(model_path=str(tmp_path / "full"), rope_2d_ratio=0.5)


def test_trainer_state_dict_seam(tiny_hf_dirs):
    a, b = patched(tiny_hf_dirs["llama"]), patched(tiny_hf_dirs["llama"])
    apply_lora(a, rank=2)
    apply_lora(b, rank=2)
    randomize_lora(a, seed=3)
    set_lora_state_dict(b, lora_state_dict(a, a.state_dict()))
    assert torch.equal(parallel_logits(a), parallel_logits(b))
    with pytest.raises(ValueError, match="missing"):
        set_lora_state_dict(b, dict(list(lora_state_dict(a).items())[1:]))


# --- settings travel with the adapter; flags are checked -----------------------------------------

@pytest.fixture(scope="module")
def qwen2_adapter(tiny_hf_dirs, tmp_path_factory):
    model = patched(tiny_hf_dirs["qwen2"], ratio=0.25, stride=64, scheme="reference", mask_mode="isolated")
    apply_lora(model, rank=4)
    randomize_lora(model)
    path = tmp_path_factory.mktemp("adapter") / "lora" / "hf_lora_hf_final.pth"
    save_lora(model, path)
    return path, parallel_logits(model, stride=64, mode="isolated")


def test_loader_reapplies_the_saved_settings(tiny_hf_dirs, qwen2_adapter):
    path, ref = qwen2_adapter
    for lora in (path, path.with_suffix("")):
        loaded = load_parallel_model(hf_base_model=str(tiny_hf_dirs["qwen2"]), lora_path=str(lora))
        assert (loaded.rope_2d_scheme, loaded.rope_2d_ratio, loaded.branch_stride, loaded.mask_mode) == \
            ("reference", 0.25, 64, "isolated")
        assert loaded.model.config.parallelmind["pair_indices"] == [7, 8]
        assert torch.equal(parallel_logits(loaded.model, stride=64, mode="isolated"), ref)
    # the same flags, repeated, are accepted
    load_parallel_model(hf_base_model=str(tiny_hf_dirs["qwen2"]), lora_path=str(path), rope_2d_ratio=0.25,
                        rope_2d_scheme="reference", branch_stride=64, mask_mode="isolated", lora_rank=4)


def test_prefix_sharing_flags_are_accepted_on_any_model(tiny_hf_dirs, tmp_path):
    """branch_stride 0 + isolated mask decodes "main + branch" as a plain causal LM: no training needed."""
    model = patched(tiny_hf_dirs["llama"], stride=64)  # trained columnar, stride 64
    apply_lora(model, rank=2)
    save_lora(model, tmp_path / "a.pth")
    kw = dict(hf_base_model=str(tiny_hf_dirs["llama"]), lora_path=str(tmp_path / "a.pth"))
    loaded = load_parallel_model(**kw, branch_stride=0, mask_mode="isolated")
    assert (loaded.branch_stride, loaded.mask_mode) == (0, "isolated")
    assert loaded.model.config.parallelmind["branch_stride"] == 64  # the patch keeps the trained settings
    with pytest.raises(ValueError, match="mask_mode='columnar', but --mask 'isolated' was given"):
        load_parallel_model(**kw, mask_mode="isolated")


@pytest.mark.parametrize("flag,value,msg", [
    ("rope_2d_ratio", 0.5, "rope_2d_ratio=0.25, but --rope_2d_ratio 0.5 was given"),
    ("rope_2d_scheme", "additive", "rope_2d_scheme='reference', but --rope_2d_scheme 'additive' was given"),
    ("mask_mode", "columnar", "mask_mode='isolated', but --mask 'columnar' was given"),
    ("patch_rope", False, "patch_rope=True, but --patch_rope/--no_patch_rope False was given"),
    ("lora_rank", 8, "rank \\[4\\], but --lora_rank 8 was given"),
])
def test_contradicting_flags_are_refused(tiny_hf_dirs, qwen2_adapter, flag, value, msg):
    path, _ = qwen2_adapter
    with pytest.raises(ValueError, match=msg):
        load_parallel_model(hf_base_model=str(tiny_hf_dirs["qwen2"]), lora_path=str(path), **{flag: value})


def test_a_different_branch_stride_is_honoured_with_a_warning(tiny_hf_dirs, qwen2_adapter, caplog):
    """The stride only sets the branch coordinates (seed README: trained with 512, run with 256)."""
    path, _ = qwen2_adapter
    with caplog.at_level("WARNING", logger="parallelmind"):
        loaded = load_parallel_model(hf_base_model=str(tiny_hf_dirs["qwen2"]), lora_path=str(path), branch_stride=128)
    assert loaded.branch_stride == 128
    assert "trained with branch_stride=64; using --branch_stride 128 as given" in caplog.text
    ref = load_parallel_model(hf_base_model=str(tiny_hf_dirs["qwen2"]), lora_path=str(path))
    assert ref.branch_stride == 64
    # the weights are the same; only the coordinates differ: stride 128 == the stride-64 model fed stride 128
    assert torch.equal(parallel_logits(loaded.model, stride=128, mode="isolated"),
                       parallel_logits(ref.model, stride=128, mode="isolated"))


def test_adapter_onto_a_differently_patched_or_other_model_is_refused(tiny_hf_dirs, qwen2_adapter):
    path, _ = qwen2_adapter
    with pytest.raises(ValueError, match="rope_2d_scheme='reference', but the model has rope_2d_scheme='additive'"):
        load_lora(patched(tiny_hf_dirs["qwen2"], ratio=0.25, stride=64), path)
    with pytest.raises(ValueError, match="trained on a model of type 'qwen2', but this model is 'llama'"):
        load_lora(load_hf(tiny_hf_dirs["llama"]), path)
    seeded = patched(tiny_hf_dirs["qwen2"], ratio=0.25, stride=64, scheme="reference", mask_mode="isolated")
    apply_lora(seeded, rank=8)  # the seed's usage with the wrong rank
    with pytest.raises(ValueError, match="rank-\\[4\\] adapter .* already has rank-8 LoRA layers"):
        load_lora(seeded, path)


def test_unpatched_adapter_loads_unpatched(tiny_hf_dirs, tmp_path):
    model = load_hf(tiny_hf_dirs["llama"])  # --no_patch_rope training
    apply_lora(model, rank=2)
    randomize_lora(model)
    save_lora(model, tmp_path / "plain.pth")
    assert read_lora(tmp_path / "plain.pth").settings == {"model_type": "llama", "patch_rope": False}
    loaded = load_parallel_model(hf_base_model=str(tiny_hf_dirs["llama"]), lora_path=str(tmp_path / "plain.pth"))
    assert "parallelmind" not in loaded.model.config.to_dict()
    ids = torch.randint(3, 200, (1, 9))
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, model(ids).logits)
    with pytest.raises(ValueError, match="patch_rope=False"):
        load_parallel_model(hf_base_model=str(tiny_hf_dirs["llama"]), lora_path=str(tmp_path / "plain.pth"),
                            patch_rope=True)


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_isolated_parallel_greedy_with_adapter_equals_generate(tiny_hf_dirs, tmp_path, arch):
    model = patched(tiny_hf_dirs[arch])
    apply_lora(model, rank=4)
    randomize_lora(model)
    save_lora(model, tmp_path / "a.pth")
    loaded = load_parallel_model(hf_base_model=str(tiny_hf_dirs[arch]), lora_path=str(tmp_path / "a.pth")).model
    prompts = [[17, 42, 99, 5, 230, 11, 64], [8, 9, 10], [100, 101, 102, 103, 104]]
    res = ParallelGenerator(loaded, None, mask_mode="isolated").generate([{"branches": prompts}], eos_token_ids=[],
                                                                         max_new_tokens=6)
    for p, r in zip(prompts, res[0].branches):
        ref = loaded.generate(torch.tensor([p]), do_sample=False, max_new_tokens=6, pad_token_id=0, eos_token_id=None)
        assert r.token_ids == ref[0, len(p):].tolist()


# --- the seed-002 snippet, verbatim apart from the model path -------------------------------------

SEED_002_SNIPPET = '''
from transformers import AutoTokenizer, AutoModelForCausalLM
from model.model_lora import load_lora
from parallel.columnar import patch_model_with_interleaved_2d_rope

# 加载基础模型
model = AutoModelForCausalLM.from_pretrained("Qwen/Qwen2.5-0.5B-Instruct")
tokenizer = AutoTokenizer.from_pretrained("Qwen/Qwen2.5-0.5B-Instruct")

# 应用 2D RoPE
from trainer.train_hf_parallel_lora import auto_pair_indices
pair_indices = auto_pair_indices(model, ratio=0.5)
patch_model_with_interleaved_2d_rope(model, pair_indices)

# 加载 LoRA 权重
from model.model_lora import apply_lora
apply_lora(model, rank=8)
load_lora(model, "out/lora/hf_parallel_lora_final.pth")

# 推理
model.eval()
# ... 进行推理
'''

CHECK = '''
import torch
from parallel.columnar import build_attention_mask, build_flat_linear_layout
lay = build_flat_linear_layout(None, [{"branches": [[5, 6, 7], [8, 9]]}], branch_stride=128)
with torch.no_grad():
    out = model(lay.input_ids, attention_mask=build_attention_mask(lay.time_ids, lay.branch_ids),
                position_ids=lay.position_ids()).logits
assert torch.equal(out, torch.load("expected.pt")), "the snippet's model differs from the trained one"
assert len(tokenizer) > 0
'''


def test_seed_002_inference_snippet_runs(tiny_tokenizer, tmp_path, monkeypatch):
    base = build_tiny_hf("qwen2", tmp_path / "qwen", vocab_size=len(tiny_tokenizer))
    tiny_tokenizer.save_pretrained(str(base))
    trained = load_hf(base)  # what train_hf_parallel_lora does with its defaults: ratio 0.5, stride 128, rank 8
    patch_model_with_interleaved_2d_rope(trained, ratio=0.5, branch_stride=128)
    apply_lora(trained, rank=8)
    randomize_lora(trained)
    save_lora(trained, tmp_path / "out" / "lora" / "hf_parallel_lora_final.pth")
    lay = build_flat_linear_layout(None, [{"branches": [[5, 6, 7], [8, 9]]}], branch_stride=128)
    with torch.no_grad():
        torch.save(trained(lay.input_ids, attention_mask=build_attention_mask(lay.time_ids, lay.branch_ids),
                           position_ids=lay.position_ids()).logits, tmp_path / "expected.pt")
    monkeypatch.chdir(tmp_path)  # the snippet's relative out/lora path
    code = SEED_002_SNIPPET.replace("Qwen/Qwen2.5-0.5B-Instruct", str(base)) + CHECK
    namespace = {"__name__": "seed_002_snippet"}
    exec(compile(code, "seed_002_snippet", "exec"), namespace)  # noqa: S102 - the seed's own snippet
    assert namespace["model"].config.parallelmind["pair_indices"] == [1, 3, 6, 8]
