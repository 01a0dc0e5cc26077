"""The Hugging Face fine-tuning commands of the seed documents work as written, with local paths for hub names.

Every command of seed 000 section 4 and seed 002 parses with its intended meaning (defaults as the seed
tables say); seed 002's basic command trains a tiny local model end to end, and seed 000's LoRA command
(one process instead of `torchrun --nproc_per_node 8 ... --ddp`) produces `out/lora/hf_lora_hf_final.pth`,
which seed 000's inference command then runs with `--branch_stride 256` (trained with 512: honoured, with
a warning; 24 new tokens instead of 512 on the random tiny model).
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_tiny_hf, tiny_corpus

from trainer import train_hf_full, train_hf_lora, train_hf_parallel_lora

ROOT = Path(__file__).resolve().parents[2]
SEED_000_LORA = """torchrun --nproc_per_node 8 trainer/train_hf_lora.py \\
  --base_model Qwen/Qwen2.5-1.5B-Instruct \\
  --data_path dataset/sft_512.jsonl \\
  --data_mode parallel_sft \\
  --parallel_cache_dir out/parallel_cache \\
  --batch_size 4 \\
  --accumulation_steps 4 \\
  --batch_by_samples \\
  --max_branches_per_sample 4 \\
  --min_branches_per_sample 1 \\
  --branch_stride 512 \\
  --align_to right \\
  --rope_2d_ratio 0.5 \\
  --lora_rank 8 \\
  --epochs 1 \\
  --save_interval 100 \\
  --ddp"""
SEED_000_FULL = """torchrun --nproc_per_node 8 trainer/train_hf_full.py \\
  --base_model Qwen/Qwen2.5-1.5B-Instruct \\
  --data_path dataset/sft_512.jsonl \\
  --data_mode parallel_sft \\
  --parallel_cache_dir out/parallel_cache \\
  --batch_size 2 \\
  --accumulation_steps 8 \\
  --batch_by_samples \\
  --max_branches_per_sample 4 \\
  --min_branches_per_sample 1 \\
  --branch_stride 512 \\
  --align_to right \\
  --rope_2d_ratio 0.5 \\
  --epochs 1 \\
  --ddp"""
SEED_000_INFER = """python scripts/parallel_generate.py \\
  --hf_base_model Qwen/Qwen2.5-1.5B-Instruct \\
  --lora_path out/lora/hf_lora_hf_final.pth \\
  --lora_rank 8 \\
  --rope_2d_ratio 0.5 \\
  --branch_stride 256 \\
  --branches_per_sample 3 \\
  --out_path out/results.jsonl \\
  --max_new_tokens 512 \\
  --mode sft \\
  --align_to right \\
  --prompts "Introduce AI" "Explain deep learning" "NLP applications\""""
SEED_002 = [
    """python trainer/train_hf_parallel_lora.py \\
    --base_model "Qwen/Qwen2.5-0.5B-Instruct" \\
    --data_path "dataset/sft_data_parallel.jsonl" \\
    --lora_rank 8 \\
    --rope_2d_ratio 0.5 \\
    --batch_size 16 \\
    --epochs 3 \\
    --max_seq_len 512 \\
    --branches_per_sample 8""",
    """python trainer/train_hf_parallel_lora.py \\
    --base_model "Qwen/Qwen2.5-0.5B-Instruct" \\
    --hf_dataset "HuggingFaceFW/fineweb-edu" \\
    --hf_subset "sample-10BT" \\
    --use_streaming \\
    --lora_rank 8 \\
    --batch_size 8 \\
    --epochs 1""",
    """torchrun --nproc_per_node 4 trainer/train_hf_parallel_lora.py \\
    --base_model "Qwen/Qwen2.5-0.5B-Instruct" \\
    --data_path "dataset/sft_data_parallel.jsonl" \\
    --lora_rank 8 \\
    --batch_size 8 \\
    --ddp""",
    """python trainer/train_hf_parallel_lora.py \\
    --base_model "Qwen/Qwen2.5-0.5B-Instruct" \\
    --data_path "dataset/test_parallel.jsonl" \\
    --lora_rank 4 \\
    --batch_size 32 \\
    --epochs 1 \\
    --max_seq_len 256 \\
    --branches_per_sample 4""",
    """torchrun --nproc_per_node 4 trainer/train_hf_parallel_lora.py \\
    --base_model "Qwen/Qwen2.5-1.5B-Instruct" \\
    --data_path "dataset/full_parallel.jsonl" \\
    --lora_rank 16 \\
    --batch_size 8 \\
    --accumulation_steps 4 \\
    --epochs 3 \\
    --max_seq_len 512 \\
    --branches_per_sample 8 \\
    --use_wandb \\
    --ddp""",
    """torchrun --nproc_per_node 8 trainer/train_hf_parallel_lora.py \\
    --base_model "Qwen/Qwen2.5-7B-Instruct" \\
    --hf_dataset "your-dataset" \\
    --use_streaming \\
    --lora_rank 32 \\
    --batch_size 2 \\
    --accumulation_steps 16 \\
    --dtype bfloat16 \\
    --max_seq_len 512 \\
    --branches_per_sample 8 \\
    --ddp""",
]
FRONTS = {"trainer/train_hf_lora.py": train_hf_lora, "trainer/train_hf_full.py": train_hf_full,
          "trainer/train_hf_parallel_lora.py": train_hf_parallel_lora}


