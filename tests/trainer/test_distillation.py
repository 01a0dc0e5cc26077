"""Knowledge distillation: the loss equals a brute-force KL/CE over full logits on parallel-branch batches,
`--alpha 0` is pure KL, the student's KL to the teacher falls, the teacher never changes, the front resumes."""

import hashlib
from pathlib import Path

import pytest
import torch
from posttrain import TINY, metric_rows, repo_tokenizer, run_and_resume, tiny_checkpoint, tiny_model, write_jsonl

from parallel_data.demo.corpus import build_sft
from parallel_data.parallel_collator import ParallelCollator
from parallel_data.parallel_dataset import ParallelSFTDataset
from trainer import train_distillation
from trainer.distill import DistillLoss, check_teacher
from trainer.loss import batch_mask, token_mask

STRIDE = 32


@pytest.fixture(scope="module")
def tok():
    return repo_tokenizer()


@pytest.fixture(scope="module")
def sft_path(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("kd") / "sft.jsonl", build_sft(21, 24))


def parallel_batch(tok, path, n_samples=2, branches=3, max_seq_len=256):
    """Samples of several conversations each (isolated branches after no main), as SFT batches them."""
    units = list(ParallelSFTDataset(tok, data_path=path, max_seq_len=max_seq_len, shuffle=False).all_units())
    samples = [{"branches": units[i * branches:(i + 1) * branches]} for i in range(n_samples)]
    batch = ParallelCollator(tok, branch_stride=STRIDE).collate(samples)
    assert int(batch["branch_counts"].min()) == branches
    return batch


def full_logits(model, batch, mask_mode):
    """Every position's logits, the output head over the whole sequence (no target selection)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch_mask(model, batch, mask_mode),
                position_ids=batch["position_ids"], token_mask=token_mask(batch))
    return out.logits


def brute_force(student, teacher, batch, mask_mode, alpha, T):
    """alpha * CE + (1 - alpha) * T^2 * sum_v p_t (log p_t - log p_s), from every position's full logits."""
    sel = batch["labels"] != -100
    s_all = full_logits(student, batch, mask_mode).float()[sel]
    with torch.no_grad():
        t_all = full_logits(teacher, batch, mask_mode).float()[sel]
    labels = batch["labels"][sel]
    ce = -torch.log_softmax(s_all, -1).gather(1, labels[:, None]).sum()
    p_t = torch.softmax(t_all / T, -1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(s_all / T, -1))).sum()
    return alpha * ce + (1 - alpha) * T * T * kl


@pytest.mark.parametrize("mask_mode,alpha,T", [("columnar", 0.5, 1.5), ("isolated", 0.0, 2.0), ("columnar", 1.0, 1.0)])
def test_distill_loss_equals_a_brute_force_reference(tok, sft_path, mask_mode, alpha, T):
    student = tiny_model(1, tok, branch_stride=STRIDE).train()
    teacher = tiny_model(2, tok, hidden_size=48, num_attention_heads=4, num_key_value_heads=2, branch_stride=STRIDE)
    check_teacher(teacher, student)
    batch = parallel_batch(tok, sft_path)
    out = DistillLoss(mask_mode, teacher, alpha=alpha, temperature=T)(student, batch)
    expected = brute_force(student, teacher, batch, mask_mode, alpha, T)
    assert out.targets == int((batch["labels"] != -100).sum())
    assert abs(out.loss.item() - expected.item()) <= 1e-4 * max(1.0, abs(expected.item()))
    g = torch.autograd.grad(out.loss, list(student.parameters()))
    g_ref = torch.autograd.grad(expected, list(student.parameters()))
    assert max(float((a - b).abs().max()) for a, b in zip(g, g_ref)) <= 1e-5
    if alpha == 0:  # pure distillation: the loss is T^2 x the KL metric, the labels play no part
        assert abs(out.loss.item() - T * T * out.metrics["kl"]) <= 1e-4 * out.loss.item()


def test_the_students_kl_falls_and_the_teacher_never_changes(tok, sft_path):
    student = tiny_model(3, tok).train()
    teacher = tiny_model(4, tok, hidden_size=64, num_attention_heads=4, num_key_value_heads=2)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    batch = parallel_batch(tok, sft_path, n_samples=1, max_seq_len=160)
    loss_fn = DistillLoss("columnar", teacher, alpha=0.0, temperature=1.0)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-2)
    kls = []
    for _ in range(10):
        out = loss_fn(student, batch)
        kls.append(out.metrics["kl"] / out.targets)
        opt.zero_grad()
        (out.loss / out.targets).backward()
        opt.step()
    assert kls[-1] < 0.5 * kls[0], kls
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())


def test_a_teacher_with_other_positions_or_vocabulary_is_refused(tok):
    student = tiny_model(0, tok, branch_stride=STRIDE)
    with pytest.raises(ValueError, match="branch_stride"):
        check_teacher(tiny_model(0, tok, branch_stride=64), student)
    with pytest.raises(ValueError, match="vocabulary"):
        check_teacher(tiny_model(0, tok, vocab_size=len(tok) + 8), student)


def test_distillation_front_fresh_student_resumes_exactly(tok, sft_path, tmp_path):
    teacher = tiny_checkpoint(tmp_path / "teacher.pth", seed=9, hidden_size=48, num_attention_heads=4,
                              num_key_value_heads=2)
    before = hashlib.sha256(Path(teacher).read_bytes()).hexdigest()

    def argv(out):
        return [*TINY, "--init_weight", "none", "--teacher_path", teacher, "--data_path", sft_path,
                "--out_dir", str(out), "--batch_size", "2", "--learning_rate", "2e-3", "--alpha", "0.3",
                "--temperature", "2", "--log_interval", "1", "--save_interval", "100", "--num_workers", "0",
                "--max_seq_len", "256"]

    full, split = run_and_resume(train_distillation.main, argv, tmp_path, "distill_32_metrics.jsonl")
    assert [r["step"] for r in full] == [1, 2, 3] and full == split
    assert all(r["kl"] > 0 and r["ce"] > 0 for r in full)
    saved = torch.load(tmp_path / "full" / "distill_32.pth", weights_only=True)
    assert saved["meta"]["stage"] == "distill" and saved["config"]["hidden_size"] == 32
    assert hashlib.sha256(Path(teacher).read_bytes()).hexdigest() == before
    assert len(metric_rows(tmp_path / "split" / "distill_32_metrics.jsonl")) == 3
