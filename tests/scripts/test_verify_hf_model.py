"""scripts/verify_hf_model.py end to end on a tiny local Llama with a chat tokenizer (the real run is on SmolLM2)."""

import json

from conftest import build_tiny_hf

from scripts import verify_hf_model


def test_verify_hf_model_on_a_tiny_llama(tmp_path, tiny_tokenizer, capsys):
    base = build_tiny_hf("llama", tmp_path / "llama", vocab_size=len(tiny_tokenizer))
    tiny_tokenizer.save_pretrained(str(base))
    out = tmp_path / "r.json"
    rc = verify_hf_model.main(["--model", str(base), "--max_new_tokens", "4", "--prompts", "the quick fox", "a dog",
                               "--questions", "seven birds?", "a river?", "--context", "the fox lives in rivers",
                               "--out", str(out)])
    rep = json.loads(out.read_text())
    assert rc == 0 and rep["passed"] is True
    c1 = rep["checks"]["patched_single_branch"]
    assert c1["plain_call"]["bit_exact"] and c1["one_branch_layouts"]["bit_exact"]
    chat = rep["checks"]["isolated_parallel_chat"]
    assert chat["passed"] and [p["prompt"] for p in chat["prompts"]] == ["the quick fox", "a dog"]
    prefix = rep["checks"]["prefix_sharing"]
    assert prefix["passed"] is True or prefix.get("skipped")
    assert prefix["main_tokens"] > 5


def test_verify_hf_model_bad_input(tmp_path, capsys):
    assert verify_hf_model.main(["--model", str(tmp_path / "nope")]) == 2
    assert "no config.json" in capsys.readouterr().err