def split(cmd: str) -> tuple[str, list[str]]:
    words = shlex.split(cmd.replace("\\\n", " "))
    words = words[words.index("--nproc_per_node") + 2:] if words[0] == "torchrun" else words[1:]
    return words[0], words[1:]


def localise(argv: list[str], model: str) -> list[str]:
    """Hub model names -> the local folder (the only change the seeds' commands get)."""
    return [model if a.startswith("Qwen/") else a for a in argv]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_tokenizer):
    d = tmp_path_factory.mktemp("seedmodel") / "qwen2"
    build_tiny_hf("qwen2", d, vocab_size=len(tiny_tokenizer))
    tiny_tokenizer.save_pretrained(str(d))
    return str(d)


@pytest.mark.parametrize("cmd", [SEED_000_LORA, SEED_000_FULL, *SEED_002],
                         ids=["000-lora", "000-full", *[f"002-{i}" for i in range(len(SEED_002))]])
def test_seed_command_parses_with_its_meaning(cmd, tiny_model, tmp_path, monkeypatch):
    script, argv = split(cmd)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # --use_wandb checks for a key
    for flag, value in zip(argv, argv[1:]):
        if flag == "--data_path":
            Path(value).parent.mkdir(parents=True, exist_ok=True)
            Path(value).write_text("")
    args = FRONTS[script].build_parser().parse_args(localise(argv, tiny_model))
    given = {a.lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    assert args.hf_base_model == tiny_model and args.out_dir == "out"
    if script == "trainer/train_hf_parallel_lora.py":  # seed 002's defaults
        assert args.lora_name == "hf_parallel_lora" and args.model_tag == "" and args.patch_rope is True
        assert (args.log_interval, args.save_interval, args.grad_clip) == (50, 500, 1.0)
        assert args.branch_stride is None  # the stage's default, 128
        assert args.learning_rate == 1e-4 and (args.epochs == 1 or "epochs" in given)
        assert args.data_mode == "parallel"
    if "use_streaming" in given:
        assert args.use_streaming and args.hf_dataset in ("HuggingFaceFW/fineweb-edu", "your-dataset")
    if "hf_subset" in given:
        assert args.hf_subset == "sample-10BT"
    if "data_mode" in given:
        assert args.data_mode == "parallel_sft" and args.parallel_cache_dir == "out/parallel_cache"
        assert args.branch_stride == 512 and args.align_to == "right" and args.batch_by_samples
        assert (args.max_branches_per_sample, args.min_branches_per_sample) == (4, 1)
    if "branches_per_sample" in given:
        assert args.branches_per_sample in (4, 8)
    assert args.ddp is ("ddp" in given)


def test_seed_002_basic_command_trains(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    texts = tiny_corpus(80, seed=5)
    Path("dataset").mkdir()
    with open("dataset/sft_data_parallel.jsonl", "w") as f:
        for i in range(0, 40, 4):
            f.write(json.dumps({"main": texts[i], "branches": texts[i + 1:i + 4]}) + "\n")
        for t in texts[40:]:
            f.write(json.dumps({"text": t}) + "\n")
    script, argv = split(SEED_002[0])
    assert train_hf_parallel_lora.main(localise(argv, tiny_model)) == 0
    assert Path("out/lora/hf_parallel_lora_final.pth").is_file()
    assert (Path("out/lora/hf_parallel_lora_final") / "adapter_config.json").is_file()


@pytest.mark.slow
def test_seed_000_lora_then_inference_with_another_stride(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("dataset").mkdir()
    with open("dataset/sft_512.jsonl", "w") as f:
        for i, t in enumerate(tiny_corpus(24, seed=6)):
            f.write(json.dumps({"conversations": [{"role": "user", "content": t},
                                                  {"role": "assistant", "content": f"answer {i}"}]}) + "\n")
    _, argv = split(SEED_000_LORA)
    argv.remove("--ddp")  # one process here instead of torchrun --nproc_per_node 8
    assert train_hf_lora.main(localise(argv, tiny_model)) == 0
    assert Path("out/lora/hf_lora_hf_final.pth").is_file() and any(Path("out/parallel_cache").iterdir())
    _, argv = split(SEED_000_INFER)
    argv[argv.index("--max_new_tokens") + 1] = "24"  # 512 new tokens of a random tiny model prove nothing more
    r = subprocess.run([sys.executable, str(ROOT / "scripts/parallel_generate.py"), *localise(argv, tiny_model)],
                       capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2",
                                                                          "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trained with branch_stride=512; using --branch_stride 256 as given" in r.stderr
    rows = [json.loads(x) for x in Path("out/results.jsonl").read_text().splitlines()]
    assert sum(len(row.get("branches", [row])) for row in rows) == 3
