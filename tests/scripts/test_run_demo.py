"""The demo's report and README block (scripts/run_demo.py) and the streamed view it prints
(scripts/parallel_generate.py --streaming). No training: the stage outputs are written by hand."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from scripts import run_demo as D

REPO = Path(__file__).resolve().parents[2]


def _row(setting, mode, b, correct, total=64, tok_s=100.0):
    return {"setting": setting, "mode": mode, "branches": b, "correct": correct, "total": total, "seconds": 1.0,
            "new_tokens": int(tok_s), "accuracy": correct / total, "tokens_per_s": tok_s}


def _write_stage_outputs(d: Path, shared_par16: int = 61) -> Path:
    ckpt = d / "pretrain_128.pth"
    (d / "eval_loss.json").write_text(json.dumps({"texts": 384, "results": [
        {"branches": b, "loss": 1.5 + 0.01 * i, "ppl": 4.5, "tokens": 1000, "samples": 384 // b}
        for i, b in enumerate((1, 2, 4, 8, 16, 32))]}))
    rows = [_row("independent", "sequential", 1, 58, tok_s=50.0)]
    rows += [_row("independent", "parallel", b, 57, tok_s=50.0 * b) for b in (1, 2, 4, 8, 16)]
    for b in (1, 2, 4, 8, 16):
        rows += [_row("shared_context", "parallel", b, shared_par16 if b == 16 else 61, tok_s=40.0 * b),
                 _row("shared_context", "sequential", b, 62, tok_s=40.0)]
    (d / "tasks.json").write_text(json.dumps({"rows": rows}))
    for mask, right in (("columnar", 63), ("isolated", 8)):
        peer = [_row("game", "sequential", 1, 7)] + [_row("game", "parallel", b, right)
                                                              for b in (2, 4, 8, 16)]
        (d / f"peer_{mask}.json").write_text(json.dumps({"rows": peer}))
    (d / "pretrain_128_metrics.jsonl").write_text(
        json.dumps({"step": 10, "loss": 2.0}) + "\n" +
        json.dumps({"summary": True, "step": 900, "targets_seen": 123456, "wall_s": 200.0, "val_loss": 1.4}) + "\n")
    return ckpt


@pytest.fixture
def summary(tmp_path):
    ckpt = _write_stage_outputs(tmp_path)
    return D.summarize(tmp_path, ckpt, {"pretrain": 200.0, "task accuracy": 40.0}, 300.0, ("1.00", "1.20"))


def test_summary_reads_every_stage_and_checks_the_targets(summary):
    assert summary["steps"] == 900 and summary["targets_seen"] == 123456 and summary["val_loss"] == 1.4
    assert [r["branches"] for r in summary["loss"]] == [1, 2, 4, 8, 16, 32]
    indep = summary["accuracy"]["independent"]
    # every parallel row is compared with the one-at-a-time run over the same tasks
    assert [r["branches"] for r in indep] == [1, 2, 4, 8, 16] and all(r["sequential"] == 58 / 64 for r in indep)
    shared16 = summary["accuracy"]["shared_context"][-1]
    assert (shared16["parallel"], shared16["sequential"]) == (61 / 64, 62 / 64)
    t = {x["setting"]: x for x in D.targets(summary)}
    assert t["independent"]["met"] and t["shared context"]["met"]  # 1.6 points behind, both above 0.80
    assert t["shared context"]["gap"] == pytest.approx(1 / 64)
    assert t["independent"]["one_at_a_time_min"] == 58 / 64
    assert summary["peer"]["rows"][-1] == {"branches": 16, "columnar": 63 / 64, "isolated": 8 / 64, "total": 64}
    assert summary["peer"]["sequential"] == 7 / 64


def test_targets_fail_when_parallel_falls_behind(tmp_path):
    ckpt = _write_stage_outputs(tmp_path, shared_par16=60)  # 62 -> 60 of 64: 3.1 points behind
    s = D.summarize(tmp_path, ckpt, {}, 1.0, ("0", "0"))
    t = {x["setting"]: x for x in D.targets(s)}
    assert not t["shared context"]["met"] and t["independent"]["met"]
    assert "**no**" in D.targets_table(s)


def test_report_has_every_section(tmp_path, summary):
    path = D.write_report(tmp_path, tmp_path / "pretrain_128.pth", summary)
    text = path.read_text()
    for needle in ("## Does it master its tasks?", "## Loss vs branches per sample", "eval_loss.png", "tasks.png",
                   "peer.png", "## Stage timings", "| total | 300 |", "tokens/s at 16 branches", "| 16 | 0.984 | 0.125 |"):
        assert needle in text, needle
    D.plot_peer(summary, tmp_path / "peer.png")
    assert (tmp_path / "peer.png").stat().st_size > 1000


def test_readme_block_round_trip(tmp_path, summary):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{D.BLOCK_START}\nold numbers\n{D.BLOCK_END}\n\nafter\n")
    D.update_readme(readme, summary)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "old numbers" not in text
    assert D.read_readme_summary(text) == summary
    D.update_readme(readme, summary)
    assert readme.read_text() == text  # idempotent
    assert "| shared context | 0.969 | 0.953 | +1.6 |" in text and "| independent | 0.906 | 0.891 | +1.6 |" in text
    assert "0.984 columnar, 0.125 isolated" in text
    (tmp_path / "no_block.md").write_text("# nothing\n")
    with pytest.raises(ValueError, match="demo-results"):
        D.update_readme(tmp_path / "no_block.md", summary)


def test_repo_readme_block_is_generated_not_typed():
    """README.md's demo numbers are exactly what its embedded summary (a run's summary.json) renders to."""
    text = (REPO / "README.md").read_text()
    assert D.BLOCK_START in text and D.BLOCK_END in text
    summary = D.read_readme_summary(text)
    block = text.split(D.BLOCK_START, 1)[1].split(D.BLOCK_END, 1)[0]
    if summary is None:  # no run recorded yet: then no numbers at all, never typed ones
        assert block.strip() == "", "README.md's demo block holds text that no run generated"
        return
    assert D.BLOCK_START + block + D.BLOCK_END == D.render_readme_block(summary)


def test_steps_flag_reaches_the_trainer_and_is_checked(capsys):
    cmd = D.pretrain_args(Path("mix.jsonl"), Path("out"), D.parse_args(["--steps", "25"]).steps)
    assert cmd[0] == "trainer/train_pretrain.py" and cmd.count("--max_steps") == 1
    assert cmd[cmd.index("--max_steps") + 1] == "25"
    assert D.parse_args([]).steps == D.STEPS and D.parse_args([]).max_tasks == D.MAX_TASKS
    assert D.parse_args([]).stage1_steps == D.STAGE1_STEPS
    for bad in (["--steps", "0"], ["--max_tasks", "-1"], ["--stage1_steps", "0"]):
        with pytest.raises(SystemExit) as e:
            D.parse_args(bad)
        assert e.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


def test_two_stages_one_branch_then_many(tmp_path):
    """Stage 1 starts from random weights on one task per sample; stage 2 starts from stage 1's checkpoint
    on samples of 1..16 branches (flags of each stage given once)."""
    one = D.pretrain_args(Path("s1.jsonl"), tmp_path / "stage1", 30)
    two = D.pretrain_args(Path("s2.jsonl"), tmp_path, 20, init_weight=tmp_path / "stage1" / "pretrain_128.pth")
    assert "--init_weight" not in one and two[two.index("--init_weight") + 1].endswith("stage1/pretrain_128.pth")
    flag = lambda cmd, f: cmd[cmd.index(f) + 1]  # noqa: E731
    assert flag(one, "--max_branches_per_sample") == "1" and flag(two, "--max_branches_per_sample") == "16"
    for cmd in (one, two):
        assert len([c for c in cmd if c.startswith("--")]) == len({c for c in cmd if c.startswith("--")})


def test_stage_mixes(tmp_path, monkeypatch):
    grouped = [{"main": "", "branches": [{"text": f"Q: q{i}\nA: a\n", "answer_offset": 4}]} for i in range(8)]
    grouped += [{"main": "ctx\n", "branches": [{"text": "Q: x\nA: a\n", "answer_offset": 4}]},
                {"main": "", "branches": [{"text": f"Q: p{j}\nA: a\n", "answer_offset": 4} for j in range(3)]}]
    (tmp_path / "parallel_demo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in grouped))
    (tmp_path / "pretrain_demo.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(5)))
    monkeypatch.setattr(D, "DATA", tmp_path)
    assert D.mix_training_data(tmp_path / "s1.jsonl", 1, stage=1) == 8
    assert all(D._is_single(x) for x in (tmp_path / "s1.jsonl").read_text().splitlines())
    n = D.mix_training_data(tmp_path / "s2.jsonl", 1, stage=2, pretrain_docs=3, singles_kept=0.25)
    recs = [json.loads(x) for x in (tmp_path / "s2.jsonl").read_text().splitlines()]
    assert n == len(recs) == 2 + 2 + 3
    assert sum("text" in r for r in recs) == 3 and sum(D._is_single(json.dumps(r)) for r in recs) == 2


# ---- the streamed view ------------------------------------------------------------------------------------

def test_stream_view_is_readable():
    from scripts.parallel_generate import StreamView, shorten

    long_ctx = "Mira lives in Oslo. " * 20
    out = io.StringIO()  # not a terminal: one final frame, no cursor codes
    view = StreamView([{"main": long_ctx, "branches": ["Q: Where does Mira live?\nA:", "Q: Who?\nA:"]},
                       {"main": "", "branches": ["Q: What is 3 plus 5?\nA:"]}], out=out)
    for i, piece in ((0, " Os"), (0, "lo"), (1, " Mira"), (2, " 8")):
        view.update(i, piece)
        view.render()
    assert out.getvalue() == ""
    view.render(force=True)
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    assert lines[0].startswith("sample 1 · 2 branches · shared context (prefilled once): Mira lives in Oslo.")
    assert " … " in lines[0] and len(lines[0]) <= 120
    assert lines[1] == "  branch  1 │ Q: Where does Mira live? A: → Oslo"
    assert lines[2] == "  branch  2 │ Q: Who? A: → Mira"
    assert lines[3] == "sample 2 · 1 branch · no shared context (each branch is its own prompt)"
    assert lines[4] == "  branch  1 │ Q: What is 3 plus 5? A: → 8"
    assert "::" not in out.getvalue()
    s = shorten("word " * 50, 40)
    assert len(s) <= 40 and " … " in s and s.startswith("word") and s.endswith("word")
