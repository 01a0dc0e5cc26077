"""Self-distillation of columnar decoding (trainer/hf.py `SelfDistillLoss`, --self_distill) and the adapter-shape
flags of the HF LoRA fronts (--lora_target_modules, --lora_alpha), on a tiny random Llama.

Oracles: inside `lora_disabled` the model computes as the plain base model and the adapter is back on at exit;
the teacher's logits of a columnar sample are the plain model's logits of each conversation alone; at
initialisation (B = 0) a one-branch sample has zero KL; the front trains only the named layers."""

import json

import pytest
import torch
from conftest import build_tiny_hf, load_hf

from model.loading import load_parallel_model
from model.model_lora import apply_lora, lora_disabled, lora_parameters, read_lora
from parallel_data.parallel_collator import ParallelCollator
from parallel_data.parallel_dataset import ParallelSFTDataset
from trainer import train_hf_lora
from trainer.hf import SelfDistillLoss

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_tokenizer):
    d = tmp_path_factory.mktemp("sd")
    folder = build_tiny_hf("llama", d / "llama", vocab_size=len(tiny_tokenizer))
    tiny_tokenizer.save_pretrained(str(folder))
    data = d / "sft.jsonl"
    with open(data, "w") as f:
        for i in range(12):
            f.write(json.dumps({"conversations": [{"role": "user", "content": f"what is {i} plus {i % 5}"},
                                                  {"role": "assistant", "content": f"{i + i % 5} it is"}]}) + "\n")
    return {"folder": str(folder), "data": str(data)}


def _units(tok, data):
    return list(ParallelSFTDataset(tok, data_path=data, max_seq_len=128).all_units())


def _lora_model(folder, seed=0):
    m = load_parallel_model(hf_base_model=folder, branch_stride=64, rope_2d_ratio=0.5).model
    torch.manual_seed(seed)
    apply_lora(m, rank=4)
    for _, p in lora_parameters(m):  # a non-zero adapter, so "off" and "on" differ
        torch.nn.init.normal_(p, std=0.2)
    return m


def test_lora_disabled_is_the_base_model_and_restores_the_adapter(tiny):
    m, plain = _lora_model(tiny["folder"]).eval(), load_hf(tiny["folder"])
    ids = torch.randint(3, 200, (2, 9))
    with torch.no_grad():
        on = m(ids).logits
        with lora_disabled(m):
            off = m(ids).logits
        again = m(ids).logits
        ref = plain(ids).logits
    assert torch.allclose(off, ref, atol=1e-5) and not torch.allclose(on, ref, atol=1e-3)
    assert torch.equal(again, on)
    assert all(p.requires_grad for _, p in lora_parameters(m))  # still what trains


def test_teacher_is_each_branch_alone_through_the_plain_model(tiny, tiny_tokenizer):
    m, plain = _lora_model(tiny["folder"]), load_hf(tiny["folder"])
    units = _units(tiny_tokenizer, tiny["data"])[:3]
    batch = ParallelCollator(tiny_tokenizer, branch_stride=64).collate([{"branches": units}])
    captured = {}
    loss_fn = SelfDistillLoss("columnar")

    import trainer.hf as hf_mod

    real = hf_mod.target_logits

    def spy(model, b, mode):
        out = real(model, b, mode)
        captured.setdefault(mode, out[0].detach())
        return out

    hf_mod.target_logits = spy
    try:
        out = loss_fn(m, batch)
    finally:
        hf_mod.target_logits = real
    # the oracle: each conversation alone through the unpatched model, at its answer positions
    expect = []
    sel = batch["labels"][0] != -100
    bids = batch["branch_ids"][0][sel]
    per_branch = {}
    for k, u in enumerate(units, start=1):
        with torch.no_grad():
            logits = plain(torch.tensor([u["input_ids"]])).logits[0]
        mask = torch.tensor(u["loss_mask"][1:] + [0], dtype=torch.bool)
        per_branch[k] = logits[mask]
    # target rows come in flat (time-major) order; pick each branch's rows in its own order
    seen = {k: 0 for k in per_branch}
    for b in bids.tolist():
        expect.append(per_branch[b][seen[b]])
        seen[b] += 1
    assert torch.allclose(captured["isolated"], torch.stack(expect), atol=1e-4)
    assert out.targets == int(sel.sum()) and out.metrics["kl"] > 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().max()) > 0 for _, p in lora_parameters(m))


