"""The engine's seams, exercised by small test stages through real runs and exact resumes:
a loss hook with a frozen companion (distillation), trainable-parameter selection with an
adapter-only checkpoint (the LoRA shape), and a rollout phase that generates from the current weights."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.model_minimind import MiniMindConfig, MiniMindForCausalLM
from parallel.sampling import SamplingParams
from parallel_data.demo.corpus import build_pretrain
from parallel_data.parallel_collator import ParallelCollator
from trainer import train_pretrain
from trainer.engine import Companion, LossFn, LossOutput, Rollout, Trainer, samples_from_batch
from trainer.engine.models import weights_digest
from trainer.loss import batch_mask, token_mask

TINY = ["--hidden_size", "64", "--num_hidden_layers", "2", "--num_attention_heads", "4", "--num_key_value_heads", "2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("seams") / "pretrain.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in build_pretrain(13, 48)))
    return str(path)


def argv(data, out, *extra):
    return [*TINY, "--data_path", data, "--out_dir", str(out), "--batch_size", "2", "--batch_by_samples",
            "--max_branches_per_sample", "3", "--max_seq_len", "48", "--max_steps", "3", "--log_interval", "1",
            "--save_interval", "100", "--num_workers", "0", "--learning_rate", "2e-3", *extra]


def fit(stage, data, out, *extra) -> Trainer:
    trainer = Trainer(train_pretrain.parse_args(argv(data, out, *extra)), stage)
    assert trainer.fit() == 0
    return trainer


def records(out, stem):
    """The metric rows that must be identical across an interruption (timings left out)."""
    rows = [json.loads(x) for x in (Path(out) / f"{stem}_metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed_s")} for r in rows
            if "loss" in r and not r.get("summary")]


def split_and_resume(make_stage, data, tmp_path, *extra):
    """(uninterrupted trainer, resumed trainer): 3 steps in one go, and 2 steps then --resume."""
    full = fit(make_stage(), data, tmp_path / "full", *extra)
    fit(make_stage(), data, tmp_path / "split", *extra, "--stop_after_steps", "2")
    resumed = fit(make_stage(), data, tmp_path / "split", *extra, "--resume")
    return full, resumed


# --- a loss hook and a frozen companion ----------------------------------------------------------------
def tiny_teacher(vocab_size: int) -> MiniMindForCausalLM:
    with torch.random.fork_rng():
        torch.manual_seed(99)
        return MiniMindForCausalLM(MiniMindConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                  num_key_value_heads=1, vocab_size=vocab_size))


class DistillLoss(LossFn):
    """Cross-entropy plus 0.5 x KL(teacher || student) at the target positions, both summed."""

    def __init__(self, mask_mode, teacher):
        self.mask_mode, self.teacher = mask_mode, teacher

    def __call__(self, model, batch):
        kw = dict(input_ids=batch["input_ids"], attention_mask=batch_mask(model, batch, self.mask_mode),
                  position_ids=batch["position_ids"], token_mask=token_mask(batch), use_cache=False)
        sel = batch["labels"] != -100
        student = model(**kw).logits[sel].float()
        with torch.no_grad():
            teacher = self.teacher(**kw).logits[sel].float()
        ce = F.cross_entropy(student, batch["labels"][sel], reduction="sum")
        kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="sum")
        return LossOutput(ce + 0.5 * kl, int(sel.sum()), {"kl": float(kl.detach())})


class DistillStage(train_pretrain.PretrainStage):
    name = "distill"

    def build_companions(self, args, tokenizer, policy):
        return {"teacher": Companion(tiny_teacher(policy.config.vocab_size))}

    def build_loss(self, args, companions):
        return DistillLoss(args.mask_mode, companions["teacher"])


def test_a_loss_hook_with_a_frozen_teacher_trains_and_resumes_exactly(corpus, tmp_path):
    full, resumed = split_and_resume(DistillStage, corpus, tmp_path)
    rec_full, rec_split = records(tmp_path / "full", "distill_64"), records(tmp_path / "split", "distill_64")
    assert [r["step"] for r in rec_full] == [1, 2, 3] and all(r["kl"] > 0 for r in rec_full)
    assert rec_full == rec_split
    assert weights_digest(full.models.raw) == weights_digest(resumed.models.raw)
    teacher = full.models.companions["teacher"]
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert weights_digest(teacher) == weights_digest(tiny_teacher(teacher.config.vocab_size))  # never trained
    in_optimizer = {id(p) for g in full.optim.optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in teacher.parameters()}
    resume = torch.load(tmp_path / "split" / "distill_64_resume.pth", weights_only=True)
    assert resume["companions"] == {}  # a frozen companion is not part of the resume state


# --- trainable-parameter selection and what the checkpoint saves ----------------------------------------
class NormsOnlyStage(train_pretrain.PretrainStage):
    """The LoRA/PEFT shape: a fixed base, a few trained tensors, a checkpoint holding only those."""

    name = "norms"

    def select_trainable(self, model):
        for name, p in model.named_parameters():
            p.requires_grad_("norm" in name)

    def checkpoint_payload(self, model, tokenizer, meta):
        trained = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
        return {"format": "test-adapter", "trained": trained, "meta": meta}

    def build_model(self, args, tokenizer, *, resume):
        model, info = super().build_model(args, tokenizer, resume=False)  # the base: seeded, as in every run
        if resume:
            saved = torch.load(Path(args.out_dir) / f"{self.checkpoint_stem(args)}.pth", weights_only=True)
            model.load_state_dict(saved["trained"], strict=False)
            info = {"step": saved["meta"]["step"], "save_id": saved["meta"]["save_id"]}
        return model, info


def test_only_the_selected_parameters_train_and_the_checkpoint_holds_only_them(corpus, tmp_path):
    base = fit(NormsOnlyStage(), corpus, tmp_path / "base", "--learning_rate", "0", "--max_steps", "1").models.raw
    full, resumed = split_and_resume(NormsOnlyStage, corpus, tmp_path)
    for name, p in full.models.raw.named_parameters():
        assert torch.equal(p, dict(base.named_parameters())[name]) != ("norm" in name), name
    saved = torch.load(tmp_path / "full" / "norms_64.pth", weights_only=True)
    assert saved["trained"] and all("norm" in k for k in saved["trained"])
    n_trained = sum(p.numel() for p in full.models.raw.parameters() if p.requires_grad)
    assert sum(p.numel() for g in full.optim.optimizer.param_groups for p in g["params"]) == n_trained
    assert records(tmp_path / "full", "norms_64") == records(tmp_path / "split", "norms_64")
    assert weights_digest(full.models.raw) == weights_digest(resumed.models.raw)


# --- a rollout phase ---------------------------------------------------------------------------------
class ContinueOwnText(Rollout):
    """Toy RL-shaped rollout: generate 5 tokens after the first 6 of each branch, train on those 5."""

    def __init__(self, log):
        self.log = log

    def __call__(self, ctx, batch):
        prompts = [{"branches": [b[:6] for b in s["branches"]]} for s in samples_from_batch(batch)]
        results = ctx.generator().generate(prompts, SamplingParams(do_sample=True, temperature=1.0),
                                           max_new_tokens=5, seed=ctx.seed, eos_token_ids=[])
        self.log.append({"step": ctx.step, "weights": weights_digest(ctx.policy),
                         "tokens": [b.token_ids for r in results for b in r.branches]})
        samples = [{"branches": [{"input_ids": p + b.token_ids, "answer_offset": len(p)}
                                 for p, b in zip(g["branches"], r.branches)]} for g, r in zip(prompts, results)]
        return ParallelCollator(ctx.tokenizer, branch_stride=ctx.branch_stride).collate(samples)


class RolloutStage(train_pretrain.PretrainStage):
    name = "rollout"

    def __init__(self):
        super().__init__()
        self.log = []

    def build_rollout(self, args, tokenizer):
        return ContinueOwnText(self.log)


def test_a_rollout_stage_generates_from_the_current_weights_and_resumes_exactly(corpus, tmp_path):
    stages = []

    def make():
        stages.append(RolloutStage())
        return stages[-1]

    full, resumed = split_and_resume(make, corpus, tmp_path)
    log_full, log_split = stages[0].log, stages[1].log + stages[2].log
    assert [x["step"] for x in log_full] == [0, 1, 2]
    assert len({x["weights"] for x in log_full}) == 3  # each rollout saw the weights of its step
    assert all(len(t) == 5 for x in log_full for t in x["tokens"])
    assert log_full == log_split  # same generations after the resume: the rollout seed is replayed
    assert records(tmp_path / "full", "rollout_64") == records(tmp_path / "split", "rollout_64")
    assert weights_digest(full.models.raw) == weights_digest(resumed.models.raw)
    assert records(tmp_path / "full", "rollout_64")[-1]["targets_seen"] == sum(len(t) for x in log_full
                                                                               for t in x["tokens"])
