"""The bundled demo corpus (parallel_data/demo/corpus.py, scripts/build_demo_data.py) and the tokenizer CLI.

Small sizes throughout: the whole file runs in a few seconds on 2 CPU cores.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from parallel_data.demo.corpus import (
    CORPUS_STAMP,
    DEFAULT_SEED,
    FILE_NAMES,
    DemoSizes,
    attach_answer_offsets,
    build_eval_tasks,
    build_parallel_raw,
    corpus_fingerprint,
    corpus_is_current,
    find_leaks,
    generate_demo_corpus,
    heldout_from_eval,
    record_texts,
)
from parallel_data.demo.tasks import DEALER_KIND, PEER_KIND, TASK_KINDS
from parallel_data.formats import normalize_conversation

REPO = Path(__file__).resolve().parents[2]
SMALL = DemoSizes(pretrain=600, val=60, parallel=150, sft=150, dpo=120, eval_tasks=80, eval_groups=10, eval_peer=3)
SMALL_FLAGS = ["--n_pretrain", "300", "--n_val", "30", "--n_parallel", "60", "--n_sft", "60", "--n_dpo", "40",
               "--n_eval_tasks", "40", "--n_eval_groups", "5", "--n_eval_peer", "2"]
TWO_TURNS = [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "5"}]
TWO_TURNS_CHATML = "<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n"


@pytest.fixture(scope="module")
def corpus(tiny_tokenizer):
    return generate_demo_corpus(11, SMALL, tokenizer=tiny_tokenizer)


def _question(prompt: str) -> str:
    assert prompt.startswith("Q: ") and prompt.endswith("\nA:"), prompt
    return prompt[3:-3]


def _tail(q: str) -> str:
    return q.split(": ", 1)[1].rstrip("?")


def solve(q: str) -> tuple[str, str] | None:
    """(kind, answer) recomputed from the question text alone; None for questions about a context or a
    sibling branch."""
    low = q.lower()
    if "\n" in q:  # a context line before the question
        return None
    if DEALER_RE.fullmatch(f"Q: {q}\nA:") or ASK_RE.fullmatch(f"Q: {q}\nA:"):  # a peer game: the answer is the dealer's card
        return None
    if low.startswith(("how many", "count")) and ": " in q:
        return "count", str(len(_tail(q).split(" ")))
    if low.startswith(("repeat", "copy")):
        return "copy", _tail(q)
    if "last" in low and ": " in q:
        return "last", _tail(q).split(" ")[-1]
    return None


DEALER_RE = re.compile(r"Q: I am the dealer and my card is (\d)\. What is my card\?\nA:")
ASK_RE = re.compile(r"Q: I am \w+\. What is the dealer's card\?\nA:")


def dealer_card(texts: list[str]) -> str:
    """The card of a peer game's one dealer among its branches' texts; every other branch asks for it."""
    dealt = [m[1] for m in map(DEALER_RE.match, texts) if m]
    assert len(dealt) == 1, texts
    assert all(DEALER_RE.match(t) or ASK_RE.match(t) for t in texts), texts
    return dealt[0]


def _qa_pairs(text: str):
    lines = text.split("\n")
    for a, b in zip(lines, lines[1:]):
        if a.startswith("Q: ") and b.startswith("A: "):
            yield a[3:], b[3:]


# ---- determinism ----------------------------------------------------------------------------------------

def test_same_seed_same_corpus_other_seed_differs():
    sizes = DemoSizes(pretrain=200, val=20, parallel=40, sft=40, dpo=30, eval_tasks=20, eval_groups=3)
    a, b, c = (generate_demo_corpus(s, sizes) for s in (5, 5, 6))
    assert json.dumps(a) == json.dumps(b)
    for name in ("pretrain", "val", "parallel", "sft", "dpo", "eval_tasks"):
        assert a[name] != c[name], name


def test_cli_writes_byte_identical_files(tmp_path, tiny_tokenizer_dir, capsys):
    from scripts.build_demo_data import main

    outs = {}
    for run, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        rc = main(["--out_dir", str(tmp_path / run), "--seed", seed, "--tokenizer", str(tiny_tokenizer_dir),
                   *SMALL_FLAGS])
        assert rc == 0
        outs[run] = {n: (tmp_path / run / n).read_bytes() for n in FILE_NAMES.values()}
    assert outs["a"] == outs["b"]
    assert all(outs["a"][n] != outs["c"][n] for n in FILE_NAMES.values() if n != FILE_NAMES["eval_prompts"])
    summary = capsys.readouterr().out
    assert "pretrain_demo.jsonl" in summary and "parallel_demo.jsonl" in summary and "chars/token" in summary
    lines = (tmp_path / "a" / FILE_NAMES["pretrain"]).read_text().splitlines()
    assert len(lines) == 300
    # the stamp says what the files were built from: other seed -> other stamp; not the default corpus
    stamps = {run: (tmp_path / run / CORPUS_STAMP).read_text() for run in "abc"}
    assert stamps["a"] == stamps["b"] != stamps["c"]
    assert not corpus_is_current(tmp_path / "a", tiny_tokenizer_dir / "tokenizer.json")


def test_corpus_stamp_tracks_generators_sizes_and_tokenizer(tmp_path, tiny_tokenizer_dir):
    tok = tiny_tokenizer_dir / "tokenizer.json"
    base = corpus_fingerprint(DEFAULT_SEED, DemoSizes(), tok)
    assert base == corpus_fingerprint(DEFAULT_SEED, DemoSizes(), tok)
    assert base != corpus_fingerprint(DEFAULT_SEED, DemoSizes(pretrain=5), tok)
    other_tok = tmp_path / "tokenizer.json"
    other_tok.write_bytes(tok.read_bytes() + b" ")
    assert base != corpus_fingerprint(DEFAULT_SEED, DemoSizes(), other_tok)
    assert not corpus_is_current(tmp_path, tok)  # no stamp: rebuild
    (tmp_path / CORPUS_STAMP).write_text(base + "\n")
    assert corpus_is_current(tmp_path, tok) and not corpus_is_current(tmp_path, other_tok)


def test_cli_without_tokenizer_writes_text_then_says_how_to_build_it(tmp_path, capsys):
    from scripts.build_demo_data import main

    rc = main(["--out_dir", str(tmp_path / "d"), "--tokenizer", str(tmp_path / "no_tok"), *SMALL_FLAGS])
    assert rc == 2
    assert "scripts/train_tokenizer.py" in capsys.readouterr().err
    assert (tmp_path / "d" / FILE_NAMES["pretrain"]).exists()  # written first: the tokenizer is trained on it
    assert not (tmp_path / "d" / FILE_NAMES["parallel"]).exists()


# ---- record formats ---------------------------------------------------------------------------------------

def test_text_and_chat_records(corpus):
    for name, n in (("pretrain", SMALL.pretrain), ("val", SMALL.val)):
        assert len(corpus[name]) == n
        assert all(set(r) == {"text"} and isinstance(r["text"], str) and r["text"].strip() for r in corpus[name])
    assert not {r["text"] for r in corpus["val"]} & {r["text"] for r in corpus["pretrain"]}

    assert len(corpus["sft"]) == SMALL.sft
    multi = 0
    for r in corpus["sft"]:
        conv = r["conversations"]
        assert normalize_conversation(r) == conv  # already in the standard form the trainers read
        roles = [m["role"] for m in conv if m["role"] != "system"]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles
        multi += len(roles) > 2
    assert 0 < multi < len(corpus["sft"])  # single- and multi-turn

    assert len(corpus["dpo"]) == SMALL.dpo
    for r in corpus["dpo"]:
        assert set(r) == {"chosen", "rejected"}
        ch, rj = r["chosen"], r["rejected"]
        assert ch[:-1] == rj[:-1] and ch[-1]["role"] == rj[-1]["role"] == "assistant"
        assert ch[-1]["content"] != rj[-1]["content"]
        normalize_conversation({"conversations": ch})
        normalize_conversation({"conversations": rj})


def test_dpo_chosen_is_correct_and_rejected_wrong(corpus):
    checked = 0
    for r in corpus["dpo"]:
        got = solve(r["chosen"][-2]["content"])
        if got is not None:
            assert r["chosen"][-1]["content"] == got[1] != r["rejected"][-1]["content"]
            checked += 1
    assert checked > len(corpus["dpo"]) // 3


def test_parallel_records(corpus):
    recs = corpus["parallel"]
    assert len(recs) == SMALL.parallel
    n_ctx = 0
    for r in recs:
        assert set(r) == {"main", "branches"} and isinstance(r["main"], str)
        assert 1 <= len(r["branches"]) <= 16
        assert r["main"] == "" or (r["main"].endswith("\n") and "\n" not in r["main"][:-1])
        n_ctx += r["main"] != ""
        for b in r["branches"]:
            assert set(b) == {"text", "answer_offset"}
            assert isinstance(b["text"], str) and type(b["answer_offset"]) is int and b["answer_offset"] > 0
            assert len({b["text"] for b in r["branches"]}) == len(r["branches"])
    assert 0.05 < n_ctx / len(recs) < 0.3  # PARALLEL_MIX: 15% share a fact context as the main


def test_answer_offsets_cover_exactly_the_answer(corpus, tiny_tokenizer):
    tok = tiny_tokenizer
    for r in corpus["parallel"]:
        for b in r["branches"]:
            text, off = b["text"], b["answer_offset"]
            cut = text.index("\nA:") + 3
            ids = tok(text, add_special_tokens=False)["input_ids"]
            prompt_ids = tok(text[:cut], add_special_tokens=False)["input_ids"]
            assert off == len(prompt_ids) and ids[:off] == prompt_ids
            assert tok.decode(ids[off:]) == text[cut:] and text[cut] == " " and text.endswith("\n")
            answer, *more = text[cut + 1:-1].split("\n")
            if DEALER_RE.match(text) or ASK_RE.match(text):  # peer game: the dealer's card
                assert answer == dealer_card([x["text"] for x in r["branches"]]) and not more
            else:
                before, q = text[:cut].rsplit("Q: ", 1)  # a one-task fact record carries its context line
                got = solve(_question("Q: " + q))
                if got is None:  # fact: the answer is a word of the context (the main or the branch's own)
                    assert before in ("", r["main"]) or r["main"] == ""
                    words = re.findall(r"\w+", r["main"] + before)
                    # a one-task fact record goes on with other questions about its context (distinct ones)
                    pairs = list(zip(more[::2], more[1::2]))
                    assert len(more) % 2 == 0 and (not pairs or r["main"] == "")
                    assert all(qq.startswith("Q: ") and aa.startswith("A: ") for qq, aa in pairs)
                    answers = [answer] + [aa[3:] for _, aa in pairs]
                    questions = ["Q: " + q.removesuffix("\nA:")] + [qq for qq, _ in pairs]
                    assert all(a in words for a in answers) and len(set(questions)) == len(questions) <= 8
                else:
                    assert not before and got[1] == answer and not more


def test_answer_offsets_with_the_repo_tokenizer():
    from model.tokenizer import load_tokenizer

    tok = load_tokenizer()
    recs = attach_answer_offsets(build_parallel_raw(2, 40), tok)
    for r in recs:
        for b in r["branches"]:
            ids = tok(b["text"], add_special_tokens=False)["input_ids"]
            assert tok.decode(ids[b["answer_offset"]:]) == " " + b["text"].split("\nA: ", 1)[1]
            first_answer = b["text"].split("\nA: ", 1)[1].split("\n")[0]
            assert len(tok(" " + first_answer, add_special_tokens=False)["input_ids"]) <= 12  # short answers


def test_answer_offsets_fail_loudly_when_tokens_cross_the_boundary():
    class WholeStringTokenizer:  # one token per string: the prompt's tokens are never a prefix
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[sum(map(ord, t))] for t in texts]}

    with pytest.raises(ValueError, match="answer_offset"):
        attach_answer_offsets(build_parallel_raw(1, 2), WholeStringTokenizer())


# ---- eval tasks ---------------------------------------------------------------------------------------------

def test_eval_tasks_fields_and_groups(corpus):
    tasks = corpus["eval_tasks"]
    assert len({t["id"] for t in tasks}) == len(tasks)
    groups: dict[str, list[dict]] = {}
    for t in tasks:
        if t.get("game"):
            assert set(t) == {"id", "kind", "context", "prompt", "answer", "game", "scored"}
            assert t["scored"] == (t["kind"] == PEER_KIND) and t["kind"] in (PEER_KIND, DEALER_KIND)
            t = {k: v for k, v in t.items() if k != "scored"}
        assert set(t) <= {"id", "kind", "context", "prompt", "answer", "game"} and all(isinstance(v, str) for v in t.values())
        assert t["answer"] and t["answer"] == t["answer"].strip() and "\n" not in t["answer"]
        _question(t["prompt"])
        if t["kind"] == "fact":
            assert re.fullmatch(r"fact-\d{5}-q\d+", t["id"]) and t["context"].endswith("\n")
            groups.setdefault(t["id"].rsplit("-", 1)[0], []).append(t)
        elif t.get("game"):
            assert re.fullmatch(r"peer-\d{5}-b\d+", t["id"]) and t["context"] == "" and t["id"].startswith(t["game"])
        else:
            assert t["kind"] in TASK_KINDS and t["context"] == "" and t["id"].startswith(t["kind"] + "-")
    assert sum(t["kind"] in TASK_KINDS for t in tasks) == SMALL.eval_tasks
    assert len(groups) == SMALL.eval_groups
    for gid, g in groups.items():
        assert 4 <= len(g) <= 16 and len({t["context"] for t in g}) == 1
        assert [t["id"] for t in g] == [f"{gid}-q{j}" for j in range(len(g))]
        assert len({t["prompt"] for t in g}) == len(g)
    ids = [t["id"] for t in tasks]
    assert ids == sorted(ids, key=ids.index) and all(  # each group's ids are consecutive lines
        ids.index(g[-1]["id"]) - ids.index(g[0]["id"]) == len(g) - 1 for g in groups.values())


def test_peer_eval_games(corpus):
    """Peer eval games: 16 consecutive tasks with one game id, the dealer first (unscored), 15 peers asking
    for its card (scored); training peer records hold one dealer at any branch and peers after it."""
    game = [t for t in corpus["eval_tasks"] if t.get("game")]
    assert len(game) == 16 * SMALL.eval_peer
    for g in range(SMALL.eval_peer):
        group = game[16 * g:16 * (g + 1)]
        assert [t["id"] for t in group] == [f"peer-{g:05d}-b{j}" for j in range(16)]
        assert {t["game"] for t in group} == {f"peer-{g:05d}"}
        assert [t["kind"] for t in group] == [DEALER_KIND] + [PEER_KIND] * 15
        card = dealer_card([t["prompt"] for t in group])
        assert all(t["answer"] == card for t in group)
    recs = [r for r in corpus["parallel"] if r["main"] == "" and any(ASK_RE.match(b["text"]) for b in r["branches"])]
    assert recs and all(2 <= len(r["branches"]) <= 16 for r in recs)
    alone = [r for r in corpus["parallel"] if len(r["branches"]) == 1 and DEALER_RE.match(r["branches"][0]["text"])]
    assert alone  # the dealer's part also comes alone, as a one-task record
    assert any(not DEALER_RE.match(r["branches"][0]["text"]) for r in recs)  # the dealer is not always first


def test_default_eval_sizes_meet_the_minimums():
    tasks = build_eval_tasks(1234, DemoSizes().eval_tasks, DemoSizes().eval_groups, DemoSizes().eval_peer)
    indep = [t for t in tasks if t["kind"] in TASK_KINDS]
    assert len(indep) >= 400 and all(sum(t["kind"] == k for t in indep) >= 100 for k in TASK_KINDS)
    group_sizes: dict[str, int] = {}
    for t in tasks:
        if t["kind"] == "fact":
            gid = t["id"].rsplit("-", 1)[0]
            group_sizes[gid] = group_sizes.get(gid, 0) + 1
    assert len(group_sizes) >= 100 and all(4 <= n <= 16 for n in group_sizes.values())
    assert sum(n == 16 for n in group_sizes.values()) >= 16  # 16-branch evaluation needs whole 16-question groups
    assert sum(t["kind"] == PEER_KIND for t in tasks) == 15 * DemoSizes().eval_peer
    assert sum(t["kind"] == DEALER_KIND for t in tasks) == DemoSizes().eval_peer


def test_checkable_answers_are_recomputed(corpus):
    counts = dict.fromkeys(TASK_KINDS, 0)
    for t in corpus["eval_tasks"]:
        got = solve(_question(t["prompt"]))
        if t["kind"] == "fact":
            assert got is None
            assert t["answer"] in re.findall(r"\w+", t["context"])
        elif t.get("game"):
            assert got is None
        else:
            assert got == (t["kind"], t["answer"]), t
            counts[t["kind"]] += 1
    assert min(counts.values()) >= SMALL.eval_tasks // len(TASK_KINDS)
    checked = 0
    for r in corpus["pretrain"]:  # the worked examples in the pretraining text are right too
        for q, a in _qa_pairs(r["text"]):
            got = solve(q)
            if got is not None:
                assert got[1] == a, (q, a)
                checked += 1
    assert checked > 200


def test_eval_tasks_are_held_out(corpus):
    tasks = corpus["eval_tasks"]
    train_texts = [t for name in ("pretrain", "val", "parallel", "sft", "dpo") for r in corpus[name]
                   for t in record_texts(r)]
    joined = "\n".join(train_texts)
    train_lines = set(joined.split("\n"))
    for t in tasks:
        if t.get("game"):  # games are not held out line by line: a game's answer is its own dealer's card
            continue
        if t["context"]:
            assert t["context"].rstrip("\n") not in train_lines
            assert t["context"] + t["prompt"] not in joined
        else:
            assert t["prompt"] not in joined and _question(t["prompt"]) not in train_lines
    held = heldout_from_eval(tasks)
    assert find_leaks(held, train_texts) == []
    leaked = f"Some intro.\n{tasks[0]['prompt']} {tasks[0]['answer']}"  # the check itself finds a planted leak
    assert find_leaks(held, [leaked]) == [tasks[0]["prompt"].split("\n")[0]]


def test_eval_prompts_for_parallel_generate(corpus):
    recs = corpus["eval_prompts"]
    assert 5 <= len(recs) <= 10
    assert any("main" in r for r in recs) and any("main" not in r for r in recs)
    for r in recs:
        assert set(r) in ({"branches"}, {"main", "branches"})
        assert r["branches"] and all(isinstance(b, str) and b for b in r["branches"])
        assert isinstance(r.get("main", ""), str)


# ---- variety ------------------------------------------------------------------------------------------------

def test_text_is_varied(corpus):
    from parallel_data.demo import words as W

    texts = [r["text"] for r in corpus["pretrain"]]
    words = [w for t in texts for w in re.findall(r"[A-Za-z]+|\d+", t)]
    assert len(set(words)) > 1200
    assert len(set(zip(words, words[1:], words[2:]))) > 0.4 * len(words)  # task blocks are regular on purpose
    # Sentence skeletons: vocabulary words and numbers replaced by a placeholder.
    fillers = {w.lower() for pool in (W.NAMES_F, W.NAMES_M, W.CITIES, W.COLOURS, W.OBJECTS, W.FOODS, W.JOBS,
                                      W.HOBBIES, W.TASK_WORDS, W.PET_NAMES, W.DAYS, W.MONTHS) for w in pool}
    fillers |= {a[i] for a in W.ANIMALS for i in (0, 1)}
    skeletons = set()
    for t in texts:
        for sent in re.split(r"(?<=[.?!])\s+|\n", t):
            skeletons.add(" ".join("_" if w.lower() in fillers or w.isdigit() else w
                                   for w in re.findall(r"[A-Za-z]+|\d+", sent)))
    assert len(skeletons) > 550  # from the ~35% general-text documents of the sample (PRETRAIN_MIX)
    n_questions = {k: set() for k in TASK_KINDS}
    for t in texts:
        for q, _ in _qa_pairs(t):
            got = solve(q)
            if got:
                n_questions[got[0]].add(q.split(":")[0])
    minimum = {"copy": 2, "count": 2, "last": 2}  # several wordings per task kind
    assert all(len(n_questions[k]) >= minimum[k] for k in TASK_KINDS), n_questions


# ---- tokenizer ----------------------------------------------------------------------------------------------

def _check_tokenizer(tok) -> None:
    assert [tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [0, 1, 2]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.apply_chat_template(TWO_TURNS, tokenize=False) == TWO_TURNS_CHATML
    prompt = tok.apply_chat_template(TWO_TURNS[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(TWO_TURNS_CHATML, add_special_tokens=False)["input_ids"]
    assert ids[0] == 1 and ids.count(2) == 2 and tok.decode(ids) == TWO_TURNS_CHATML


def test_repo_default_tokenizer():
    from model.tokenizer import DEFAULT_TOKENIZER_DIR, load_tokenizer

    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (DEFAULT_TOKENIZER_DIR / f).exists(), f"model/{f} missing: run `python scripts/train_tokenizer.py`"
    tok = load_tokenizer()
    _check_tokenizer(tok)
    assert 1000 < len(tok) <= 6400


def test_train_tokenizer_cli_is_deterministic(tmp_path):
    from model.tokenizer import load_tokenizer
    from parallel_data.demo.corpus import build_pretrain

    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps({"body": t}) + "\n" for t in build_pretrain(9, 400)))
    runs = ([sys.executable, "scripts/train_tokenizer.py"], [sys.executable, "-m", "scripts.train_tokenizer"])
    for i, cmd in enumerate(runs):
        res = subprocess.run([*cmd, "--data_path", str(data), "--text_field", "body", "--vocab_size", "400",
                              "--out_dir", str(tmp_path / f"tok{i}")], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        assert "400 documents" in res.stdout
    files = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
    assert all((tmp_path / "tok0" / f).read_bytes() == (tmp_path / "tok1" / f).read_bytes() for f in files)
    tok = load_tokenizer(tmp_path / "tok0")
    assert len(tok) == 400
    _check_tokenizer(tok)


def test_train_tokenizer_reports_file_and_line(tmp_path, capsys):
    from scripts.train_tokenizer import main

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "one"}\n{"text": "two"}\n{"text": "three"\n')
    assert main(["--data_path", str(bad_json), "--out_dir", str(tmp_path / "t1")]) == 2
    err = capsys.readouterr().err
    assert f"{bad_json}:3:" in err and "malformed JSON" in err

    no_field = tmp_path / "nofield.jsonl"
    no_field.write_text('{"text": "one"}\n{"content": "two"}\n')
    assert main(["--data_path", str(no_field), "--out_dir", str(tmp_path / "t2")]) == 2
    err = capsys.readouterr().err
    assert f"{no_field}:2:" in err and "field 'text'" in err

    assert main(["--data_path", str(tmp_path / "missing.jsonl"), "--out_dir", str(tmp_path / "t3")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in ("t1", "t2", "t3"))  # nothing written on bad input
