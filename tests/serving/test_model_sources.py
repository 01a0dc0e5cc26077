"""The server serves a Hugging Face folder with a LoRA / PEFT adapter, loaded by model.loading (2D-RoPE settings
from the adapter), and answers exactly as Hugging Face `generate` on the same adapted model."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_hf, load_hf

from model.loading import load_parallel_model
from model.model_lora import apply_lora, lora_parameters, save_lora
from parallel.rope2d import patch_model_with_interleaved_2d_rope
from tests.serving.conftest import start_live

MESSAGES = [{"role": "user", "content": "seven small birds"}]


@pytest.fixture(scope="module")
def hf_with_adapter(tmp_path_factory, tiny_tokenizer):
    """A tiny Llama folder (with the tiny tokenizer) and a trained-looking adapter saved as a PEFT folder."""
    base = build_tiny_hf("llama", tmp_path_factory.mktemp("llama"), vocab_size=len(tiny_tokenizer), seed=4)
    tiny_tokenizer.save_pretrained(str(base))
    model = load_hf(base)
    patch_model_with_interleaved_2d_rope(model, ratio=0.5, branch_stride=32)
    apply_lora(model, rank=4)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)  # a fresh adapter would change nothing
    adapter = tmp_path_factory.mktemp("lora") / "adapter.pth"
    save_lora(model, adapter)
    return base, adapter.with_suffix("")  # the PEFT folder beside the .pth


@pytest.fixture(scope="module")
def hf_live(hf_with_adapter):
    base, folder = hf_with_adapter
    loaded = load_parallel_model(hf_base_model=str(base), lora_path=str(folder))
    srv = start_live(loaded, key=None, model="llama+adapter")
    yield srv, loaded
    srv.stop()


def test_hf_adapter_served_equals_hf_generate(hf_live, tiny_tokenizer):
    srv, loaded = hf_live
    assert loaded.kind == "hf" and loaded.branch_stride == 32  # the settings came with the adapter
    client = srv.openai()
    r = client.chat.completions.create(model=srv.model, messages=MESSAGES, max_tokens=10, temperature=0,
                                       extra_body={"ignore_eos": True})
    ids = tiny_tokenizer(tiny_tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = loaded.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=10, eos_token_id=None,
                                    pad_token_id=0)
    ref = tiny_tokenizer.decode(out[0, len(ids):].tolist(), skip_special_tokens=True)
    assert r.choices[0].message.content == ref
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 10


def test_hf_adapter_n_samples_are_reproducible(hf_live):
    srv, _ = hf_live
    client = srv.openai()
    a = client.completions.create(model=srv.model, prompt="a lazy dog", n=3, seed=5, max_tokens=6, temperature=1.0)
    b = client.completions.create(model=srv.model, prompt="a lazy dog", n=3, seed=5, max_tokens=6, temperature=1.0)
    assert [c.text for c in a.choices] == [c.text for c in b.choices] and len({c.text for c in a.choices}) == 3
