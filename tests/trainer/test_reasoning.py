"""Reasoning distillation: the R1 format check, tag weights on exactly the tag tokens, the weighted loss against a
brute-force reference, format accuracy on held-out data at validation, and an exact resume."""

import math
import re

import pytest
import torch
from posttrain import metric_rows, repo_tokenizer, run_and_resume, tiny_checkpoint, tiny_model, val_rows, write_jsonl

from parallel_data.demo.posttrain import build_reason
from parallel_data.parallel_collator import ParallelCollator
from parallel_data.reasoning import R1_TAGS, ReasonDataset, check_r1_format, heldout_prompts
from trainer import train_distill_reason
from trainer.loss import CrossEntropyLoss, batch_mask, token_mask
from trainer.reasoning import WeightedCrossEntropyLoss

TAGS = re.compile("|".join(re.escape(t) for t in R1_TAGS))


@pytest.fixture(scope="module")
def tok():
    return repo_tokenizer()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("reason") / "reason.jsonl", build_reason(17, 24))


@pytest.mark.parametrize("text,ok", [
    ("<think>\n7 + 5 = 12\n</think>\n<answer>\n12\n</answer>", True),
    ("  <think>a</think><answer>b</answer>\n", True),
    ("<think>a</think>", False),                                   # no answer
    ("<answer>b</answer><think>a</think>", False),                 # wrong order
    ("<think>a</think><answer>b</answer> more", False),            # text after the answer
    ("<think>a<think>b</think><answer>c</answer>", False),         # a nested tag
    ("<think>a</think><answer>b</answer><answer>c</answer>", False),  # two answers
])
def test_r1_format_check(text, ok):
    assert check_r1_format(text) is ok


def reason_batch(tok, path, tag_weight, n=4):
    ds = ReasonDataset(tok, data_path=path, max_seq_len=256, shuffle=False, tag_weight=tag_weight)
    units = list(ds.all_units())[:n]
    return ParallelCollator(tok).collate([{"branches": units[:2]}, {"branches": units[2:n]}])


def test_tag_weights_cover_exactly_the_tags(tok, data):
    batch = reason_batch(tok, data, 7.0)
    weights, labels = batch["label_weights"], batch["labels"]
    sel = labels != -100
    assert set(weights[sel].unique().tolist()) == {1.0, 7.0} and bool((weights[~sel] == 0).all())
    traces = 0
    for b in range(labels.shape[0]):
        for branch in batch["branch_ids"][b][sel[b]].unique().tolist():  # one trace per branch, in its own order
            here = sel[b] & (batch["branch_ids"][b] == branch)
            ids, w = labels[b][here].tolist(), weights[b][here].tolist()
            tagged_text = tok.decode([i for i, x in zip(ids, w) if x == 7.0])
            # every tag of the trace is weighted, and the weighted tokens hold little else (token boundaries)
            assert all(tagged_text.count(t) == 1 for t in R1_TAGS), tagged_text
            assert len(TAGS.sub("", tagged_text).strip()) <= 8, tagged_text
            assert not TAGS.search(tok.decode([i for i, x in zip(ids, w) if x == 1.0]))  # no unweighted tag
            traces += 1
    assert traces == 4


def full_logits_ce(model, batch):
    out = model(input_ids=batch["input_ids"], attention_mask=batch_mask(model, batch, "columnar"),
                position_ids=batch["position_ids"], token_mask=token_mask(batch))
    sel = batch["labels"] != -100
    return torch.nn.functional.cross_entropy(out.logits[sel].float(), batch["labels"][sel], reduction="none"), sel


def test_weighted_loss_equals_a_brute_force_reference(tok, data):
    model = tiny_model(2, tok)
    batch = reason_batch(tok, data, 10.0)
    out = WeightedCrossEntropyLoss("columnar")(model, batch)
    ce, sel = full_logits_ce(model, batch)
    expected = (batch["label_weights"][sel] * ce).sum()
    assert out.targets == int(sel.sum())
    assert abs(out.loss.item() - expected.item()) <= 1e-4 * expected.item()
    assert abs(out.metrics["ce"] - ce.sum().item()) <= 1e-4 * ce.sum().item()  # unweighted, comparable with SFT
    plain = reason_batch(tok, data, 1.0)  # tag_weight 1 is plain SFT
    assert abs(WeightedCrossEntropyLoss("columnar")(model, plain).loss.item()
               - CrossEntropyLoss("columnar")(model, plain).loss.item()) <= 1e-4 * out.metrics["ce"]


def test_heldout_prompts_end_at_the_assistants_turn(tok, data):
    ds = ReasonDataset(tok, data_path=data, max_seq_len=256, val_samples=4)
    prompts = heldout_prompts(ds, 3)
    assert len(prompts) == 3
    for p in prompts:
        text = tok.decode(p)
        assert "<think>" not in text and text.rstrip().endswith("assistant")


def test_reason_front_reports_format_accuracy_and_resumes_exactly(data, tmp_path):
    base = tiny_checkpoint(tmp_path / "full_sft_32.pth", seed=6)

    def argv(out):
        return ["--init_weight", base, "--data_path", data, "--out_dir", str(out), "--batch_size", "2",
                "--learning_rate", "2e-3", "--log_interval", "1", "--save_interval", "100", "--num_workers", "0",
                "--max_seq_len", "256", "--val_samples", "4", "--val_interval", "2", "--format_eval_samples", "2",
                "--max_new_tokens", "6"]

    full, split = run_and_resume(train_distill_reason.main, argv, tmp_path, "reason_32_metrics.jsonl")
    assert [r["step"] for r in full] == [1, 2, 3] and full == split
    assert all(r["loss"] > r["ce"] > 0 for r in full)  # per target: the tags weigh 10, the ce metric 1
    for run in ("full", "split"):
        val = val_rows(tmp_path / run / "reason_32_metrics.jsonl")
        assert val and all(0 <= r["val_format_accuracy"] <= 1 and r["val_format_samples"] == 2 for r in val)
        assert all(abs(r["val_ppl"] - math.exp(r["val_ce"])) <= 1e-6 * r["val_ppl"] for r in val)  # plain CE's ppl
    saved = torch.load(tmp_path / "full" / "reason_32.pth", weights_only=True)
    assert saved["meta"]["stage"] == "reason"
    assert metric_rows(tmp_path / "full" / "reason_32_metrics.jsonl")[0]["step"] == 1
