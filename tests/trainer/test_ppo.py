"""PPO (trainer/train_ppo.py): a tiny actor-critic learns a toy reward with a bounded KL, resumes exactly, and its
checkpoint is the actor as an ordinary model with the critic inside; the shared-critic variant and its checks."""

import pytest
import torch
from rl_toys import fit, low_ids_reward, metric_rows, one_thread, prompt_file, split_and_resume, tiny_checkpoint

from model.checkpoint import load_checkpoint
from trainer import train_ppo
from trainer.engine.models import weights_digest


@pytest.fixture(scope="module")
def toy(tmp_path_factory, tiny_tokenizer):
    d = tmp_path_factory.mktemp("ppo")
    return {"init": str(tiny_checkpoint(d / "init.pth", tiny_tokenizer)), "data": str(prompt_file(d / "p.jsonl"))}


def argv(toy, *extra):
    return ["--data_path", toy["data"], "--init_weight", toy["init"], "--batch_size", "16", "--branches_per_sample",
            "4", "--max_new_tokens", "6", "--log_interval", "1", "--num_workers", "0", "--learning_rate", "1e-2",
            *extra]


def test_ppo_learns_a_toy_reward_with_a_bounded_kl(toy, tmp_path):
    fit(train_ppo, train_ppo.PPOStage(reward=low_ids_reward),
        argv(toy, "--out_dir", str(tmp_path), "--epochs", "3", "--max_steps", "12"))
    rows = metric_rows(tmp_path, "ppo_actor_64")
    reward = [r["reward"] for r in rows]
    assert len(rows) == 12 and rows[0]["kl"] == 0.0  # the actor starts as the reference
    assert sum(reward[-3:]) / 3 > sum(reward[:3]) / 3 + 0.1, reward  # about 0.12 at random
    assert max(abs(r["kl"]) for r in rows) < 2.0, [r["kl"] for r in rows]
    assert rows[-1]["value_loss"] < rows[1]["value_loss"]  # the critic fits the returns


def test_ppo_resumes_exactly_and_keeps_the_critic_in_the_checkpoint(toy, tmp_path):
    full, resumed = split_and_resume(train_ppo, lambda: train_ppo.PPOStage(reward=low_ids_reward), argv(toy), tmp_path)
    assert metric_rows(tmp_path / "full", "ppo_actor_64") == metric_rows(tmp_path / "split", "ppo_actor_64")
    assert weights_digest(full.models.raw) == weights_digest(resumed.models.raw)
    assert set(full.models.companions) == {"reference"}
    payload = torch.load(tmp_path / "full" / "ppo_actor_64.pth", weights_only=True)
    assert payload["critic"]["mode"] == "separate" and "value_head.weight" not in payload["model_state_dict"]
    actor, _ = load_checkpoint(tmp_path / "full" / "ppo_actor_64.pth")  # the actor loads as an ordinary model
    assert weights_digest(actor) == weights_digest(full.models.raw.actor)
    in_optimizer = {id(p) for g in full.optim.optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in full.models.raw.critic.parameters()} <= in_optimizer  # the critic trains
    assert not in_optimizer & {id(p) for p in full.models.companions["reference"].parameters()}


def test_ppo_shared_critic_and_a_resume_with_another_critic_is_refused(toy, tmp_path, capsys):
    out = str(tmp_path)
    trainer = fit(train_ppo, train_ppo.PPOStage(reward=low_ids_reward),
                  argv(toy, "--out_dir", out, "--max_steps", "2", "--critic", "shared", "--kl_coef", "0"))
    policy = trainer.models.raw
    assert policy.critic is None and policy.value_head is not None and trainer.models.companions == {}
    assert torch.load(tmp_path / "ppo_actor_64.pth", weights_only=True)["critic"]["mode"] == "shared"
    assert all("kl" in r and r["kl"] == 0.0 for r in metric_rows(tmp_path, "ppo_actor_64"))  # no reference
    with one_thread():
        code = train_ppo.main(argv(toy, "--out_dir", out, "--max_steps", "3", "--kl_coef", "0", "--resume",
                                   "--resume_override", "critic"))
    assert code == 2
    assert "holds a shared critic, but this run uses a separate" in capsys.readouterr().err
