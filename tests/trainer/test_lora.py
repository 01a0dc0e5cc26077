"""MiniMind LoRA: only the adapter trains and is saved, the base file stays as it was, the run resumes exactly,
and inference with --lora_path reproduces the trained model."""

import hashlib
from pathlib import Path

import pytest
import torch
from posttrain import metric_rows, repo_tokenizer, run_and_resume, tiny_checkpoint, write_jsonl

from model.loading import load_parallel_model
from model.model_lora import apply_lora, set_lora_state_dict
from parallel_data.demo.corpus import build_sft
from parallel_data.parallel_collator import ParallelCollator
from parallel_data.parallel_dataset import ParallelSFTDataset
from trainer import train_lora
from trainer.engine import Trainer
from trainer.loss import batch_mask, token_mask


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lora")
    return tiny_checkpoint(d / "full_sft_32.pth", seed=7), write_jsonl(d / "sft.jsonl", build_sft(11, 24))


def lora_argv(files, *extra):
    base, data = files
    return lambda out: ["--init_weight", base, "--data_path", data, "--out_dir", str(out), "--batch_size", "2",
                        "--learning_rate", "5e-3", "--log_interval", "1", "--save_interval", "100",
                        "--num_workers", "0", "--max_seq_len", "256", "--lora_name", "toy", "--lora_rank", "4", *extra]


def logits_of(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch_mask(model, batch, "columnar"),
                     position_ids=batch["position_ids"], token_mask=token_mask(batch)).logits


def test_lora_trains_the_adapter_only_resumes_exactly_and_loads_for_inference(files, tmp_path):
    base, data = files
    before = digest(base)
    full, split = run_and_resume(train_lora.main, lora_argv(files), tmp_path, "lora/toy_32_metrics.jsonl")
    assert [r["step"] for r in full] == [1, 2, 3] and full == split
    assert digest(base) == before  # the base checkpoint is never written

    path = tmp_path / "full" / "lora" / "toy_32.pth"
    saved = torch.load(path, weights_only=True)
    adapter = saved["adapter_state_dict"]
    assert adapter and all("lora_" in k for k in adapter)  # the adapter alone, no base weights
    assert saved["meta"]["stage"] == "lora" and saved["meta"]["base_model"] == base
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)  # it learnt (B starts at 0)

    # inference: base + --lora_path == the base with the trained adapter set by hand, != the bare base
    tok = repo_tokenizer()
    loaded = load_parallel_model(model_path=base, lora_path=str(path))
    plain = load_parallel_model(model_path=base).model
    by_hand = load_parallel_model(model_path=base).model
    apply_lora(by_hand, 4)
    set_lora_state_dict(by_hand, adapter)
    ds = ParallelSFTDataset(tok, data_path=data, max_seq_len=256, shuffle=False)
    batch = ParallelCollator(tok).collate([{"branches": [u]} for u in list(ds.all_units())[:3]])
    got = logits_of(loaded.model.eval(), batch)
    assert torch.allclose(got, logits_of(by_hand.eval(), batch), atol=1e-6)
    assert float((got - logits_of(plain.eval(), batch)).abs().max()) > 1e-4


def test_only_adapter_parameters_are_trainable(files, tmp_path):
    t = Trainer(train_lora.parse_args([*lora_argv(files)(tmp_path), "--max_steps", "1"]), train_lora.LoRAStage())
    assert t.fit() == 0
    model = t.models.raw
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert len(metric_rows(tmp_path / "lora" / "toy_32_metrics.jsonl")) == 1
