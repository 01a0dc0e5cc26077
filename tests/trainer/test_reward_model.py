"""Reward model (trainer/train_reward_model.py): the shared-prompt pair layout scores each response exactly as its
own sequence (== what PPO / GRPO read), held-out pairwise accuracy rises well above chance on a learnable toy
preference, the centering term, an exact resume, and a checkpoint PPO loads with --reward_model_path."""

import json
import random

import pytest
import torch
from rl_toys import fit, metric_rows, prompt_file, split_and_resume, tiny_checkpoint

from model.checkpoint import read_checkpoint
from model.value_head import ValueModel, value_model_from_payload
from parallel_data.parallel_collator import ParallelCollator
from parallel_data.preference import pair_rows, pair_sample
from trainer import train_ppo, train_reward_model
from trainer.engine import RolloutContext
from trainer.engine.models import weights_digest
from trainer.reward_model import bradley_terry_losses, pair_rewards
from trainer.rollouts import Completion, Prompt, RewardModelScore

GOOD, BAD = ["sure, here it is", "glad to help", "of course"], ["no", "go away", "figure it out"]


def pair_file(path, n: int, seed: int = 0):
    """Learnable toy preference: a polite answer is preferred to a rude one, whatever the question."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q = [{"role": "user", "content": f"question {rng.randint(0, 99)} about {rng.choice('abcdef')}"}]
        rows.append({"chosen": [*q, {"role": "assistant", "content": rng.choice(GOOD)}],
                     "rejected": [*q, {"role": "assistant", "content": rng.choice(BAD)}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def toy(tmp_path_factory, tiny_tokenizer):
    d = tmp_path_factory.mktemp("rm")
    return {"init": str(tiny_checkpoint(d / "init.pth", tiny_tokenizer)), "data": pair_file(d / "pairs.jsonl", 96)}


def argv(toy, *extra):
    return ["--data_path", toy["data"], "--init_weight", toy["init"], "--batch_size", "8", "--log_interval", "1",
            "--num_workers", "0", "--learning_rate", "3e-3", *extra]


def random_value_model(tokenizer, seed=1):
    torch.manual_seed(seed)
    from model.model_minimind import MiniMindConfig, MiniMindForCausalLM

    lm = MiniMindForCausalLM(MiniMindConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, vocab_size=len(tokenizer), branch_stride=16))
    model = ValueModel(lm).eval()
    torch.nn.init.normal_(model.value_head.weight, std=0.5)  # a head that is not all zeros
    return model


def test_shared_prompt_pair_rewards_equal_separate_sequences_and_rollout_scores(tiny_tokenizer):
    model = random_value_model(tiny_tokenizer)
    convs = [([{"role": "user", "content": f"what is {i} plus {i}?"}], f"it is {2 * i}", f"maybe {i + 7} or so")
             for i in range(3)]
    samples = [pair_sample(tiny_tokenizer, [*q, {"role": "assistant", "content": c}],
                           [*q, {"role": "assistant", "content": r}]) for q, c, r in convs]
    shared = ParallelCollator(tiny_tokenizer, branch_stride=16).collate(samples)
    separate = ParallelCollator(tiny_tokenizer, branch_stride=16).collate(
        [{"branches": [b for row in pair_rows(s) for b in row["branches"]]} for s in samples])
    with torch.no_grad():
        c, r, _ = pair_rewards(model, shared)
        c2, r2, _ = pair_rewards(model, separate)
        # the RL stages score prompt + answer as one plain sequence at its last token
        seqs = [ids for s in samples for ids in (s["main"] + s["branches"][0]["input_ids"],
                                                 s["main"] + s["branches"][1]["input_ids"])]
        ctx = RolloutContext(policy=model, tokenizer=tiny_tokenizer, companions={"reward": model}, mask_mode="isolated",
                             branch_stride=16, step=0, seed=0)
        plain = RewardModelScore()(ctx, [Completion(Prompt(ids[:-1], {}), ids[-1:], "", True) for ids in seqs])
    assert c.abs().max() > 0.01 and not torch.allclose(c, r)
    assert torch.allclose(c, c2, atol=1e-5) and torch.allclose(r, r2, atol=1e-5)
    assert torch.allclose(torch.stack([c, r], 1).flatten(), plain, atol=1e-5)


def test_bradley_terry_and_centering_by_hand():
    c, r = torch.tensor([1.0, -0.5]), torch.tensor([0.0, 0.5])
    expect = torch.log1p(torch.exp(-(c - r))) + 0.1 * (c + r) ** 2
    assert torch.allclose(bradley_terry_losses(c, r, 0.1), expect)
    assert torch.allclose(bradley_terry_losses(c, r), torch.log1p(torch.exp(-(c - r))))


def test_reward_model_learns_a_toy_preference_on_held_out_pairs(toy, tmp_path):
    trainer = fit(train_reward_model, train_reward_model.RewardModelStage(),
                  argv(toy, "--out_dir", str(tmp_path), "--max_steps", "10", "--val_samples", "16",
                       "--val_interval", "5", "--center_coef", "0.01"))
    rows = metric_rows(tmp_path, "rm_64")
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3) and rows[0]["accuracy"] == 0.0  # zero head: ties
    assert rows[-1]["loss"] < 0.5, [r["loss"] for r in rows]
    assert trainer.last_val["extra"]["val_accuracy"] >= 0.9  # 16 held-out pairs, chance is 0.5
    payload = torch.load(tmp_path / "rm_64.pth", weights_only=True)
    rm = value_model_from_payload(payload, source="rm_64.pth")
    assert weights_digest(rm) == weights_digest(trainer.models.raw)


def test_reward_model_resumes_exactly_and_feeds_ppo(toy, tmp_path, tiny_tokenizer):
    full, resumed = split_and_resume(train_reward_model, train_reward_model.RewardModelStage, argv(toy), tmp_path)
    assert metric_rows(tmp_path / "full", "rm_64") == metric_rows(tmp_path / "split", "rm_64")
    assert weights_digest(full.models.raw) == weights_digest(resumed.models.raw)
    assert read_checkpoint(tmp_path / "full" / "rm_64.pth")["meta"]["step"] == 3
    prompts = str(prompt_file(tmp_path / "p.jsonl", 16))
    ppo = fit(train_ppo, train_ppo.PPOStage(),
              ["--data_path", prompts, "--init_weight", toy["init"], "--reward_model_path",
               str(tmp_path / "full" / "rm_64.pth"), "--out_dir", str(tmp_path / "ppo"), "--max_steps", "1",
               "--batch_size", "4", "--branches_per_sample", "4", "--max_new_tokens", "4", "--num_workers", "0"])
    assert weights_digest(ppo.models.companions["reward"]) == weights_digest(full.models.raw)  # PPO scores with it
