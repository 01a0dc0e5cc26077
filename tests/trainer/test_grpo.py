"""GRPO (trainer/train_grpo.py): shared-prompt group rollouts equal one-at-a-time rollouts, a tiny model learns a
toy reward with a bounded KL, runs are reproducible and resume exactly, the checkpoint is an ordinary model."""

import json

import pytest
import torch
from rl_toys import fit, low_ids_reward, metric_rows, one_thread, prompt_file, split_and_resume, tiny_checkpoint

from model.checkpoint import load_checkpoint
from model.parallel_generation import ParallelGenerator
from model.value_head import RLPolicy
from parallel.sampling import SamplingParams
from parallel_data.parallel_collator import ParallelCollator
from trainer import train_grpo
from trainer.engine import RolloutContext, samples_from_batch
from trainer.engine.models import weights_digest
from trainer.rl import TargetSegments
from trainer.rollouts import GRPORollout, logprobs


@pytest.fixture(scope="module")
def toy(tmp_path_factory, tiny_tokenizer):
    d = tmp_path_factory.mktemp("grpo")
    return {"init": str(tiny_checkpoint(d / "init.pth", tiny_tokenizer)), "data": str(prompt_file(d / "p.jsonl"))}


def argv(toy, *extra):
    return ["--data_path", toy["data"], "--init_weight", toy["init"], "--batch_size", "4", "--num_generations", "8",
            "--max_new_tokens", "6", "--log_interval", "1", "--num_workers", "0", "--learning_rate", "2e-2", *extra]


def prompt_batch(tokenizer, prompts):
    """A data batch of chat-rendered prompts, as the prompt dataset gives them."""
    def ids(p):
        text = tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    units = [{"input_ids": ids(p), "meta": {"answer": "1"}} for p in prompts]
    return ParallelCollator(tokenizer, branch_stride=16).collate([{"branches": units}])


@pytest.mark.parametrize("sampled", [False, True])
def test_group_rollouts_equal_rollouts_one_at_a_time(toy, tiny_tokenizer, sampled):
    actor = load_checkpoint(toy["init"])[0]
    G, seed = 4, 1234
    sampling = SamplingParams(do_sample=True, temperature=1.0) if sampled else SamplingParams()
    rollout = GRPORollout(num_generations=G, sampling=sampling, max_new_tokens=7, reward=low_ids_reward,
                          scale_rewards="group", loss_type="grpo", beta=0.0, num_iterations=1, eos_id=2)
    ctx = RolloutContext(policy=RLPolicy(actor), tokenizer=tiny_tokenizer, companions={}, mask_mode="isolated",
                         branch_stride=16, step=0, seed=seed)
    batch = prompt_batch(tiny_tokenizer, ["3 plus 4", "the quick brown fox", "9"])
    with one_thread(), torch.no_grad():
        train = rollout(ctx, batch)
        again = rollout(ctx, batch)
        alone_gen = ParallelGenerator(actor, tiny_tokenizer, mask_mode="isolated", branch_stride=0)
        prompts = samples_from_batch(batch)[0]["branches"]
        groups = samples_from_batch(train)  # one sample per prompt: main = prompt[:-1], branch = prompt[-1:] + answer
        assert len(groups) == 3 and all(len(g["branches"]) == G for g in groups)
        for i, (prompt, group) in enumerate(zip(prompts, groups)):
            for k, branch in enumerate(group["branches"]):
                # the same prompt decoded alone, its random stream seeded as branch k of prompt i was
                res = alone_gen.generate([{"branches": [prompt]}], sampling, max_new_tokens=7, eos_token_ids=[2],
                                         seed=seed + i * G + k)[0].branches[0]
                answer = res.token_ids + ([2] if res.finish_reason == "eos" else [])
                assert group["main"] + branch == prompt + answer, (i, k)
        if not sampled:  # greedy: every answer of a group is the same
            assert all(g["branches"][0] == b for g in groups for b in g["branches"])
        # log-probabilities in the shared-prompt layout equal those of each sequence on its own
        shared = logprobs(actor, train)
        rows = [{"branches": [{"input_ids": g["main"] + b, "answer_offset": len(g["main"]) + 1}]}
                for g in groups for b in g["branches"]]
        sep = ParallelCollator(tiny_tokenizer, branch_stride=16).collate(rows)
        alone = logprobs(actor, sep)
        per_answer = TargetSegments(train["labels"], train["branch_ids"]).pack(shared)  # time-major -> per answer
        assert torch.allclose(per_answer, TargetSegments(sep["labels"], sep["branch_ids"]).pack(alone), atol=1e-5)
    for key in ("input_ids", "labels", "advantages", "position_ids"):  # the same seed: the same rollout
        assert torch.equal(train[key], again[key]), key
    assert train["num_sequences"] == 3 * G and train["num_groups"] == 3


def test_grpo_learns_a_toy_reward_with_a_bounded_kl(toy, tmp_path):
    fit(train_grpo, train_grpo.GRPOStage(reward=low_ids_reward),
        argv(toy, "--out_dir", str(tmp_path), "--max_steps", "10", "--beta", "0.1"))
    rows = metric_rows(tmp_path, "grpo_64")
    reward = [r["reward"] for r in rows]
    assert len(rows) == 10 and rows[0]["kl"] == 0.0
    assert sum(reward[-3:]) / 3 > reward[0] + 0.2, reward  # about 0.15 at random, > 0.5 after 10 steps
    assert max(r["kl"] for r in rows) < 3.0, [r["kl"] for r in rows]
    assert all(0 <= r["frac_reward_zero_std"] <= 1 and r["completion_length"] <= 6 for r in rows)


def test_grpo_resumes_exactly_and_saves_an_ordinary_checkpoint(toy, tmp_path):
    extra = ["--beta", "0.05", "--num_iterations", "2", "--loss_type", "grpo", "--epsilon_high", "0.28"]
    full, resumed = split_and_resume(train_grpo, lambda: train_grpo.GRPOStage(reward=low_ids_reward),
                                     argv(toy, *extra), tmp_path)
    assert metric_rows(tmp_path / "full", "grpo_64") == metric_rows(tmp_path / "split", "grpo_64")
    assert weights_digest(full.models.raw) == weights_digest(resumed.models.raw)
    assert any(r["clip_ratio"] > 0 for r in metric_rows(tmp_path / "full", "grpo_64"))  # the second update clips
    payload = torch.load(tmp_path / "full" / "grpo_64.pth", weights_only=True)
    assert "critic" not in payload and payload["meta"]["step"] == 3
    model, _ = load_checkpoint(tmp_path / "full" / "grpo_64.pth")  # loads as an ordinary MiniMind model
    assert weights_digest(model) == weights_digest(full.models.raw.actor)


def test_grpo_cli_exact_match_with_validation_rollouts(toy, tmp_path):
    with one_thread():
        code = train_grpo.main(argv(toy, "--out_dir", str(tmp_path), "--max_steps", "2", "--val_samples", "4",
                                    "--val_interval", "1", "--num_generations", "2", "--beta", "0"))
    assert code == 0
    rows = [json.loads(x) for x in (tmp_path / "grpo_64_metrics.jsonl").read_text().splitlines()]
    vals = [r for r in rows if "val_reward" in r and not r.get("summary")]  # the summary repeats the last
    assert [v["step"] for v in vals] == [1, 2, 2] and all(0.0 <= v["val_reward"] <= 1.0 for v in vals)
    assert all(v["val_completion_length"] <= 6 for v in vals) and "val_ppl" not in vals[0]
    assert all("kl" not in r for r in rows)  # beta 0: no reference model, no KL term
