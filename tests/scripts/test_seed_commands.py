"""The commands of the seed README (sections 1-3, Inference Test, Loss Evaluation) parse as written.

Copied verbatim from the original ParallelMind README; `torchrun --nproc_per_node 8` prefixes are the
launcher's. Every flag must be accepted by the real argument parser with the intended meaning. The
end-to-end behaviour of the same flags is covered by test_training.py and test_inference_cli.py.
"""

import shlex

import pytest

from scripts import convert_dataset, eval_loss, parallel_generate
from trainer import train_full_sft, train_pretrain

SEED_COMMANDS = [
    """torchrun --nproc_per_node 8 trainer/train_pretrain.py \\
  --hf-dataset HuggingFaceFW/fineweb-edu \\
  --hf-subset sample-10BT \\
  --max-samples 100000 \\
  --chunk-length 512 \\
  --pe rope \\
  --rope_2d_ratio 0.5 \\
  --epochs 1 \\
  --batch_size 4 \\
  --accumulation_steps 1 \\
  --batch_by_samples \\
  --max_branches_per_sample 16 \\
  --min_branches_per_sample 1 \\
  --max_total_tokens 0 \\
  --out_dir out/rope_pretrain \\
  --ddp""",
    """torchrun --nproc_per_node 8 trainer/train_pretrain.py \\
  --pe rope \\
  --rope_2d_ratio 0.5 \\
  --epochs 1 \\
  --batch_size 4 \\
  --accumulation_steps 1 \\
  --batch_by_samples \\
  --max_branches_per_sample 16 \\
  --min_branches_per_sample 1 \\
  --val_max_branches_per_sample 4 \\
  --val_min_branches_per_sample 4 \\
  --max_total_tokens 0 \\
  --data_path dataset/pretrain_512.jsonl \\
  --max-samples 2048000 \\
  --val_samples 500000 \\
  --val_interval_tokens 100000000 \\
  --out_dir out/rope_pretrain \\
  --ddp""",
    """python scripts/parallel_generate.py \\
  --mode pretrain \\
  --prompts "Why does the sun rise in the east" "Introduce large language models" \\
  --branches_per_sample 2 \\
  --model_path out/rope_pretrain/pretrain_512.pth \\
  --streaming \\
  --pe rope""",
    """torchrun --nproc_per_node 8 scripts/eval_loss.py \\
  --model_path out/rope_pretrain/pretrain_512.pth \\
  --data_path dataset/pretrain_hq_split.jsonl \\
  --hidden_size 512 \\
  --num_hidden_layers 8 \\
  --pe rope \\
  --rope_2d_ratio 0.5 \\
  --eval_target_samples 2048000 \\
  --batch_size 64 \\
  --batch_by_samples \\
  --val_max_branches_per_sample 4 \\
  --val_min_branches_per_sample 4 \\
  --max_total_tokens 0""",
    """torchrun --nproc_per_node 8 trainer/train_full_sft.py \\
  --hf-dataset tatsu-lab/alpaca \\
  --max-samples 10000 \\
  --epochs 2 \\
  --batch_size 4 \\
  --accumulation_steps 1 \\
  --max_branches_per_sample 8 \\
  --min_branches_per_sample 1 \\
  --max_seq_len 512 \\
  --pe rope \\
  --init_weight out/pretrain_512.pth \\
  --out_dir out \\
  --ddp""",
    """torchrun --nproc_per_node 8 trainer/train_full_sft.py \\
  --epochs 2 \\
  --batch_size 4 \\
  --accumulation_steps 1 \\
  --max_branches_per_sample 8 \\
  --min_branches_per_sample 1 \\
  --max_seq_len 512 \\
  --pe rope \\
  --data_path dataset/sft_512.jsonl \\
  --init_weight out/pretrain_512.pth \\
  --out_dir out \\
  --ddp""",
    """python trainer/train_full_sft.py \\
  --epochs 1 \\
  --batch_size 16 \\
  --accumulation_steps 1 \\
  --max_branches_per_sample 8 \\
  --min_branches_per_sample 1 \\
  --max_seq_len 512 \\
  --pe rope \\
  --data_path dataset/sft_512.jsonl \\
  --init_weight out/pretrain_512.pth \\
  --out_dir out""",
    """python scripts/parallel_generate.py \\
  --mode pretrain \\
  --prompts "Why does the sun rise in the east" "Introduce large language models" \\
  --branches_per_sample 2 \\
  --model_path out/pretrain_512.pth \\
  --streaming \\
  --pe rope""",
    """python scripts/parallel_generate.py \\
  --prompts "Introduce yourself" "Explain large language models" "Recommend some books" \\
  --branches_per_sample 3 \\
  --model_path out/full_sft_512.pth \\
  --chat_template \\
  --streaming \\
  --pe rope""",
    """python scripts/parallel_generate.py \\
  --mode pretrain \\
  --branches_per_sample 4 \\
  --prompts_file planner_inputs.jsonl \\
  --model_path out/pretrain_512.pth""",
    """python scripts/convert_dataset.py --input your_data.txt --output dataset/custom_pretrain.jsonl --mode pretrain""",
    """python scripts/convert_dataset.py --input alpaca.json --output dataset/custom_sft.jsonl --mode sft --format alpaca""",
    """python scripts/convert_dataset.py --input sharegpt.json --output dataset/custom_sft.jsonl --mode sft --format sharegpt""",
    """python scripts/convert_dataset.py \\
  --hf-dataset HuggingFaceFW/fineweb-edu \\
  --hf-subset sample-10BT \\
  --hf-split train \\
  --output dataset/fineweb_pretrain.jsonl \\
  --mode pretrain \\
  --max-samples 100000""",
]

