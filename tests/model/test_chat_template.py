"""The chat template's default system turn (MiniLLM's "You are a helpful assistant"), as a template option
(`default_system`), as `with_default_system` for any template, and as `--default_system` on the generators."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import tiny_minimind

from model.checkpoint import save_checkpoint
from model.tokenizer import CHATML_TEMPLATE, MINILLM_DEFAULT_SYSTEM, load_tokenizer, with_default_system
from parallel_data.prompts import PromptSample, render_sample

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT.parents[1] / "shared" / "seeds" / "001_minillm_readme.md"
# the bundled template before it had the option: without `default_system` the rendering must not change
PLAIN_CHATML = ("{% for message in messages %}"
                "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
                "{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# MiniLLM's template (seed 001), its layout whitespace removed as in a tokenizer_config.json
MINILLM = ("{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}"
           "{{ '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' }}"
           "{% else %}{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{% endif %}"
           "{% for message in messages %}{% set content = message['content'] %}"
           "{% if message['role'] == 'user' %}"
           "{{ '<|im_start|>user\\n' + content + '<|im_end|>\\n<|im_start|>assistant\\n' }}"
           "{% elif message['role'] == 'assistant' %}{{ content + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}")
CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 plus 3?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour"}],
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def render(tok, messages, template=None, **kw):
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, chat_template=template, **kw)


def test_the_oracle_is_the_seed_template():
    if not SEED.is_file():
        pytest.skip("seed documents are not in this checkout")
    block = SEED.read_text().split("chat_template:")[1].split("```txt")[1].split("```")[0]
    assert re.sub(r"\s*\n\s*", "", block.strip()).replace("\\\\n", "\\n") == MINILLM


def test_the_bundled_template_carries_the_option():
    assert (ROOT / "model" / "chat_template.jinja").read_text() == CHATML_TEMPLATE


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_without_the_option_nothing_changes(tok, messages):
    assert render(tok, messages) == render(tok, messages, PLAIN_CHATML)
    assert render(tok, messages, default_system="") == render(tok, messages, PLAIN_CHATML)
    assert "helpful" not in render(tok, messages)


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_the_option_renders_exactly_the_minillm_template(tok, messages):
    ours = render(tok, messages, default_system=MINILLM_DEFAULT_SYSTEM)
    assert ours == render(tok, messages, MINILLM)
    # the same rule for a template without the option (a checkpoint's older tokenizer, an HF model's own)
    assert render(tok, with_default_system(messages, MINILLM_DEFAULT_SYSTEM), PLAIN_CHATML) == ours
    assert ours.startswith("<|im_start|>system\n" + (messages[0]["content"] if messages[0]["role"] == "system"
                                                     else MINILLM_DEFAULT_SYSTEM) + "<|im_end|>\n")
    assert ours.count("<|im_start|>system") == 1


def test_with_default_system_keeps_the_input():
    msgs = [{"role": "user", "content": "x"}]
    out = with_default_system(msgs, "S")
    assert out == [{"role": "system", "content": "S"}, *msgs] and msgs == [{"role": "user", "content": "x"}]
    assert with_default_system(msgs, None) == msgs and with_default_system([], "S") == [{"role": "system",
                                                                                         "content": "S"}]


def test_render_sample_opens_branches_without_a_main(tok):
    plain = render_sample(PromptSample(["a", "b"], ""), tok, True, MINILLM_DEFAULT_SYSTEM)
    assert plain["branches"] == [render(tok, [{"role": "user", "content": q}], MINILLM) for q in "ab"]
    with_main = PromptSample(["a"], "the context")
    assert render_sample(with_main, tok, True, MINILLM_DEFAULT_SYSTEM) == render_sample(with_main, tok, True)


def _generate(ckpt, tmp_path, name, *argv):
    from scripts import parallel_generate

    out = tmp_path / f"{name}.jsonl"
    rc = parallel_generate.main(["--model_path", str(ckpt), "--mask", "isolated", "--branch_stride", "0",
                                 "--max_new_tokens", "6", "--out_path", str(out), *argv])
    assert rc == 0
    return [json.loads(x)["response"] for x in out.read_text().splitlines()]


def test_parallel_generate_default_system_equals_an_explicit_system_turn(tmp_path, tiny_tokenizer):
    ckpt = tmp_path / "m.pth"
    save_checkpoint(ckpt, tiny_minimind(seed=5, vocab_size=len(tiny_tokenizer)), tokenizer=tiny_tokenizer)
    qs = ["the fox", "two birds"]
    got = _generate(ckpt, tmp_path, "default", "--prompts", *qs, "--default_system")
    # prefix sharing decodes main + branch causally: the main as the system turn is the same token sequence
    pf = tmp_path / "p.jsonl"
    pf.write_text("".join(json.dumps({"main": MINILLM_DEFAULT_SYSTEM, "branches": [q]}) + "\n" for q in qs))
    assert got == _generate(ckpt, tmp_path, "explicit", "--prompts_file", str(pf))
    custom = _generate(ckpt, tmp_path, "custom", "--prompts", *qs, "--default_system", "Answer in one word")
    pf.write_text("".join(json.dumps({"main": "Answer in one word", "branches": [q]}) + "\n" for q in qs))
    assert custom == _generate(ckpt, tmp_path, "explicit2", "--prompts_file", str(pf))


@pytest.mark.parametrize("argv", [["--mode", "pretrain", "--default_system"],
                                  ["--no_chat_template", "--default_system"],
                                  ["--default_system", " "]])
def test_default_system_without_the_template_is_refused(argv, capsys):
    from scripts import parallel_generate

    assert parallel_generate.main(["--prompts", "x", "--model_path", "nowhere.pth", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "--default_system" in err and len(err.splitlines()) == 1
