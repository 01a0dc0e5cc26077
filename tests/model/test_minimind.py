"""MiniMind and HF models: cached incremental decoding equals a full forward; generate, MoE, save/load."""

import pytest
import torch
from conftest import HF_ARCHS, load_hf, tiny_minimind

from model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from model.kv_cache import GrowingCache
from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
from parallel.columnar import (
    build_attention_mask,
    build_flat_linear_layout,
    build_incremental_mask,
    patch_model_with_interleaved_2d_rope,
)

SAMPLES = [
    {"main": [5, 6, 7, 8, 9], "branches": [[10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24, 25], [30, 31, 32, 33, 34, 35]]},
    {"branches": [[40, 41, 42, 43, 44, 45, 46, 47, 48], [50, 51, 52, 53, 54, 55, 56, 57, 58]]},
]


def cached_vs_full(model, mode, cache, prefill=8, step=3):
    lay = build_flat_linear_layout(None, SAMPLES, branch_stride=16)
    pos = lay.position_ids()
    with torch.no_grad():
        full = model(lay.input_ids, attention_mask=build_attention_mask(lay.time_ids, lay.branch_ids, mode),
                     position_ids=pos).logits
        T = lay.input_ids.shape[1]
        got = []
        start = 0
        for end in [prefill, *range(prefill + step, T, step), T]:
            if end <= start:
                continue
            mask = build_incremental_mask(lay.time_ids[:, start:end], lay.branch_ids[:, start:end],
                                          lay.time_ids[:, :start], lay.branch_ids[:, :start], mode)
            out = model(lay.input_ids[:, start:end], attention_mask=mask, position_ids=pos[:, start:end],
                        past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            got.append(out.logits)
            start = end
    real = lay.token_mask
    return (torch.cat(got, dim=1) - full)[real].abs().max().item()


@pytest.mark.parametrize("mode", ["columnar", "isolated"])
@pytest.mark.parametrize("scheme", ["additive", "reference"])
@pytest.mark.parametrize("moe", [False, True])
def test_minimind_cached_decoding_equals_full_forward(mode, scheme, moe):
    model = tiny_minimind(rope_2d_scheme=scheme, use_moe=moe, mask_mode=mode)
    assert cached_vs_full(model, mode, GrowingCache(4)) <= 1e-4
    from transformers import DynamicCache
    assert cached_vs_full(model, mode, DynamicCache()) <= 1e-4


def test_fpe_model_cached_decoding_equals_full_forward():
    model = tiny_minimind(pe="fpe", branch_stride=1)
    assert cached_vs_full(model, "columnar", GrowingCache()) <= 1e-4


@pytest.mark.parametrize("arch", HF_ARCHS)
@pytest.mark.parametrize("mode", ["columnar", "isolated"])
@pytest.mark.parametrize("scheme", ["additive", "reference"])
def test_hf_cached_decoding_equals_full_forward(tiny_hf_dirs, arch, mode, scheme):
    model = load_hf(tiny_hf_dirs[arch])
    patch_model_with_interleaved_2d_rope(model, ratio=0.5, scheme=scheme, branch_stride=16)
    assert cached_vs_full(model, mode, GrowingCache()) <= 1e-4


def test_generate_equals_manual_greedy_loop():
    model = tiny_minimind(seed=3, tie_word_embeddings=False)  # untied: a random model does not just echo
    prompt = torch.tensor([[17, 42, 99, 5, 230, 11, 64]])
    out = model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    x = prompt
    with torch.no_grad():
        for _ in range(12):
            nxt = model(x).logits[:, -1].argmax(-1, keepdim=True)
            x = torch.cat([x, nxt], dim=1)
    assert out.tolist() == x.tolist()
    assert len(set(out[0, 7:].tolist())) > 1  # positions advance: not the same token forever


def test_generate_with_a_prompt_longer_than_the_query_chunk():
    # the config's chunk size must not be read by transformers as a chunked-attention window
    model = tiny_minimind(seed=5, tie_word_embeddings=False, query_chunk_size=16)
    prompt = torch.randint(3, 300, (1, 40))
    out = model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None)
    x = prompt
    with torch.no_grad():
        for _ in range(4):
            x = torch.cat([x, model(x).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert out.tolist() == x.tolist()


def test_left_padded_batch_equals_unpadded_rows():
    model = tiny_minimind(seed=1)
    a, b = [12, 13, 14, 15, 16], [30, 31, 32]
    ids = torch.tensor([a, [0, 0] + b])
    am = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
    pos = (am.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        both = model(ids, attention_mask=am, position_ids=pos).logits
        alone = model(torch.tensor([b])).logits
    torch.testing.assert_close(both[1, 2:], alone[0], rtol=0, atol=1e-5)
    gen = model.generate(ids, attention_mask=am, max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)
    gen_b = model.generate(torch.tensor([b]), max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert gen[1, 5:].tolist() == gen_b[0, 3:].tolist()


def test_labels_are_aligned_not_shifted():
    model = tiny_minimind()
    ids = torch.randint(3, 300, (2, 9))
    labels = torch.full_like(ids, -100)
    labels[:, 2:5] = ids[:, 3:6]
    out = model(ids, labels=labels)
    logits = out.logits
    ref = torch.nn.functional.cross_entropy(logits[:, 2:5].reshape(-1, 300), ids[:, 3:6].reshape(-1))
    torch.testing.assert_close(out.loss, ref)


def test_moe_runs_in_bf16_and_has_aux_loss():
    model = tiny_minimind(use_moe=True).train()
    ids = torch.randint(3, 300, (2, 10))
    out = model(ids, labels=ids)
    assert out.aux_loss.item() > 0
    (out.loss + out.aux_loss).backward()
    model = model.to(torch.bfloat16).eval()
    with torch.no_grad():
        assert model(ids).logits.dtype == torch.bfloat16


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_minimind(seed=2).train()
    ids = torch.randint(3, 300, (2, 16))
    model(ids, labels=ids).loss.backward()
    g1 = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(ids, labels=ids).loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g1[n], rtol=1e-5, atol=1e-6)


def test_save_pretrained_round_trip(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_minimind(seed=4, rope_2d_ratio=0.25, rope_2d_scheme="reference", use_moe=True)
    model.save_pretrained(str(tmp_path))
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert isinstance(loaded, MiniMindForCausalLM) and loaded.config.rope_2d_scheme == "reference"
    ids = torch.randint(3, 300, (1, 11))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_checkpoint_alone_rebuilds_model_and_tokenizer(tmp_path, tiny_tokenizer):
    model = tiny_minimind(seed=5, rope_2d_ratio=0.75, pe="rope", branch_stride=32)
    path = tmp_path / "pretrain_64.pth"
    save_checkpoint(path, model, tokenizer=tiny_tokenizer, meta={"step": 3})
    raw = torch.load(path, weights_only=True)  # plain data, no pickled code
    assert raw["config"]["rope_2d_ratio"] == 0.75 and raw["meta"]["step"] == 3
    loaded, payload = load_checkpoint(path)
    assert loaded.config.branch_stride == 32
    ids = torch.randint(3, 300, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    from model.checkpoint import tokenizer_from_files
    tok = tokenizer_from_files(payload["tokenizer_files"])
    assert tok("a dog")["input_ids"] == tiny_tokenizer("a dog")["input_ids"]
    with pytest.raises(ValueError, match="trained with rope_2d_ratio=0.75"):
        load_checkpoint(path, overrides={"rope_2d_ratio": 0.5})
    assert list(tmp_path.iterdir()) == [path]  # atomic write left no temporary file


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "junk.pth")
    legacy = tmp_path / "legacy.pth"
    torch.save({"model_state_dict": tiny_minimind().state_dict(), "vocab_size": 300}, legacy)
    with pytest.raises(ValueError, match="has no config"):
        load_checkpoint(legacy)
    other = MiniMindConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           vocab_size=300)
    with pytest.raises(ValueError, match="does not match the model config"):
        load_checkpoint(legacy, config=other)
    ok = MiniMindConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        vocab_size=300, branch_stride=16)
    model, _ = load_checkpoint(legacy, config=ok)
    assert model.config.hidden_size == 64


def test_config_validation():
    with pytest.raises(ValueError, match="num_key_value_heads"):
        MiniMindConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=3)
    with pytest.raises(ValueError, match="pe must be"):
        MiniMindConfig(pe="alibi")
    cfg = MiniMindConfig()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.vocab_size, cfg.rope_theta, cfg.intermediate_size) == (512, 8, 8, 2, 6400, 1e6, 1408)
    assert (cfg.n_routed_experts, cfg.n_shared_experts, cfg.num_experts_per_tok, cfg.aux_loss_alpha) == (4, 1, 2, 0.1)
    n = sum(p.numel() for p in MiniMindForCausalLM(cfg).parameters())
    assert 25.0e6 < n < 26.5e6  # the 26M MiniMind2-Small


