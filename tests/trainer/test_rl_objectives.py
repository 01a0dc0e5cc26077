"""The RL building blocks of trainer/rl.py against brute-force references: KL estimators, group advantages,
GAE, per-sequence segments of a parallel batch, the clipped objectives and the exact-match reward."""

import math
import random

import pytest
import torch

from parallel_data.parallel_collator import ParallelCollator
from trainer.rl import (
    TargetSegments,
    clipped_policy_loss,
    clipped_value_loss,
    exact_match_reward,
    extract_answer,
    gae,
    group_advantages,
    kl_estimate,
)


def test_kl_estimators():
    logp, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.5, -1.0, -0.5])
    d = ref - logp
    assert torch.allclose(kl_estimate(logp, ref, "k1"), logp - ref)
    assert torch.allclose(kl_estimate(logp, ref, "k2"), 0.5 * d ** 2)
    assert torch.allclose(kl_estimate(logp, ref, "k3"), torch.exp(d) - d - 1)
    assert (kl_estimate(torch.randn(100), torch.randn(100), "k3") >= 0).all()
    assert kl_estimate(logp, logp, "k3").abs().max() == 0
    # k3 is an unbiased estimate of KL(p || q) under samples of p
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.4, 0.4, 0.2])
    exact = float((p * (p / q).log()).sum())
    g = torch.Generator().manual_seed(0)
    s = torch.multinomial(p, 200_000, replacement=True, generator=g)
    assert abs(float(kl_estimate(p.log()[s], q.log()[s], "k3").mean()) - exact) < 3e-3
    with pytest.raises(ValueError, match="k1, k2, k3|one of"):
        kl_estimate(logp, ref, "k4")


def test_group_advantages():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0], [0.0, 3.0, 0.0, 0.0]])
    none = group_advantages(r, "none")
    assert torch.allclose(none, r - r.mean(1, keepdim=True))
    grp = group_advantages(r, "group")
    for i in range(3):
        std = float(r[i].std())
        assert torch.allclose(grp[i], (r[i] - r[i].mean()) / (std + 1e-4))
    assert torch.equal(grp[1], torch.zeros(4))  # equal rewards: no signal, no nan
    assert torch.allclose(group_advantages(r, "batch"), (r - r.mean(1, keepdim=True)) / (float(r.std()) + 1e-4))


def _gae_brute(r, v, gamma, lam):
    n = len(r)
    out = []
    for t in range(n):
        total = 0.0
        for k in range(t, n):
            nv = v[k + 1] if k + 1 < n else 0.0
            total += (gamma * lam) ** (k - t) * (r[k] + gamma * nv - v[k])
        out.append(total)
    return out


def test_gae_matches_the_definition():
    rng = random.Random(0)
    lengths = [1, 4, 7, 3]
    L = max(lengths)
    rewards, values = torch.zeros(4, L), torch.zeros(4, L)
    mask = torch.arange(L)[None] < torch.tensor(lengths)[:, None]
    for s, n in enumerate(lengths):
        rewards[s, :n] = torch.tensor([rng.uniform(-1, 1) for _ in range(n)])
        values[s, :n] = torch.tensor([rng.uniform(-1, 1) for _ in range(n)])
    for gamma, lam in ((1.0, 0.95), (0.9, 1.0), (0.99, 0.0)):
        adv, ret = gae(rewards, values, mask, gamma, lam)
        for s, n in enumerate(lengths):
            ref = _gae_brute(rewards[s, :n].tolist(), values[s, :n].tolist(), gamma, lam)
            assert torch.allclose(adv[s, :n], torch.tensor(ref), atol=1e-5)
            assert torch.allclose(ret[s, :n], adv[s, :n] + values[s, :n])
        assert not adv[~mask].any() and not ret[~mask].any()


def test_target_segments_group_a_parallel_batch_per_branch(tiny_tokenizer):
    samples = [{"main": [5, 6, 7], "branches": [{"input_ids": [8, 9, 10, 11], "answer_offset": 1},
                                                {"input_ids": [8, 12], "answer_offset": 1}]},
               {"branches": [{"input_ids": [3, 4, 5, 6, 7], "answer_offset": 2}, {"input_ids": [9, 9, 9],
                                                                                   "answer_offset": 1}]}]
    batch = ParallelCollator(tiny_tokenizer, branch_stride=16).collate(samples)
    seg = TargetSegments(batch["labels"], batch["branch_ids"])
    assert seg.lengths.tolist() == [3, 1, 3, 2]  # (row 0, branch 1), (row 0, branch 2), (row 1, ...)
    assert seg.rows.tolist() == [0, 0, 1, 1] and seg.branches.tolist() == [1, 2, 1, 2]
    labels = batch["labels"][batch["labels"] != -100]
    packed = seg.pack(labels)  # each segment's targets in time order
    assert packed.tolist() == [[9, 10, 11], [12, 0, 0], [5, 6, 7], [9, 9, 0]]
    assert torch.equal(seg.unpack(packed), labels)
    assert torch.equal(seg.mask, packed != 0)
    per = seg.per_target(torch.tensor([10.0, 20.0, 30.0, 40.0]))
    assert torch.equal(seg.pack(per)[seg.mask], torch.tensor([10.0] * 3 + [20.0] + [30.0] * 3 + [40.0] * 2))
    assert torch.equal(seg.sums(torch.ones(len(labels))), seg.lengths.float())


def test_clipped_objectives():
    logp, old = torch.tensor([0.0, 0.5, -0.5, 0.1]).log1p(), torch.zeros(4)
    adv = torch.tensor([1.0, 1.0, -1.0, -2.0])
    loss, clipped = clipped_policy_loss(logp, old, adv, 0.2, 0.3)
    ratio = torch.exp(logp - old)
    ref = -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.3) * adv)
    assert torch.allclose(loss, ref)
    assert clipped.tolist() == [False, True, True, False]  # ratio 1.5 > 1.3 with A > 0; 0.5 < 0.8 with A < 0
    v, old_v, ret = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, 0.5, 0.5]), torch.tensor([1.0, 1.0, 0.0])
    vl, vclip = clipped_value_loss(v, old_v, ret, 0.2)
    v_c = torch.tensor([0.7, 0.3, 0.7])
    assert torch.allclose(vl, 0.5 * torch.maximum((v - ret) ** 2, (v_c - ret) ** 2))
    assert vclip.tolist() == [True, False, False]  # only the first moved past the clip towards its return


def test_exact_match_reward():
    texts = [" 42 ", "It is <answer> 7 </answer>", "<answer>1</answer> then <answer>2</answer>", "41", ""]
    assert exact_match_reward(texts, ["42", "7", "2", "42", "0"]).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert extract_answer("no tags\n") == "no tags"
    assert math.isclose(float(exact_match_reward(["3"], [3])[0]), 1.0)