def test_one_branch_at_initialisation_has_zero_kl(tiny, tiny_tokenizer):
    m = load_parallel_model(hf_base_model=tiny["folder"], branch_stride=64, rope_2d_ratio=0.5).model
    apply_lora(m, rank=4)  # B = 0: the adapter changes nothing
    units = _units(tiny_tokenizer, tiny["data"])
    coll = ParallelCollator(tiny_tokenizer, branch_stride=64)
    one = SelfDistillLoss("columnar", alpha=0.0)(m, coll.collate([{"branches": units[:1]}]))
    assert one.metrics["kl"] == pytest.approx(0.0, abs=1e-6)
    two = SelfDistillLoss("columnar", alpha=0.0)(m, coll.collate([{"branches": units[:2]}]))
    assert two.metrics["kl"] > 1e-6  # under the columnar mask the second branch sees the first
    mixed = SelfDistillLoss("columnar", alpha=1.0)(m, coll.collate([{"branches": units[:2]}]))
    assert float(mixed.loss.detach()) == pytest.approx(mixed.metrics["ce"], rel=1e-6)  # alpha 1: plain cross-entropy


def test_front_self_distills_only_the_named_layers(tiny, tmp_path):
    out = tmp_path / "run"
    argv = ["--base_model", tiny["folder"], "--data_path", tiny["data"], "--data_mode", "parallel_sft",
            "--branches_per_sample", "3", "--batch_size", "1", "--batch_by_samples", "--branch_stride", "64",
            "--rope_2d_ratio", "0.5", "--lora_rank", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj",
            "k_proj", "v_proj", "o_proj", "--self_distill", "--max_steps", "3", "--log_interval", "1",
            "--save_interval", "100", "--learning_rate", "1e-2", "--max_seq_len", "96", "--num_workers", "0",
            "--out_dir", str(out)]
    assert train_hf_lora.main(argv) == 0
    rows = [json.loads(x) for x in (out / "lora" / "hf_lora_hf_metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r and "summary" not in r]
    assert len(steps) == 3 and all("kl" in r for r in steps)
    f = read_lora(out / "lora" / "hf_lora_hf_final.pth")
    layers = {k.split(".lora_")[0].rsplit(".", 1)[1] for k in f.state_dict}
    assert layers == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert f.config.lora_alpha == 8


@pytest.mark.parametrize("extra, msg", [
    (["--distill_alpha", "0.5"], "--distill_alpha is a setting of --self_distill"),
    (["--distill_temperature", "2"], "--distill_temperature is a setting of --self_distill"),
])
def test_distill_settings_need_self_distill(tiny, tmp_path, capsys, extra, msg):
    argv = ["--base_model", tiny["folder"], "--data_path", tiny["data"], "--out_dir", str(tmp_path), *extra]
    assert train_hf_lora.main(argv) == 2
    assert msg in capsys.readouterr().err


def test_adapter_shape_flags_are_refused_when_continuing_an_adapter(tiny, tmp_path, capsys):
    adapter = tmp_path / "a.pth"
    adapter.write_bytes(b"x")
    argv = ["--base_model", tiny["folder"], "--data_path", tiny["data"], "--out_dir", str(tmp_path),
            "--load_lora", str(adapter), "--lora_target_modules", "q_proj"]
    assert train_hf_lora.main(argv) == 2
    assert "--lora_target_modules shapes a new adapter" in capsys.readouterr().err
