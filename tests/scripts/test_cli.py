"""The shared CLI layer: flag groups (trainer/args/), the parser and the main() wrapper (trainer/cli.py)."""

from __future__ import annotations

import ast
import json
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from model.device import resolve_device, resolve_dtype
from scripts import eval_loss, parallel_generate
from trainer import train_full_sft, train_pretrain
from trainer.cli import UsageError, cli_main, error_message, make_parser

ROOT = Path(__file__).resolve().parents[2]
DEMO_OWNED = {"scripts/run_demo.py", "scripts/build_demo_data.py"}  # the demo generator's own tools
# seed names: parallel_generate's prompt mode / convert_dataset's output kind; the sampling temperature /
# train_distillation's softmax temperature of the KL term; the conversation format of records / convert_model's
# output format (the spelling)
SAME_NAME_OTHER_MEANING = {"--mode", "--temperature", "--format"}


def parse(module, *argv: str):
    return module.build_parser().parse_args(list(argv))


def _declarations() -> dict[str, list[str]]:
    """Every option string given to add_argument in trainer/ and scripts/ -> the files declaring it."""
    where: dict[str, list[str]] = defaultdict(list)
    for path in [*ROOT.glob("trainer/*.py"), *ROOT.glob("trainer/args/*.py"), *ROOT.glob("scripts/*.py")]:
        rel = str(path.relative_to(ROOT))
        if rel in DEMO_OWNED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and str(arg.value).startswith("-"):
                        where[arg.value].append(rel)
    return where


def test_each_flag_is_declared_once():
    repeated = {flag: files for flag, files in _declarations().items()
                if len(files) > 1 and flag not in SAME_NAME_OTHER_MEANING}
    assert not repeated, repeated
    assert _declarations()["--mask"] == ["trainer/args/groups.py"]


def test_choices_come_from_the_library_names():
    from parallel.layout import ALIGNMENTS
    from parallel.masks import MASK_MODES
    from parallel.rope2d import ROPE_2D_SCHEMES

    p = train_pretrain.parse_args(["--hf-dataset", "o/n"])
    assert p.mask_mode == MASK_MODES[0] and p.align_to == ALIGNMENTS[0]
    actions = {a.dest: a for a in train_pretrain.build_parser()._actions}
    assert tuple(actions["mask_mode"].choices) == MASK_MODES
    assert tuple(actions["align_to"].choices) == ALIGNMENTS
    assert tuple(actions["rope_2d_scheme"].choices) == ROPE_2D_SCHEMES


def test_both_word_separators_and_no_abbreviations(capsys):
    a = train_pretrain.parse_args(["--hf_dataset", "o/n", "--hf_split", "test", "--max_samples", "7",
                                   "--chunk_length", "16", "--max-branches-per-sample", "4", "--no-random-time-offset"])
    assert (a.hf_dataset, a.hf_split, a.max_samples, a.chunk_length) == ("o/n", "test", 7, 16)
    assert a.max_branches_per_sample == 4 and a.random_time_offset is False
    with pytest.raises(SystemExit):
        train_pretrain.parse_args(["--hf-dataset", "o/n", "--hidden", "64"])
    assert "unrecognized arguments: --hidden" in capsys.readouterr().err


def test_random_time_offset_is_a_real_boolean():
    train = lambda *f: train_pretrain.parse_args(["--hf-dataset", "o/n", *f]).random_time_offset  # noqa: E731
    assert train() is True and train("--random_time_offset") is True
    assert train("--no_random_time_offset") is False and train("--no-random-time-offset") is False
    assert train("--no_random_time_offset", "--random_time_offset") is True  # the last one wins
    ev = lambda *f: parse(eval_loss, "--hf-dataset", "o/n", "--model_path", __file__, *f)  # noqa: E731
    assert ev().random_time_offset is False and ev("--random_time_offset").random_time_offset is True


def test_branch_modes_fixed_dynamic_and_zero():
    parse = lambda *f: train_pretrain.parse_args(["--hf-dataset", "o/n", *f])  # noqa: E731
    a = parse()
    assert (a.branches_per_sample, a.max_branches_per_sample, a.min_branches_per_sample) == (8, None, 1)
    a = parse("--max_branches_per_sample", "16")  # dynamic: min defaults to 1
    assert (a.max_branches_per_sample, a.min_branches_per_sample) == (16, 1)
    a = parse("--branches_per_sample", "6", "--max_branches_per_sample", "0")  # seed 002: 0 = fixed mode
    assert (a.branches_per_sample, a.max_branches_per_sample) == (6, None)
    a = train_full_sft.parse_args(["--hf-dataset", "o/n", "--max_branches_per_sample", "0"])
    assert (a.branches_per_sample, a.max_branches_per_sample) == (4, None)


def test_output_flag_and_its_aliases(tmp_path):
    from scripts import convert_dataset

    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "x"}\n')
    for flag in ("--out_path", "--output", "-o", "--out"):
        a = convert_dataset.build_parser().parse_args(["--input", str(src), flag, str(tmp_path / "o.jsonl"),
                                                       "--mode", "pretrain"])
        assert a.out_path == str(tmp_path / "o.jsonl") and a.data_path == str(src)
    model = tmp_path / "m.pth"
    model.write_text("")
    a = parse(parallel_generate, "--model_path", str(model), "--prompts", "x", "--out_path", str(tmp_path / "r"))
    assert a.out_path == str(tmp_path / "r")
    a = parse(eval_loss, "--model_path", str(model), "--data_path", str(src), "--out_prefix", str(tmp_path / "e"))
    assert eval_loss.report_path(a) == tmp_path / "e.json"


