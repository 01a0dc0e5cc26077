"""DPO: shared-prompt pairs equal separate sequences, the loss learns the preferences, seed learning rates stay
finite, a precomputed reference equals the live one, and the front resumes exactly."""

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from posttrain import metric_rows, repo_tokenizer, run_and_resume, tiny_checkpoint, tiny_model, val_rows, write_jsonl

from parallel_data.demo.corpus import build_dpo
from parallel_data.parallel_collator import ParallelCollator
from parallel_data.preference import PairUnits, pair_rows, pair_sequences
from trainer import train_dpo
from trainer.engine import Trainer
from trainer.logprobs import per_branch_sum, target_logits, token_logprobs
from trainer.preference import DPOLoss, ReferenceTable, dpo_losses, pair_batches, precompute_reference

TRL_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
               "logps/rejected")


@pytest.fixture(scope="module")
def tok():
    return repo_tokenizer()


def pair_units(tok, n: int, seed: int = 3, layout: str = "shared") -> list[dict]:
    build = PairUnits(tok, 256, "pairs.jsonl", layout)
    return [build(rec, i + 1)[0] for i, rec in enumerate(build_dpo(seed, n))]


def separate_sequence_losses(model, ref, units, tok, stride, *, beta, loss_type):
    """The reference recipe: every response scored in its own plain sequence, one row each."""
    rows = ParallelCollator(tok, branch_stride=stride).collate([r for u in units for r in pair_rows(u)])
    avg = loss_type == "ipo"

    def logps(m):
        logits, labels, _ = target_logits(m, rows, "isolated")
        lp = token_logprobs(logits, labels)
        per = per_branch_sum(lp, rows)[:, 1]
        if avg:
            per = per / per_branch_sum(torch.ones_like(lp), rows)[:, 1]
        return per[0::2], per[1::2]

    pol_c, pol_r = logps(model)
    with torch.no_grad():
        ref_c, ref_r = logps(ref)
    return dpo_losses(pol_c, pol_r, ref_c, ref_r, beta=beta, loss_type=loss_type).sum()