PARSERS = {"trainer/train_pretrain.py": train_pretrain, "trainer/train_full_sft.py": train_full_sft,
           "scripts/parallel_generate.py": parallel_generate, "scripts/eval_loss.py": eval_loss}


def split(cmd: str) -> tuple[str, list[str]]:
    words = shlex.split(cmd.replace("\\\n", " "))
    if words[0] == "torchrun":
        words = words[words.index("--nproc_per_node") + 2:]
    else:
        words = words[1:]  # python
    return words[0], words[1:]


INPUT_FLAGS = ("--data_path", "--model_path", "--init_weight", "--prompts_file", "--input")


@pytest.mark.parametrize("cmd", SEED_COMMANDS, ids=lambda c: split(c)[0] + ":" + str(SEED_COMMANDS.index(c)))
def test_seed_command_parses_with_its_meaning(cmd, tmp_path, monkeypatch):
    script, argv = split(cmd)
    # the parsers check at once that inputs exist: give the command the files it names
    monkeypatch.chdir(tmp_path)
    for flag, value in zip(argv, argv[1:]):
        if flag in INPUT_FLAGS:
            (tmp_path / value).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / value).write_text("")
    if script == "scripts/convert_dataset.py":
        args = convert_dataset.build_parser().parse_args(argv)
        assert args.mode in ("pretrain", "sft") and args.out_path.startswith("dataset/")
        return
    args = PARSERS[script].build_parser().parse_args(argv)
    given = {a.lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    if "max_samples" in given:
        assert args.max_samples in (100000, 2048000, 10000)
    if "hf_dataset" in given:
        assert args.hf_dataset in ("HuggingFaceFW/fineweb-edu", "tatsu-lab/alpaca")
    if "val_max_branches_per_sample" in given:
        assert args.val_max_branches_per_sample == args.val_min_branches_per_sample == 4
    if "eval_target_samples" in given:
        assert args.eval_texts == 2048000
    if "prompts" in given:
        assert len(args.prompts) in (2, 3)
    if "ddp" in given:
        assert args.ddp is True