@pytest.mark.parametrize("moe", [False, True])
@pytest.mark.parametrize("mode", ["columnar", "isolated"])
def test_pad_free_path_equals_the_padded_path(moe, mode):
    model = tiny_minimind(use_moe=moe, query_chunk_size=4).train()  # small chunks: exercise the chunk plans
    lay = build_flat_linear_layout(None, [SAMPLES[0], {"branches": [[7, 8, 9]]}, SAMPLES[1]], branch_stride=16)
    mask = build_attention_mask(lay.time_ids, lay.branch_ids, mode)
    kw = dict(input_ids=lay.input_ids, attention_mask=mask, position_ids=lay.position_ids(), labels=lay.labels)
    model.config.pad_free = False
    padded = model(**kw, token_mask=lay.token_mask)  # pads computed, but left out of the MoE statistics
    model.config.pad_free = True
    padded.loss.backward()
    g1 = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    packed = model(**kw, token_mask=lay.token_mask)
    packed.loss.backward()
    real = lay.token_mask
    torch.testing.assert_close(packed.loss, padded.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(packed.logits[real], padded.logits[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.aux_loss, padded.aux_loss, rtol=1e-5, atol=1e-7)
    for n, p in model.named_parameters():
        if n in g1:
            torch.testing.assert_close(p.grad, g1[n], rtol=1e-4, atol=1e-6)
    summed = model(**kw, token_mask=lay.token_mask, compute_logits=False, loss_reduction="sum")
    assert summed.logits is None
    torch.testing.assert_close(summed.loss, padded.loss * (lay.labels != -100).sum(), rtol=1e-5, atol=1e-4)