def test_sampling_defaults_apply_only_with_do_sample(tmp_path):
    model = tmp_path / "m.pth"
    model.write_text("")
    a = parse(parallel_generate, "--model_path", str(model), "--prompts", "x", "--do_sample", "--top_k", "5")
    assert (a.temperature, a.top_p, a.top_k) == (0.85, 0.85, 5)
    a = parse(parallel_generate, "--model_path", str(model), "--prompts", "x", "--no_chat_template")
    assert a.chat_template is False and not a.do_sample


def _main_raising(exc):
    @cli_main(lambda: make_parser(None, "t"))
    def main(args) -> int:
        raise exc
    return main


@pytest.mark.parametrize("exc,code,line", [
    (ValueError("bad value\nsecond line"), 2, "error: bad value second line"),
    (UsageError("--x 3 needs --y"), 2, "error: --x 3 needs --y"),
    (FileNotFoundError("data.jsonl does not exist"), 2, "error: data.jsonl does not exist"),
    (SystemExit("the run stopped: reason"), 2, "error: the run stopped: reason"),
    (SystemExit(143), 143, None),
    (SystemExit(0), 0, None),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_wrapper_turns_bad_input_into_one_line(capsys, exc, code, line):
    assert _main_raising(exc)([]) == code
    err = capsys.readouterr().err.strip()
    if line is None:
        assert err == ""
    else:
        assert len(err.splitlines()) == 1 and err.endswith(line)


def test_wrapper_keeps_the_traceback_of_a_bug(monkeypatch):
    with pytest.raises(KeyError):
        _main_raising(KeyError("a bug"))([])
    monkeypatch.setenv("PARALLELMIND_TRACEBACK", "1")
    with pytest.raises(ValueError):
        _main_raising(ValueError("shown in full when asked"))([])


def test_dataloader_worker_errors_keep_their_own_message():
    from parallel_data.io import DataError

    wrapped = DataError("Caught DataError in DataLoader worker process 0.\n"
                        "Original Traceback (most recent call last):\n"
                        '  File "x.py", line 3, in f\n    raise DataError(...)\n'
                        "parallel_data.io.DataError: data.jsonl:5: malformed JSON")
    assert error_message(wrapped) == "data.jsonl:5: malformed JSON"


def test_resolve_device_and_dtype(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="--device banana: unknown device"):
        resolve_device("banana")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"--device cuda:2: this machine has 2 cuda device\(s\)"):
        resolve_device("cuda:2")
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16 and resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("auto", "cpu") == torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        resolve_dtype("fp8", "cpu")


def test_resume_state_under_any_name_is_not_a_model(tmp_path):
    from model.loading import load_parallel_model

    path = tmp_path / "state.pth"  # a resume state renamed: found by its content
    torch.save({"format": "parallelmind-resume-v1", "step": 3}, path)
    with pytest.raises(ValueError, match="is a training resume state"):
        load_parallel_model(model_path=str(path))


def test_eval_loss_log_interval_prints_progress(tmp_path, tiny_tokenizer, capsys):
    from conftest import tiny_corpus, tiny_minimind

    from model.checkpoint import save_checkpoint

    ckpt = tmp_path / "m.pth"
    save_checkpoint(ckpt, tiny_minimind(seed=1, vocab_size=len(tiny_tokenizer)), tokenizer=tiny_tokenizer)
    data = tmp_path / "v.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in tiny_corpus(12, seed=2)))
    args = ["--model_path", str(ckpt), "--data_path", str(data), "--branches_per_sample", "2", "--batch_size", "2",
            "--batch_by_samples", "--out_path", str(tmp_path / "e.json")]
    assert eval_loss.main([*args, "--log_interval", "2"]) == 0
    progress = [ln for ln in capsys.readouterr().err.splitlines() if "batches in" in ln]
    assert [ln.split(": ")[1].split()[0] for ln in progress] == ["2"]  # 12 texts / 2 per sample / 2 per batch = 3
    assert eval_loss.main([*args, "--log_interval", "1"]) == 0
    assert sum("batches in" in ln for ln in capsys.readouterr().err.splitlines()) == 3


def test_an_entry_point_that_closed_a_process_group_exits_without_teardown(tmp_path):
    """After `cleanup()` destroyed the group, the process ends with the run's status and its output flushed,
    but no interpreter teardown (atexit), where gloo's threads can abort or hang after a finished run."""
    import subprocess
    import sys

    script = f'''
import atexit, sys
import torch.distributed as dist
from trainer import distributed
from trainer.cli import cli_main, make_parser

atexit.register(lambda: print("teardown ran", flush=True))

@cli_main(lambda: make_parser("closes a group", "closer"))
def main(args):
    dist.init_process_group("gloo", init_method="file://{tmp_path / 'store'}", rank=0, world_size=1)
    distributed.cleanup()
    print("saved", end="")  # unflushed: the exit must flush it
    return 3

sys.exit(main())
'''
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and r.stdout == "saved", (r.returncode, r.stdout, r.stderr[-2000:])
    plain = script.replace("    distributed.cleanup()\n", "")  # no group closed: the ordinary exit, atexit included
    r = subprocess.run([sys.executable, "-c", plain], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and "teardown ran" in r.stdout