def grads_of(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("scheme,loss_type", [("additive", "sigmoid"), ("reference", "ipo"), ("additive", "hinge")])
def test_shared_prompt_pairs_equal_separate_sequences(tok, scheme, loss_type):
    stride = 16
    model = tiny_model(1, tok, rope_2d_scheme=scheme, branch_stride=stride).train()
    ref = tiny_model(2, tok, rope_2d_scheme=scheme, branch_stride=stride)
    units = pair_units(tok, 6)
    assert all(len(u["main"]) > 5 for u in units)  # the prompt really is shared
    assert all(pair_sequences(u) == pair_sequences(s) for u, s in zip(units, pair_units(tok, 6, layout="separate")))
    loss_fn = DPOLoss(ref, beta=0.1, loss_type=loss_type)
    expected = separate_sequence_losses(model, ref, units, tok, stride, beta=0.1, loss_type=loss_type)
    g_expected = grads_of(model, expected)
    for layout in ("shared", "separate"):
        batch = ParallelCollator(tok, branch_stride=stride).collate(pair_units(tok, 6, layout=layout))
        out = loss_fn(model, batch)
        assert out.targets == 6
        assert abs(float(out.loss) - float(expected)) <= 1e-5 * max(1.0, abs(float(expected))), layout  # IPO ~25
        g = grads_of(model, out.loss)
        assert g.keys() == g_expected.keys()
        assert max(float((g[k] - g_expected[k]).abs().max()) for k in g) <= 1e-5, layout
    shared = ParallelCollator(tok).collate(units)
    assert shared["num_tokens"] < sum(len(c) + len(r) for c, r in map(pair_sequences, units))  # fewer tokens


def test_dpo_learns_the_preferences_and_its_reward_accuracy_rises(tok):
    policy, ref = tiny_model(0, tok).train(), tiny_model(0, tok)
    batch = ParallelCollator(tok).collate(pair_units(tok, 16))
    loss_fn = DPOLoss(ref, beta=0.1)
    opt = torch.optim.AdamW(policy.parameters(), lr=5e-3)
    history = []
    for _ in range(25):
        out = loss_fn(policy, batch)
        history.append((float(out.loss) / out.targets, out.metrics["rewards/accuracies"] / out.targets))
        opt.zero_grad()
        (out.loss / out.targets).backward()
        opt.step()
    (first_loss, first_acc), (last_loss, last_acc) = history[0], history[-1]
    assert abs(first_loss - math.log(2)) < 1e-6 and first_acc == 0.0  # policy == reference: margins are all 0
    assert last_loss < 0.35 and last_acc >= 0.9, history[-1]


def test_no_nan_at_the_seeds_learning_rates(tok):
    batch = ParallelCollator(tok).collate(pair_units(tok, 4))
    for lr in (4e-8, 1e-8):  # MiniMind's and MiniLLM's DPO defaults
        for dtype in (None, torch.bfloat16):
            policy, ref = tiny_model(0, tok).train(), tiny_model(0, tok)
            loss_fn = DPOLoss(ref, beta=0.1)
            opt = torch.optim.AdamW(policy.parameters(), lr=lr)
            for _ in range(3):
                with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                    out = loss_fn(policy, batch)
                loss = out.loss / out.targets
                assert math.isfinite(float(loss)) and abs(float(loss) - math.log(2)) < 1e-3, (lr, dtype)
                opt.zero_grad()
                loss.backward()
                opt.step()
            assert all(torch.isfinite(p).all() for p in policy.parameters())


def test_a_precomputed_reference_equals_the_live_one(tok):
    policy, ref = tiny_model(0, tok).train(), tiny_model(5, tok)
    units = pair_units(tok, 10)
    table = precompute_reference(ref, pair_batches(units, tok, 3), device=torch.device("cpu"))
    assert isinstance(table, ReferenceTable) and len(table) == 10
    batch = ParallelCollator(tok, branch_stride=64).collate(units[2:7])
    for loss_type in ("sigmoid", "ipo"):
        live, cached = DPOLoss(ref, loss_type=loss_type)(policy, batch), DPOLoss(table, loss_type=loss_type)(policy,
                                                                                                           batch)
        assert abs(float(live.loss) - float(cached.loss)) <= 1e-5
        assert all(abs(live.metrics[k] - cached.metrics[k]) <= 1e-4 for k in TRL_METRICS)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("dpo")
    return tiny_checkpoint(d / "full_sft_32.pth", seed=4), write_jsonl(d / "dpo.jsonl", build_dpo(5, 40))


def dpo_argv(files, *extra):
    base, data = files
    return lambda out: ["--init_weight", base, "--data_path", data, "--out_dir", str(out), "--batch_size", "4",
                        "--learning_rate", "1e-3", "--log_interval", "1", "--save_interval", "100",
                        "--num_workers", "0", "--max_seq_len", "256", *extra]


def test_dpo_front_with_a_precomputed_reference_resumes_exactly(files, tmp_path):
    full, split = run_and_resume(train_dpo.main, dpo_argv(files, "--precompute_ref"), tmp_path, "dpo_32_metrics.jsonl")
    assert [r["step"] for r in full] == [1, 2, 3] and full == split
    assert all(0 <= r["rewards/accuracies"] <= 1 and math.isfinite(r["loss"]) for r in full)
    assert abs(full[0]["loss"] - math.log(2)) < 1e-4  # step 1: policy == reference
    saved = torch.load(tmp_path / "full" / "dpo_32.pth", weights_only=True)
    assert saved["meta"]["stage"] == "dpo" and saved["config"]["mask_mode"] == "columnar"  # the model keeps its rule

    args = train_dpo.parse_args([*dpo_argv(files, "--val_samples", "8", "--val_interval", "3")(tmp_path / "live"),
                                 "--max_steps", "3"])
    live = Trainer(args, train_dpo.DPOStage())
    assert live.fit() == 0 and "reference" in live.models.companions
    rows = metric_rows(tmp_path / "live" / "dpo_32_metrics.jsonl")
    assert len(rows) == 3  # 8 pairs held out: other batches, other losses; the first one is still ln 2
    assert abs(rows[0]["loss"] - math.log(2)) < 1e-4
    val = val_rows(tmp_path / "live" / "dpo_32_metrics.jsonl")
    assert val and all(f"val_{k}" in val[-1] for k in TRL_METRICS)


def test_precompute_releases_the_reference_and_matches_live_training(files, tmp_path):
    runs = {}
    for name, extra in (("cached", ("--precompute_ref",)), ("live", ())):
        t = Trainer(train_dpo.parse_args([*dpo_argv(files, *extra)(tmp_path / name), "--max_steps", "2"]),
                    train_dpo.DPOStage())
        assert t.fit() == 0
        runs[name] = (t, metric_rows(tmp_path / name / "dpo_32_metrics.jsonl"))
    assert runs["cached"][0].models.companions == {} and runs["cached"][0].models.specs == {}
    for a, b in zip(runs["cached"][1], runs["live"][1]):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 and abs(a["rewards/margins"] - b["rewards/margins"]) <= 1e-4


@pytest.mark.slow
def test_two_ranks_share_the_precomputed_reference(files, tmp_path):
    """Under torchrun each rank scores a share of the pairs; the merged table covers every rank's batches
    (a missing pair would be an error), step 1 is still ln 2, and the ranks end with identical weights."""
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "trainer/train_dpo.py", *dpo_argv(files, "--precompute_ref", "--batch_size", "2")(tmp_path), "--max_steps",
           "2", "--ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "weights identical on all 2 ranks" in r.stderr and "reference log-probabilities of 40 pairs" in r.stderr
    rows = metric_rows(tmp_path / "dpo_32_metrics.jsonl")
    assert [x["step"] for x in rows] == [1, 2] and abs(rows[0]["loss"] - math.log(2)) < 1e-4


def test_a_stop_signal_ends_the_precompute_at_once(tok):
    """SIGTERM during the precompute (nothing trained yet): exit 143 before the next batch, not after all."""
    from trainer.engine.interrupt import StopFlag

    stop, seen = StopFlag(), []

    def progress(done):
        seen.append(done)
        stop.request(signal.SIGTERM)  # the signal arrives while the first batch is scored

    with pytest.raises(SystemExit) as e:
        precompute_reference(tiny_model(5, tok), pair_batches(pair_units(tok, 6), tok, 2), device=torch.device("cpu"),
                             progress=progress, stop=stop)
    assert e.value.code == 143 and seen == [1]
