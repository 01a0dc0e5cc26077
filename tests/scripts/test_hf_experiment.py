"""scripts/hf_columnar_experiment.py: the bundled prompt set, the agreement measure, and the evaluation on a
tiny model against oracles (N = 1 NLL == the plain model's loss on each answer; N = 1 answers == `generate`)."""

import argparse
import json

import pytest
import torch
from conftest import build_tiny_hf, load_hf

from model.loading import load_parallel_model
from parallel_data.demo.chat_prompts import chat_prompts
from scripts import hf_columnar_experiment as exp


def test_chat_prompts_are_distinct_seeded_and_bounded():
    a, b = chat_prompts(150, seed=0), chat_prompts(150, seed=0)
    assert a == b and len(set(a)) == 150 and chat_prompts(150, seed=1) != a
    assert any("capital" in p for p in a) and any("plus" in p for p in a) and any("legs" in p for p in a)
    with pytest.raises(ValueError, match="distinct prompts"):
        chat_prompts(10_000)


def test_agreement_counts_missing_tokens_as_disagreeing():
    assert exp.agreement([1, 2, 3], [1, 2, 3], 32) == 1.0
    assert exp.agreement([1, 2, 3, 4], [1, 9, 3], 32) == 0.5
    assert exp.agreement([1, 2, 3, 4], [1, 2, 3, 5], 3) == 1.0  # only the first k tokens count
    assert exp.agreement([], [], 32) == 1.0


def test_evaluate_against_oracles(tmp_path, tiny_tokenizer):
    folder = build_tiny_hf("llama", tmp_path / "llama", vocab_size=len(tiny_tokenizer))
    tiny_tokenizer.save_pretrained(str(folder))
    held = tmp_path / "held.jsonl"
    convs = [{"conversations": [{"role": "user", "content": f"what is {i} plus {i}"},
                                {"role": "assistant", "content": f"{2 * i} is the answer"}]} for i in range(4)]
    held.write_text("".join(json.dumps(c) + "\n" for c in convs))
    args = argparse.Namespace(branch_stride=32, branches=[1, 2], max_new_tokens=5)
    loaded = load_parallel_model(hf_base_model=str(folder), branch_stride=32)
    res = exp.evaluate(args, loaded.model, loaded.tokenizer, held)
    assert set(res) == {1, 2} and res[1]["exact"] == 1.0 and 0 <= res[2]["agreement"] <= 1
    assert res[1]["tf_agreement"] == 1.0 and 0 <= res[2]["tf_agreement"] <= 1  # N = 1 fed its own answers

    plain = load_hf(folder)  # N = 1: each conversation alone through the unpatched model
    total, n = 0.0, 0
    for c in convs:
        text = tiny_tokenizer.apply_chat_template(c["conversations"], tokenize=False)
        prompt = tiny_tokenizer.apply_chat_template(c["conversations"][:1], tokenize=False, add_generation_prompt=True)
        ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        start = len(tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"])
        end = max(i for i, t in enumerate(ids) if t == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")) + 1
        with torch.no_grad():
            logits = plain(torch.tensor([ids])).logits[0]
        total += float(torch.nn.functional.cross_entropy(logits[start - 1:end - 1], torch.tensor(ids[start:end]),
                                                         reduction="sum"))
        n += end - start
    assert res[1]["nll"] == pytest.approx(total / n, rel=1e-5)


def test_training_samples_default_to_the_largest_branch_count(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    args = exp.build_parser().parse_args(["--model", str(tmp_path), "--branches", "1,2,4"])
    assert args.min_train_branches == 4
    args = exp.build_parser().parse_args(["--model", str(tmp_path), "--branches", "1,2,4", "--min_train_branches", "2"])
    assert args.min_train_branches == 2


def test_training_layout_of_decoded_answers_gives_the_decoding_logits(tmp_path, tiny_tokenizer):
    """Train/inference layout check: N prompts of different lengths decoded together (columnar, greedy), then the
    same conversations (prompt + decoded answer) laid out as the trainer lays out a parallel_sft sample
    (ParallelCollator, the loss's mask and positions): at every answer position the forward gives the logits the
    decoding step gave, so the argmax is the decoded token (training sees exactly what decoding builds)."""
    from parallel_data.parallel_collator import ParallelCollator
    from trainer.loss import batch_mask

    folder = build_tiny_hf("llama", tmp_path / "llama", vocab_size=len(tiny_tokenizer))
    tiny_tokenizer.save_pretrained(str(folder))
    loaded = load_parallel_model(hf_base_model=str(folder), branch_stride=32, rope_2d_ratio=0.5)
    model, tok = loaded.model.eval(), loaded.tokenizer
    prompts = [exp.prompt_ids(tok, p) for p in ("hi", "what is two plus two, tell me", "name a colour")]
    assert len({len(p) for p in prompts}) == 3  # the answers start at different times
    gen = exp.ParallelGenerator(model, tok, mask_mode="columnar", branch_stride=32)
    res = gen.generate([{"branches": prompts}], max_new_tokens=6, return_step_logits=True, eos_token_ids=[])
    answers = [b.token_ids[:-1] for b in res[0].branches]  # the last token ends the branch by length: never fed
    units = [{"input_ids": p + a, "loss_mask": [0] * len(p) + [1] * len(a)} for p, a in zip(prompts, answers)]
    batch = ParallelCollator(tok, branch_stride=32).collate([{"branches": units}])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch_mask(model, batch, "columnar"),
                       position_ids=batch["position_ids"]).logits[0]
    for k, (b, a) in enumerate(zip(res[0].branches, answers), start=1):
        rows = torch.nonzero((batch["branch_ids"][0] == k) & (batch["labels"][0] != -100)).squeeze(1)
        assert batch["labels"][0, rows].tolist() == a
        torch.testing.assert_close(logits[rows], b.step_logits[:len(a)], rtol=0, atol=1e-4)
        assert logits[rows].argmax(-1).tolist() == a
