"""Command-line flags shared by every entry point, each declared once, in groups.

An entry point is `build_parser()` = `trainer.cli.make_parser(__doc__, name)` plus a few `add_*_args(p)`
calls. Every group also registers its checks, which run right after parsing (before torch, models or
data are loaded) and stop with one line naming the flag(s). Torch-free on purpose. The groups:

* `add_model_shape_args`: --preset (small|moe|base: the MiniMind2 table, model/presets.py; an explicit shape
  flag overrides that one value) --hidden_size --num_hidden_layers --num_attention_heads --num_key_value_heads
  --use_moe (training: --use_flex_attention --gradient_checkpointing);
* `add_rope_args`: --pe --rope_2d_ratio --rope_2d_scheme --branch_stride (--stride; generation may take
  0 = prefix sharing) (training: --fpe_theta --fpe_max_positions --fpe_learnable);
* `add_mask_args`: --mask --align_to;
* `add_pair_batch_args` (preference pairs, instead of the mask and branch flags): --batch_size --pair_layout;
* `add_branch_args`: --batch_size --batch_by_samples --branches_per_sample, --max/--min_branches_per_sample
  (max 0 = fixed mode), --val_[min_|max_]branches_per_sample, --max_total_tokens,
  --random_time_offset / --no_random_time_offset (training: --random_branch_slots);
* `add_decoding_args`: --max_new_tokens --batch_groups (sampling: --do_sample --temperature --top_p
  --top_k --repetition_penalty --stop);
* `add_source_args`: --data_path (--input, -i) --hf-dataset --hf-subset --hf-split --text-column
  --max-samples; `add_data_args`: the source plus --chunk-length (text) or --format (conversations),
  --offline --max_seq_len --num_workers (training: --val_samples --val_interval[_samples|_tokens]
  --strict_data);
* `add_model_source_args`: --model_path --hf_base_model (--base_model) --lora_path --lora_rank
  --tokenizer (--tokenizer_path); `add_lora_train_args`: --lora_name --lora_rank --lora_alpha --lora_dropout
  --lora_target_modules (the adapter a LoRA front trains);
* `add_runtime_args`: --device --dtype --seed (distributed: --ddp --local_rank);
* `add_output_args`: --out_path (--output, -o, --out), THE output file; --out_dir, the output folder;
* serving: `add_server_args` (--host --port --api_key --log_level), `add_server_limit_args` (--max_body_bytes
  --max_prompt_tokens --max_tokens_limit --max_n --max_concurrent_requests --max_running_requests),
  `add_api_client_args` (--base_url/--api_base --api_key --model_name), `add_stream_arg`; the key defaults to
  $PARALLELMIND_API_KEY (a key on the command line is visible to every user of the machine);
* `add_train_args`: --epochs --accumulation_steps --learning_rate --min_lr_ratio --warmup_iters
  --weight_decay --grad_clip --max_steps --stop_after_steps --log_interval --save_interval --resume
  --overwrite --resume_override --init_weight (--model_path) --use_wandb --wandb_project --wandb_run_name;
* `add_minimind_train_args`: the whole set of a MiniMind training front.

Every long flag also works with `-` for `_` and back; the seeds' spellings are the declared ones.
Model and 2D-RoPE flags default to None so "given" is told from "default" (a checkpoint's own config
wins; a contradicting flag is an error). A flag that would be ignored (`--min_branches_per_sample`
without `--max_branches_per_sample`, `--hf-dataset` with `--data_path`, sampling flags without
`--do_sample`, ...) is refused. Benchmarks: `evaluation.benchmarking.add_benchmark_args`. A future
front, e.g. HF LoRA training, is:

    p = make_parser(__doc__, "train_hf_lora")
    add_model_source_args(p, checkpoint=False)          # --base_model, --lora_path, --tokenizer_path
    add_rope_args(p); add_mask_args(p); add_branch_args(p, default_branches=8, batch_size=16)
    add_data_args(p, default_data="dataset/sft_512.jsonl", kind="conversations", training=True)
    add_runtime_args(p, seed=1337, distributed=True); add_output_args(p, out_dir="out")
    add_train_args(p, epochs=1, lr=1e-4, wandb_project="MiniMind-HF-LoRA")
"""

from __future__ import annotations

from trainer.args.data import *  # noqa: F403
from trainer.args.fronts import *  # noqa: F403
from trainer.args.groups import *  # noqa: F403
from trainer.args.serving import *  # noqa: F403
from trainer.cli import (  # the value types and path checks, re-exported for the entry points
    ArgParser,  # noqa: F401
    BoolFlag,  # noqa: F401
    UsageError,  # noqa: F401
    check_input_file,  # noqa: F401
    check_local_or_hub,  # noqa: F401
    check_model_path,  # noqa: F401
    check_not_resume_state,  # noqa: F401
    check_writable_dir,  # noqa: F401
    check_writable_file,  # noqa: F401
    device_name,  # noqa: F401
    dtype_name,  # noqa: F401
    http_url,  # noqa: F401
    int_list,  # noqa: F401
    nonneg_float,  # noqa: F401
    nonneg_int,  # noqa: F401
    port_number,  # noqa: F401
    positive_float,  # noqa: F401
    positive_int,  # noqa: F401
    probability,  # noqa: F401
    ratio,  # noqa: F401
    str2bool,  # noqa: F401
)
