"""Command-line flags shared by every entry point, each declared once, in groups.

An entry point is `build_parser()` = `trainer.cli.make_parser(__doc__, name)` plus a few `add_*_args(p)`
calls. Every group also registers its checks, which run right after parsing (before torch, models or
data are loaded) and stop with one line naming the flag(s). Torch-free on purpose. The groups:

* `add_model_shape_args`: --hidden_size --num_hidden_layers --num_attention_heads --num_key_value_heads
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

import argparse
import os
from pathlib import Path

from model.device import DTYPE_ALIASES, DTYPE_NAMES
from parallel.names import ALIGNMENTS, MASK_MODES, PAIR_LAYOUTS, PE_TYPES, ROPE_2D_SCHEMES
from trainer.cli import (  # the value types and path checks are re-exported for the entry points
    ArgParser,
    BoolFlag,
    UsageError,
    check_input_file,
    check_local_or_hub,
    check_model_path,
    check_not_resume_state,
    check_writable_dir,
    check_writable_file,
    device_name,
    dtype_name,
    http_url,
    int_list,
    nonneg_float,
    nonneg_int,
    port_number,
    positive_float,
    positive_int,
    probability,
    ratio,
    str2bool,
)

# every model flag with its default (None: derived); the MiniMind stage builds its config from these
MODEL_DEFAULTS = dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=2,
                      use_moe=False, pe="rope", rope_2d_ratio=0.5, rope_2d_scheme="additive", branch_stride=None,
                      fpe_theta=1e4, fpe_max_positions=512, fpe_learnable=False)


# --- model shape and 2D RoPE ---------------------------------------------------------------------------

def add_model_shape_args(p: ArgParser, *, training: bool = False) -> None:
    g = p.add_argument_group("model shape (a checkpoint's own config wins; a contradicting flag is an error)")
    g.add_argument("--hidden_size", type=positive_int, default=None, help="default 512")
    g.add_argument("--num_hidden_layers", type=positive_int, default=None, help="default 8")
    g.add_argument("--num_attention_heads", type=positive_int, default=None, help="default 8")
    g.add_argument("--num_key_value_heads", type=positive_int, default=None, help="default 2")
    g.add_argument("--use_moe", type=str2bool, nargs="?", const=True, default=None,
                   help="mixture of experts (4 routed + 1 shared, top-2); `--use_moe` or `--use_moe false`")
    if training:
        g.add_argument("--use_flex_attention", action="store_true", help="FlexAttention BlockMask on CUDA")
        add_gradient_checkpointing_arg(g)
    p.add_check(_check_heads)


def add_gradient_checkpointing_arg(g) -> None:
    g.add_argument("--gradient_checkpointing", action="store_true", help="recompute activations in backward")


def _check_heads(args) -> None:
    h, kv = args.num_attention_heads, args.num_key_value_heads
    if h is not None and kv is not None and h % kv:
        raise UsageError(f"--num_attention_heads {h} must be a multiple of --num_key_value_heads {kv}")
    if h is not None and args.hidden_size is not None and args.hidden_size % h:
        raise UsageError(f"--hidden_size {args.hidden_size} must be a multiple of --num_attention_heads {h}")


def add_rope_args(p: ArgParser, *, training: bool = False, prefix_sharing: bool = False, stride: bool = True,
                  schemes: tuple[str, ...] = ROPE_2D_SCHEMES, ratio_default: float | None = None,
                  patch_rope: bool = False, pe: bool = True) -> None:
    """`prefix_sharing`: accept `--branch_stride 0` (every branch at coordinate 0; generation only).

    `stride=False` (no --pe / --branch_stride) and `schemes` narrow the group for a tool that patches a
    Hugging Face model itself; `ratio_default` is then its ratio. `pe=False` drops --pe (Hugging Face
    models always use 2D RoPE). `patch_rope`: `--patch_rope` / `--no_patch_rope` (a Hugging Face model
    with 2D RoPE, the default, or its own rotary module; None when neither is given, so a setting saved
    with an adapter decides).
    """
    g = p.add_argument_group("2D RoPE (a checkpoint's own settings win; a contradicting flag is an error)")
    if patch_rope:
        g.add_argument("--patch_rope", action=BoolFlag, default=None,
                       help="Hugging Face models: 2D RoPE (default; an adapter's saved setting decides when neither "
                            "is given); --no_patch_rope keeps the model's own rotary module (plain 1D positions)")
    if stride and pe:
        g.add_argument("--pe", choices=PE_TYPES, default=None, help="2D RoPE (default) or Fourier branch embedding")
    g.add_argument("--rope_2d_ratio", type=ratio, default=ratio_default,
                   help="share of rotary pairs that carry the branch coordinate"
                        + (" (default 0.5)" if ratio_default is None else ""))
    g.add_argument("--rope_2d_scheme", choices=schemes, default=None if len(schemes) > 1 else schemes[0],
                   help="additive (default: one branch == the plain model)" + (" or reference" if len(schemes) > 1
                                                                                else ""))
    if stride:
        g.add_argument("--branch_stride", "--stride", dest="branch_stride",
                       type=nonneg_int if prefix_sharing else positive_int, default=None,
                       help="branch coordinate step (default 128 for rope, 1 for fpe)"
                            + ("; 0 = prefix sharing (every branch continues the main at coordinate 0, --mask "
                               "isolated)" if prefix_sharing else ""))
    if training:
        g.add_argument("--fpe_theta", type=positive_float, default=None,
                       help="pe=fpe: base of the sinusoid (default 1e4)")
        g.add_argument("--fpe_max_positions", type=positive_int, default=None, help="pe=fpe: table size (default 512)")
        g.add_argument("--fpe_learnable", type=str2bool, nargs="?", const=True, default=None,
                       help="pe=fpe: train the embedding table (default false)")
    if prefix_sharing:
        p.add_check(_check_prefix_sharing)


def _check_prefix_sharing(args) -> None:
    if args.branch_stride == 0 and getattr(args, "mask_mode", "isolated") is None:
        args.mask_mode = "isolated"  # a tool whose mask defaults to the model's: prefix sharing is isolated
    if args.branch_stride == 0 and getattr(args, "mask_mode", "isolated") != "isolated":
        raise UsageError("--branch_stride 0 (prefix sharing) needs --mask isolated: with the columnar mask, branches "
                         "at one coordinate could not be told apart")


# --- mask and branches ---------------------------------------------------------------------------------

def add_mask_args(p: ArgParser, *, default: str | None = MASK_MODES[0]) -> None:
    """`default=None`: the mask the model was trained with (saved with it) decides when --mask is not given."""
    g = p.add_argument_group("attention and alignment")
    g.add_argument("--mask", choices=MASK_MODES, default=default, dest="mask_mode",
                   help="columnar: branches see each other's earlier tokens; isolated: own branch + main only"
                        + ("" if default else " (default: the mask the model was trained with, else columnar)"))
    g.add_argument("--align_to", choices=ALIGNMENTS, default=ALIGNMENTS[0],
                   help="left: branches start together; right: their last prompt tokens line up")


def add_batch_size_arg(g, default: int, help: str) -> None:
    g.add_argument("--batch_size", type=positive_int, default=default, help=help)


# what the engine reads about grouping, for a stage whose samples are fixed pairs (no branch flags)
PAIR_BATCH_DEFAULTS = dict(batch_by_samples=True, branches_per_sample=2, min_branches_per_sample=1,
                           max_branches_per_sample=None, val_branches_per_sample=None, val_min_branches_per_sample=None,
                           val_max_branches_per_sample=None, max_total_tokens=0, random_time_offset=False,
                           random_branch_slots=0, align_to="left", mask_mode=None)


def add_pair_batch_args(p: ArgParser, *, batch_size: int) -> None:
    """Batches of preference pairs: `--batch_size` pairs per batch and `--pair_layout` (parallel_data.preference).

    Each pair is one sample (its prompt once, then both responses as isolated branches at coordinate 0),
    so the branch-grouping, alignment and mask flags do not apply; the checkpoint keeps its own mask rule.
    """
    g = p.add_argument_group("preference pairs")
    add_batch_size_arg(g, batch_size, "preference pairs per batch")
    g.add_argument("--pair_layout", choices=PAIR_LAYOUTS, default=PAIR_LAYOUTS[0],
                   help="shared: the prompt once, then both responses (default); separate: two whole sequences")
    p.set_defaults(**PAIR_BATCH_DEFAULTS)


def add_branch_args(p: ArgParser, *, default_branches: int, batch_size: int, training: bool = True,
                    inference: bool = False, random_time_offset: bool | None = None) -> None:
    """How texts are grouped into samples of branches, and samples into batches.

    Fixed mode: `--branches_per_sample N`. Dynamic mode: `--max_branches_per_sample M` (with
    `--min_branches_per_sample`, default 1): a seeded random count in [min, max] per sample;
    `--max_branches_per_sample 0` means fixed mode (seed 002). The `--val_*` flags set the branch
    counts of validation / evaluation the same way (default: those of training). `inference=True`:
    only the grouping and batch flags (batch inference has no validation, token cap or time offsets).
    """
    g = p.add_argument_group("branches and batches")
    add_batch_size_arg(g, batch_size, "texts per batch (samples with --batch_by_samples)")
    g.add_argument("--batch_by_samples", action="store_true", help="batch_size counts samples, not texts")
    add_branches_per_sample_arg(g, None, f"fixed mode: branches per sample (default {default_branches})")
    g.add_argument("--max_branches_per_sample", type=nonneg_int, default=None,
                   help="dynamic mode: a seeded random count in [min, max] per sample (0 = fixed mode)")
    g.add_argument("--min_branches_per_sample", type=positive_int, default=None,
                   help="dynamic mode: smallest count (default 1)")
    if inference:
        p.add_check(lambda a: _check_branches(a, default_branches))
        return
    g.add_argument("--val_branches_per_sample", type=positive_int, default=None,
                   help="validation / evaluation: a fixed count")
    g.add_argument("--val_max_branches_per_sample", type=nonneg_int, default=None,
                   help="validation / evaluation: dynamic mode's largest count")
    g.add_argument("--val_min_branches_per_sample", type=positive_int, default=None,
                   help="validation / evaluation: smallest count (alone: a fixed count)")
    g.add_argument("--max_total_tokens", type=nonneg_int, default=0,
                   help="cap on tokens per sample (0 = off); longer samples lose every branch's tail, counted")
    g.add_argument("--random_time_offset", action=BoolFlag,
                   default=training if random_time_offset is None else random_time_offset,
                   help="seeded random start offset per branch (training samples only)")
    if training:
        g.add_argument("--random_branch_slots", type=nonneg_int, default=0,
                       help="train on random sorted coordinate slots out of this many (0 = off): lets a model trained "
                            "with few branches per sample run with up to this many at inference")
    p.add_check(lambda a: _check_branches(a, default_branches))


def add_branches_per_sample_arg(g, default: int | None, help: str) -> None:
    g.add_argument("--branches_per_sample", type=positive_int, default=default, help=help)


def _check_branches(args, default_branches: int) -> None:
    if args.max_branches_per_sample == 0:  # seed 002: 0 = fixed mode
        if args.min_branches_per_sample is not None:
            raise UsageError("--min_branches_per_sample goes with dynamic mode, but --max_branches_per_sample 0 "
                             "is fixed mode")
        args.max_branches_per_sample = None
    if getattr(args, "val_max_branches_per_sample", None) == 0:
        args.val_max_branches_per_sample = None
    lo, hi = args.min_branches_per_sample, args.max_branches_per_sample
    if hi is None:
        if lo is not None:
            raise UsageError(f"--min_branches_per_sample {lo} needs --max_branches_per_sample (dynamic mode); in "
                             "fixed mode every sample has --branches_per_sample branches")
        args.branches_per_sample = args.branches_per_sample or default_branches
        args.min_branches_per_sample = 1  # unused in fixed mode; an int for the grouping code
    else:
        if args.branches_per_sample is not None:
            raise UsageError(f"--branches_per_sample {args.branches_per_sample} (fixed mode) and "
                             f"--max_branches_per_sample {hi} (dynamic mode) exclude each other; give one")
        lo = args.min_branches_per_sample = 1 if lo is None else lo
        if lo > hi:
            raise UsageError(f"--min_branches_per_sample {lo} is more than --max_branches_per_sample {hi}")
        args.branches_per_sample = hi  # the largest sample: batch sizes counted in texts use it
    if not hasattr(args, "val_branches_per_sample"):  # inference: no validation flags
        return
    vlo, vhi = args.val_min_branches_per_sample, args.val_max_branches_per_sample
    if args.val_branches_per_sample is not None and (vlo is not None or vhi is not None):
        raise UsageError("--val_branches_per_sample (a fixed count) and --val_min/--val_max_branches_per_sample "
                         "exclude each other; give one")
    if vlo is not None and vhi is not None and vlo > vhi:
        raise UsageError(f"--val_min_branches_per_sample {vlo} is more than --val_max_branches_per_sample {vhi}")
    val = eval_branch_setting(args)
    if "min_branches" in val and val["min_branches"] > val["max_branches"]:
        raise UsageError(f"validation branch counts {val['min_branches']}..{val['max_branches']} are an empty range "
                         "(--val_min/--val_max_branches_per_sample, else --min/--max_branches_per_sample)")
    slots = getattr(args, "random_branch_slots", 0)
    most = args.branches_per_sample  # the largest sample in either mode
    if slots and slots < most:
        raise UsageError(f"--random_branch_slots {slots} must be at least the largest number of branches per "
                         f"sample ({most})")


def eval_branch_setting(args) -> dict:
    """Branch counts of validation / evaluation: {"branches": n} or {"min_branches", "max_branches"}."""
    if args.val_branches_per_sample:
        return {"branches": args.val_branches_per_sample}
    lo = args.val_min_branches_per_sample or (args.min_branches_per_sample if args.max_branches_per_sample else None)
    hi = args.val_max_branches_per_sample or args.max_branches_per_sample
    if hi is None and lo is None:
        return {"branches": args.branches_per_sample}
    lo, hi = lo or 1, hi or lo
    return {"branches": lo} if lo == hi else {"min_branches": lo, "max_branches": hi}


# --- decoding ------------------------------------------------------------------------------------------

SAMPLING_DEFAULTS = dict(temperature=0.85, top_p=0.85, top_k=0)


def add_decoding_args(p: ArgParser, *, max_new_tokens: int, batch_groups: int | None, sampling: bool = True,
                      max_new_tokens_help: str = "new tokens per branch at most") -> None:
    """`batch_groups=None`: no --batch_groups (a tool that sends its requests one by one)."""
    g = p.add_argument_group("decoding")
    add_max_new_tokens_arg(g, max_new_tokens, help=max_new_tokens_help)
    if batch_groups is not None:
        g.add_argument("--batch_groups", type=positive_int, default=batch_groups, help="groups decoded together")
    if not sampling:
        return
    g.add_argument("--do_sample", action="store_true", help="sample (default: greedy)")
    add_sampling_args(g, None, f"with --do_sample (default {SAMPLING_DEFAULTS['temperature']})",
                      f"with --do_sample (default {SAMPLING_DEFAULTS['top_p']})", "with --do_sample (default 0: off)")
    g.add_argument("--repetition_penalty", type=positive_float, default=1.0,
                   help="CTRL penalty on seen tokens (1 = off)")
    g.add_argument("--stop", nargs="*", default=[], help="stop strings")
    p.add_check(_check_sampling)


def add_sampling_args(g, default: dict | None, temperature_help: str, top_p_help: str, top_k_help: str) -> None:
    """--temperature --top_p --top_k; `default` None: unset (the decoding group fills them in with --do_sample)."""
    d = default or {}
    g.add_argument("--temperature", type=nonneg_float, default=d.get("temperature"), help=temperature_help)
    g.add_argument("--top_p", type=probability, default=d.get("top_p"), help=top_p_help)
    g.add_argument("--top_k", type=nonneg_int, default=d.get("top_k"), help=top_k_help)


def add_num_generations_arg(g, default: int, help: str) -> None:
    """`--num_generations`: answers per prompt (G) of a GRPO group (the front, its benchmark)."""
    g.add_argument("--num_generations", type=positive_int, default=default, help=help)


def add_max_new_tokens_arg(g, default: int, minimum: int = 0, help: str = "new tokens per branch at most") -> None:
    g.add_argument("--max_new_tokens", type=positive_int if minimum else nonneg_int, default=default, help=help)


def add_epochs_arg(g, default: int, help: str = "passes over the data") -> None:
    g.add_argument("--epochs", type=positive_int, default=default, help=help)


def add_learning_rate_arg(g, default: float, help: str = "peak learning rate (AdamW)") -> None:
    g.add_argument("--learning_rate", type=nonneg_float, default=default, help=help)


def add_prompts_arg(g, *, default: list[str] | None = None, nargs: str = "*", help: str = "prompts") -> None:
    g.add_argument("--prompts", nargs=nargs, default=default, help=help)


def add_conversation_args(g, *, system_help: str, history_help: str) -> None:
    """`--system` (a system message opening the conversation) and `--history_turns` (earlier exchanges kept, 0 = all)."""
    g.add_argument("--system", default=None, help=system_help)
    g.add_argument("--history_turns", type=nonneg_int, default=0, help=history_help)


def add_chat_template_arg(g, *, default: bool | None, help: str) -> None:
    """`--chat_template` / `--no_chat_template`: wrap each prompt as a user turn of the tokenizer's chat template."""
    g.add_argument("--chat_template", action=BoolFlag, default=default, help=help)


def _check_sampling(args) -> None:
    given = [f"--{k}" for k in SAMPLING_DEFAULTS if getattr(args, k) is not None]
    if given and not args.do_sample:
        raise UsageError(f"{', '.join(given)} only apply when sampling; add --do_sample (greedy decoding is the "
                         "default)")
    for k, v in SAMPLING_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)


# --- data ----------------------------------------------------------------------------------------------

def add_source_args(p: ArgParser, *, default_data: str | None = None, hf: bool = True, text_column: bool = True,
                    max_samples: bool = True, data_aliases: tuple[str, ...] = (),
                    max_samples_help: str = "use at most this many records (0 = all)",
                    max_samples_aliases: tuple[str, ...] = (), text_column_aliases: tuple[str, ...] = (),
                    text_column_default: str | None = None, required: bool = False,
                    data_help: str = "local JSONL file", data_flag: str = "--data_path") -> argparse._ArgumentGroup:
    """Where records come from: `--data_path` (alias `--input`) or a Hugging Face dataset, not both.

    `default_data` is used when neither is given; `required`: one of them must be given (otherwise the
    data may be absent); `data_flag` is the spelling messages use (the converters document `--input`).
    """
    g = p.add_argument_group("data source")
    g.add_argument("--data_path", "--input", "-i", *data_aliases, dest="data_path", default=None,
                   help=data_help + (f" (default {default_data})" if default_data else ""))
    if hf:
        g.add_argument("--hf-dataset", dest="hf_dataset", default=None,
                       help="Hugging Face dataset: a Hub name (streamed) or a local file / folder read with `datasets`")
        g.add_argument("--hf-subset", dest="hf_subset", default=None, help="dataset configuration (with --hf-dataset)")
        g.add_argument("--hf-split", dest="hf_split", default=None, help="split (with --hf-dataset; default train)")
    if text_column:
        g.add_argument("--text-column", *text_column_aliases, dest="text_column", default=text_column_default,
                       help="field / column holding the text (default: auto-detected)")
    if max_samples:
        g.add_argument("--max-samples", *max_samples_aliases, dest="max_samples", type=nonneg_int, default=None,
                       help=max_samples_help)
    p.add_check(lambda a: _check_source(a, default_data, required, data_flag))
    p.add_check(lambda a: _check_source_path(a, default_data, data_flag), paths=True)
    return g


def _check_source(args, default_data: str | None, required: bool, flag: str) -> None:
    hf = getattr(args, "hf_dataset", None)
    if hf is not None and args.data_path is not None:
        raise UsageError(f"{flag} {args.data_path} and --hf-dataset {hf} both name the data; give one")
    for name in ("hf_subset", "hf_split"):
        if getattr(args, name, None) is not None and hf is None:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)} goes with --hf-dataset, which was "
                             "not given")
    if hf is not None and args.hf_split is None:
        args.hf_split = "train"
    if getattr(args, "max_samples", None) == 0:
        args.max_samples = None
    if hf is None and args.data_path is None:
        if default_data is not None:
            args.data_path = default_data
        elif required:
            raise UsageError(f"give the data: {flag} FILE" + (" or --hf-dataset NAME" if hasattr(args, "hf_dataset")
                                                              else ""))


def _check_source_path(args, default_data: str | None, flag: str) -> None:
    if args.data_path is None:
        return
    if args.data_path == default_data and not Path(args.data_path).exists():
        build = "build the bundled demo data with `python scripts/build_demo_data.py`, or " if "demo" in str(
            default_data) else ""
        raise UsageError(f"{flag} defaults to {args.data_path}, which does not exist ({build}pass {flag})")
    check_input_file(args.data_path, flag)


def add_data_args(p: ArgParser, *, default_data: str | None, kind: str = "text", training: bool = False,
                  workers: int = 1, required: bool = False) -> None:
    """Training / evaluation data. `kind`: "text" (pretraining texts), "conversations" (SFT), "either"
    (chosen per run by `--data_mode`, see `add_data_mode_args`), "pairs" (chosen / rejected preference
    records) or "prompts" (RL prompts with answers); pairs and prompts have no text column, packing or
    conversation format to choose. `required`: with no default, the data must be given."""
    if kind not in ("text", "conversations", "either", "pairs", "prompts"):
        raise ValueError(f"kind must be 'text', 'conversations', 'either', 'pairs' or 'prompts', got {kind!r}")
    g = add_source_args(p, default_data=default_data, text_column=kind not in ("pairs", "prompts"), required=required,
                        max_samples_help="use at most this many records (chunks when packing; 0 = all)")
    if kind in ("pairs", "prompts"):
        p.set_defaults(text_column=None, chunk_length=None, format="auto")
    else:
        g.add_argument("--chunk-length", dest="chunk_length", type=positive_int, default=None,
                       help="pack token ids into exact pieces of this many tokens (text data)")
    if kind in ("conversations", "either"):
        add_format_arg(g)
    if kind == "conversations":
        p.add_check(_check_conversation_data)
    g.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub")
    g.add_argument("--max_seq_len", type=positive_int, default=512,
                   help="tokens per branch: longer pretraining texts are split, longer conversations cut (counted); "
                        "RL prompts longer than this are errors")
    g.add_argument("--num_workers", type=nonneg_int, default=workers, help="DataLoader workers per rank")
    if training:
        g.add_argument("--val_samples", type=nonneg_int, default=0,
                       help="held-out records (seeded, same on every rank)")
        g.add_argument("--val_interval", type=nonneg_int, default=0, help="validate every N optimizer steps")
        g.add_argument("--val_interval_samples", type=nonneg_int, default=0, help="validate every N samples")
        g.add_argument("--val_interval_tokens", type=nonneg_int, default=0, help="validate every N target tokens")
        g.add_argument("--strict_data", action="store_true",
                       help="records that give no target token, or are cut at max_seq_len, are errors (default: "
                            "counted and reported with file and line)")
        p.add_check(_check_validation)


def _check_conversation_data(args) -> None:
    if args.text_column is not None:
        raise UsageError(f"--text-column {args.text_column} picks the text field of pretraining data, but this stage "
                         "reads conversations (their layout is chosen with --format)")
    if args.chunk_length is not None:
        raise UsageError("--chunk-length (token packing) is for pretraining text; conversations are kept whole")


def add_format_arg(g) -> None:
    from parallel_data.formats import FORMATS

    g.add_argument("--format", default="auto", choices=("auto", *FORMATS),
                   help="conversation format of the records (auto: detected per record)")


DATA_MODES = ("parallel", "parallel_sft")


def add_data_mode_args(p: ArgParser, *, default_mode: str = "parallel") -> None:
    """What the records are (`--data_mode`) and where their tokenised form is cached; goes with
    `add_data_args(kind="either")`.

    parallel: pretraining-style records (`{"text"}`, `{"text", "answer_offset"}`, `{"input_ids"}`,
    grouped `{"main", "branches"}`), loss on every token after the answer offset; parallel_sft:
    conversations, loss on the assistant turns only.
    """
    g = p.add_argument_group("data mode and cache")
    g.add_argument("--data_mode", choices=DATA_MODES, default=default_mode,
                   help="parallel: text / grouped records; parallel_sft: conversations (loss on the answers only)")
    g.add_argument("--parallel_cache_dir", default=None,
                   help="keep the tokenised records and their step counts here, so a second run with the same "
                        "data, tokenizer and settings starts at once (anything changed: rebuilt)")
    g.add_argument("--rebuild_parallel_cache", action="store_true",
                   help="tokenise again even when --parallel_cache_dir holds a valid cache")
    g.add_argument("--use_streaming", action="store_true",
                   help="--hf-dataset: stream the rows instead of loading the dataset first (needs --max-samples "
                        "or --max_steps for the schedule when the dataset is an endless Hub stream)")
    p.add_check(_check_data_mode)
    p.add_check(_check_cache_dir, paths=True)


def _check_data_mode(args) -> None:
    if args.data_mode == "parallel_sft":
        _check_conversation_data(args)
    elif args.format != "auto":
        raise UsageError(f"--format {args.format} is the layout of conversations, but --data_mode parallel reads "
                         "text records (use --data_mode parallel_sft for conversations)")
    if args.rebuild_parallel_cache and not args.parallel_cache_dir:
        raise UsageError("--rebuild_parallel_cache rebuilds the cache in --parallel_cache_dir, which was not given")
    if args.parallel_cache_dir and args.chunk_length:
        raise UsageError("--parallel_cache_dir caches records one by one; --chunk-length packs tokens across "
                         "records, which is not cached (drop one of them)")
    if args.parallel_cache_dir and args.hf_dataset:
        raise UsageError("--parallel_cache_dir caches a local --data_path file; a --hf-dataset is read as a stream "
                         "(drop one of them)")
    if args.use_streaming and not args.hf_dataset:
        raise UsageError("--use_streaming goes with --hf-dataset (a local --data_path is always read in blocks)")


def _check_cache_dir(args) -> None:
    if args.parallel_cache_dir:
        check_writable_dir(args.parallel_cache_dir, "--parallel_cache_dir")


def _check_validation(args) -> None:
    given = [f"--{k}" for k in ("val_interval", "val_interval_samples", "val_interval_tokens",
                                "val_branches_per_sample", "val_min_branches_per_sample", "val_max_branches_per_sample")
             if getattr(args, k, None)]
    if given and not args.val_samples:
        raise UsageError(f"{given[0]} was given but --val_samples is 0: hold out some records to validate on")


def add_skip_bad_arg(p: ArgParser, what: str = "records") -> None:
    p.add_argument("--skip_bad", action="store_true", help=f"skip (and count) malformed {what} instead of stopping")


# --- model source --------------------------------------------------------------------------------------

def add_model_source_args(p: ArgParser, *, checkpoint: bool = True, hf: bool = True, lora: bool = True,
                          tokenizer: bool = True, hf_aliases: tuple[str, ...] = (), hf_required: bool = False) -> None:
    """Which model: `--model_path` (a .pth checkpoint or a saved folder), or `--hf_base_model` (+ LoRA);
    `--tokenizer` (default: the model's own, else the repo's model/)."""
    g = p.add_argument_group("model source")
    if checkpoint:
        add_model_path_arg(g, "model_path", "a .pth checkpoint or a saved model folder")
    if hf:
        g.add_argument("--hf_base_model", "--base_model", *hf_aliases, dest="hf_base_model", default=None,
                       required=hf_required, help="Hugging Face model folder (or Hub name)")
    if lora:
        g.add_argument("--lora_path", default=None, help="PEFT adapter folder or a model_lora .pth/.safetensors file")
        add_lora_rank_arg(g, None, "checked against the LoRA file")
    if tokenizer:
        g.add_argument("--tokenizer", "--tokenizer_path", dest="tokenizer", default=None,
                       help="tokenizer folder (default: the model's own, else the repo's model/)")
    p.add_check(_check_model_source)
    p.add_check(_check_model_source_paths, paths=True)


def add_lora_rank_arg(g, default: int | None, help: str) -> None:
    g.add_argument("--lora_rank", type=positive_int, default=default, help=help)


def add_lora_train_args(p: ArgParser, *, name: str | None = None, rank: int = 8) -> None:
    """The adapter a LoRA training front trains (model/model_lora.py): rank, alpha, dropout, target layers;
    with `name`, also `--lora_name` (the output is named after it)."""
    g = p.add_argument_group("LoRA")
    if name is not None:
        add_lora_name_arg(p, g, name, f"adapter name: the output is {{out_dir}}/lora/{{lora_name}}_{{hidden}}.pth "
                                      f"(default {name})")
    add_lora_rank_arg(g, rank, f"LoRA rank (default {rank})")
    g.add_argument("--lora_alpha", type=positive_float, default=None,
                   help="LoRA alpha: the update is scaled by alpha / rank (default: the rank, scaling 1)")
    g.add_argument("--lora_dropout", type=ratio, default=0.0, help="dropout on the LoRA input (default 0)")
    g.add_argument("--lora_target_modules", nargs="+", default=None, metavar="NAME",
                   help="Linear layers to adapt, by name or name suffix (default: every attention and MLP projection "
                        "of the decoder blocks)")


def add_lora_name_arg(p: ArgParser, g, default: str, help: str) -> None:
    """`--lora_name`: the adapter's file name (a plain name, checked)."""
    g.add_argument("--lora_name", default=default, help=help)
    p.add_check(_check_lora_name)


def _check_lora_name(args) -> None:
    name = args.lora_name
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise UsageError(f"--lora_name {name!r} must be a plain file name (no folders, not starting with '.')")


def add_model_path_arg(g, dest: str, help: str, *names: str) -> None:
    """`--model_path` (declared here only): the model to load (`dest="model_path"`), or, in a training
    front, the checkpoint to start from (`names=("--init_weight",)`, `dest="init_weight"`; seed 001)."""
    g.add_argument(*names, "--model_path", dest=dest, default=None, help=help)


def _check_model_source(args) -> None:
    model, base = getattr(args, "model_path", None), getattr(args, "hf_base_model", None)
    if model is not None and base is not None:
        raise UsageError(f"--model_path {model} and --hf_base_model {base} both name the model; give one")
    lora = getattr(args, "lora_path", None)
    if lora is not None and model is None and base is None:
        raise UsageError("--lora_path needs the model it adapts: --hf_base_model, or --model_path (a MiniMind .pth "
                         "checkpoint or a saved folder)")
    if getattr(args, "lora_rank", None) is not None and lora is None and hasattr(args, "lora_path"):
        raise UsageError("--lora_rank is checked against a LoRA file, but --lora_path was not given")


def _check_model_source_paths(args) -> None:
    model, base = getattr(args, "model_path", None), getattr(args, "hf_base_model", None)
    if model is not None:
        check_model_path(model, "--model_path")
    if base is not None:
        check_local_or_hub(base, "--hf_base_model")
    lora = getattr(args, "lora_path", None)
    if lora is not None:
        if not Path(lora).expanduser().exists():
            raise UsageError(f"--lora_path {lora} does not exist")
    if getattr(args, "tokenizer", None) is not None:
        check_local_or_hub(args.tokenizer, "--tokenizer")


# --- runtime and output --------------------------------------------------------------------------------

def add_runtime_args(p: ArgParser, *, seed: int | None = 0, dtype: bool | str = True, distributed: bool = False,
                     device: str | None = None) -> None:
    """`device`: the default --device (None: auto); `dtype`: False (no --dtype), True (default auto) or a default."""
    g = p.add_argument_group("runtime")
    g.add_argument("--device", type=device_name, default=device,
                   help="cpu, cuda, cuda:N, mps, ... or auto: cuda:<local rank> if CUDA is available, else cpu")
    if dtype:
        g.add_argument("--dtype", type=dtype_name, default=dtype if isinstance(dtype, str) else "auto",
                       help=f"{', '.join(DTYPE_NAMES)} (or {', '.join(DTYPE_ALIASES)}); auto: bfloat16 on CUDA, "
                            "float32 on CPU")
    if seed is not None:
        add_seed_arg(g, seed)
    if distributed:
        g.add_argument("--ddp", action="store_true", help="DDP (launch with torchrun; detected automatically)")
        g.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=-1,
                       help="set by older launchers; torchrun's LOCAL_RANK wins")
    p.add_check(_check_device, paths=True)  # after the flag checks: it may import torch


def add_seed_arg(g, default: int, help: str = "random seed (data order, sampling, initial weights)") -> None:
    g.add_argument("--seed", type=int, default=default, help=help)


def _check_device(args) -> None:
    if args.device not in (None, "auto", "cpu"):  # only an accelerator needs torch to be checked
        from model.device import resolve_device

        try:
            resolve_device(args.device)
        except ValueError as e:
            raise UsageError(str(e)) from None


def add_output_args(p: ArgParser, *, out_path: bool = False, required: bool = False, default: str | None = None,
                    out_path_help: str = "output file", out_dir: str | None = None,
                    out_dir_help: str = "output folder", out_dir_is_output: bool = True,
                    out_flag: str = "--out_path") -> None:
    """`--out_path` (aliases `--output`, `-o`, `--out`): THE output file; `--out_dir`: the output folder.

    Both are checked for writability at parse time, and the output file must not be an input.
    `out_dir_is_output=False` for a folder that is only read (parallel_generate's default model);
    `out_flag` is the spelling messages use (the converters document `--output`).
    """
    g = p.add_argument_group("output")
    if out_path:
        g.add_argument("--out_path", "--output", "-o", "--out", dest="out_path", required=required, default=default,
                       help=out_path_help)
    if out_dir is not None:
        g.add_argument("--out_dir", default=out_dir, help=out_dir_help)
    p.add_check(lambda a: _check_output(a, out_dir is not None and out_dir_is_output, out_flag), paths=True)


def _check_output(args, check_dir: bool, flag: str) -> None:
    path = getattr(args, "out_path", None)
    if path is not None:
        check_writable_file(path, flag)
        src = getattr(args, "data_path", None)
        if src is not None and Path(src).expanduser().resolve() == Path(path).expanduser().resolve():
            raise UsageError(f"{flag} {path} is the input file; pass another {flag}")
    if check_dir:
        check_writable_dir(args.out_dir, "--out_dir")


# --- serving (scripts/serve_openai_api.py, chat_openai_api.py, web_demo.py, bench_serve.py) ----------------

API_KEY_ENV = "PARALLELMIND_API_KEY"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_server_args(p: ArgParser, *, port: int, api_key: bool = True) -> None:
    """--host (default 127.0.0.1: this machine only) --port, and --api_key: the key clients must send."""
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network "
                        "interface, so set --api_key)")
    g.add_argument("--port", type=port_number, default=port, help="TCP port")
    if api_key:
        add_api_key_arg(g, f"clients must send 'Authorization: Bearer KEY' on every route but /health (default: "
                           f"${API_KEY_ENV}; unset: no authentication)")
        p.add_check(_check_api_key)
    g.add_argument("--log_level", choices=("critical", "error", "warning", "info", "debug"), default="info",
                   help="server log level (info: one line per request)")


def add_threads_arg(g, help: str = "torch CPU threads (0 = torch's default)") -> None:
    g.add_argument("--threads", type=nonneg_int, default=0, help=help)


def add_api_key_arg(g, help: str) -> None:
    g.add_argument("--api_key", default=None, help=help)


def add_server_limit_args(p: ArgParser) -> None:
    """What one request may ask for, and how many run at once; each refusal is a 4xx with an OpenAI error body."""
    g = p.add_argument_group("limits (each refusal is a 4xx with an OpenAI error body)")
    g.add_argument("--max_body_bytes", type=positive_int, default=1 << 20, help="request body size (413 above)")
    g.add_argument("--max_prompt_tokens", type=positive_int, default=4096, help="prompt tokens per request (400 above)")
    g.add_argument("--max_tokens_limit", type=positive_int, default=2048,
                   help="the largest max_tokens a request may ask for (400 above)")
    g.add_argument("--max_n", type=positive_int, default=32,
                   help="choices per request: n x prompts, or the branches of a parallel request (400 above)")
    g.add_argument("--max_concurrent_requests", type=positive_int, default=64,
                   help="generation requests in progress at once (429 above)")
    g.add_argument("--max_running_requests", type=nonneg_int, default=0,
                   help="requests decoded together in one batch (0 = all of them; the rest wait their turn; 1 = "
                        "one request at a time)")


def add_api_client_args(p: ArgParser, *, model: bool = True) -> None:
    """Where an OpenAI-compatible server is: --base_url, --api_key (default $PARALLELMIND_API_KEY), --model_name."""
    g = p.add_argument_group("server to talk to")
    g.add_argument("--base_url", "--api_base", dest="base_url", type=http_url, default="http://127.0.0.1:6006/v1",
                   help="the server's /v1 URL")
    add_api_key_arg(g, f"the server's API key (default: ${API_KEY_ENV})")
    if model:
        add_model_name_arg(g, "model to ask for (default: the server's first model)")
    p.add_check(_check_api_key)


def add_stream_arg(g, default: bool, help: str) -> None:
    """--stream / --no_stream: server-sent events instead of one JSON answer."""
    g.add_argument("--stream", action=BoolFlag, default=default, help=help)


def add_model_name_arg(g, help: str) -> None:
    g.add_argument("--model_name", default=None, help=help)


def _check_api_key(args) -> None:
    if args.api_key is None:
        args.api_key = os.environ.get(API_KEY_ENV) or None
    if args.api_key is not None and not args.api_key.strip():
        raise UsageError("--api_key is empty; give a key, or leave the flag out for no authentication")


# --- presets ---------------------------------------------------------------------------------------------

def add_minimind_train_args(p: ArgParser, *, default_data: str, kind: str, default_branches: int, batch_size: int,
                            epochs: int, lr: float, wandb_project: str) -> None:
    """Every flag of a MiniMind training front (pretrain, SFT, and the post-training stages on the engine).

    kind="pairs" (DPO, reward model): pair batches (`add_pair_batch_args`) instead of the mask and
    branch-grouping flags."""
    add_model_shape_args(p, training=True)
    add_rope_args(p, training=True)
    if kind == "pairs":
        add_pair_batch_args(p, batch_size=batch_size)
    else:
        add_mask_args(p)
        add_branch_args(p, default_branches=default_branches, batch_size=batch_size)
    add_data_args(p, default_data=default_data, kind=kind, training=True)
    add_model_source_args(p, checkpoint=False, hf=False, lora=False)
    add_runtime_args(p, seed=1337, distributed=True)
    add_output_args(p, out_dir="out", out_dir_help="checkpoints, resume state and metrics go here")
    add_train_args(p, epochs=epochs, lr=lr, wandb_project=wandb_project)


def add_patch_rope_arg(g, help: str = "replace the model's rotary module with 2D RoPE (--no_patch_rope: keep the "
                                          "plain model and 1D positions)") -> None:
    """`--patch_rope` (default) / `--no_patch_rope`."""
    g.add_argument("--patch_rope", action=BoolFlag, default=True, help=help)


def add_hf_model_args(p: ArgParser, *, lora: bool, lora_name: str = "hf_lora", model_tag: str = "hf",
                      fsdp: bool = True) -> None:
    """A Hugging Face model to fine-tune: 2D-RoPE patching, LoRA (when `lora`), output naming, FSDP."""
    g = p.add_argument_group("Hugging Face model")
    add_patch_rope_arg(g)
    g.add_argument("--model_tag", default=model_tag,
                   help="part of the output names" + (" ({lora_name}_{model_tag}...)" if lora else
                                                      " (full_{model_tag}...)"))
    if lora:
        add_lora_rank_arg(g, None, "LoRA rank (default 8; with --load_lora, the adapter's own)")
        add_lora_name_arg(p, g, lora_name, "adapter name: out_dir/lora/{lora_name}_{model_tag}...")
        g.add_argument("--load_lora", default=None,
                       help="continue from this adapter (a .pth file or a PEFT folder written by a LoRA run)")
        p.add_check(_check_load_lora, paths=True)
    if fsdp:
        g.add_argument("--fsdp", action="store_true",
                       help="shard parameters, gradients and optimizer state over the ranks (FSDP2 fully_shard; "
                            "launch with torchrun); checkpoints are gathered whole")
        p.add_check(_check_fsdp)


def _check_fsdp(args) -> None:
    if args.fsdp and int(os.environ.get("WORLD_SIZE", "1") or 1) < 2:
        raise UsageError("--fsdp shards the model over the ranks of a torchrun launch, but this is a single process "
                         "(launch with: torchrun --nproc_per_node N ... --ddp --fsdp)")


def _check_load_lora(args) -> None:
    if args.load_lora is not None and not Path(args.load_lora).expanduser().exists():
        raise UsageError(f"--load_lora {args.load_lora} does not exist")


def add_hf_train_args(p: ArgParser, *, lora: bool, data_mode: str = "parallel", lora_name: str = "hf_lora",
                      model_tag: str = "hf", epochs: int, batch_size: int = 16, lr: float, wandb_project: str) -> None:
    """Every flag of a Hugging Face fine-tuning front (trainer/train_hf_lora.py, train_hf_full.py,
    train_hf_parallel_lora.py): the seeds' flags, with their defaults."""
    add_model_source_args(p, checkpoint=False, lora=False, hf_required=True)
    add_hf_model_args(p, lora=lora, lora_name=lora_name, model_tag=model_tag)
    add_rope_args(p, pe=False)
    add_mask_args(p)
    add_branch_args(p, default_branches=8, batch_size=batch_size, random_time_offset=False)
    add_data_args(p, default_data=None, kind="either", training=True, required=True)
    add_data_mode_args(p, default_mode=data_mode)
    add_runtime_args(p, seed=1337, distributed=True)
    add_output_args(p, out_dir="out", out_dir_help="lora/ or full/ (checkpoints, resume state, metrics) go here")
    add_train_args(p, epochs=epochs, lr=lr, wandb_project=wandb_project, init_weight=False, log_interval=50,
                   save_interval=500)
    add_gradient_checkpointing_arg(p.add_argument_group("memory"))


# --- single flags shared by a few tools -----------------------------------------------------------------

def add_log_interval_arg(g, default: int, help: str) -> None:
    g.add_argument("--log_interval", type=positive_int, default=default, help=help)


def add_beta_arg(g, default: float, help: str, zero_ok: bool = False) -> None:
    """`--beta`: the KL coefficient of a preference or RL objective (DPO; GRPO, where 0 turns the KL term off)."""
    g.add_argument("--beta", type=nonneg_float if zero_ok else positive_float, default=default, help=help)


def add_loss_type_arg(g, choices: tuple[str, ...], help: str) -> None:
    """`--loss_type`: the variant of a stage's objective (default: the first choice)."""
    g.add_argument("--loss_type", choices=choices, default=choices[0], help=f"{help} (default {choices[0]})")


def add_marker_args(g, help_start: str, help_end: str) -> None:
    """The ChatML segment markers of the text converters."""
    g.add_argument("--start_token", default="<|im_start|>", help=help_start)
    g.add_argument("--end_token", default="<|im_end|>", help=help_end)


def add_overwrite_arg(g, help: str) -> None:
    """`--overwrite`: replace an existing output that would otherwise be kept or refused."""
    g.add_argument("--overwrite", action="store_true", help=help)


def add_steps_arg(g, default: int | None, help: str) -> None:
    g.add_argument("--steps", type=positive_int, default=default, help=help)


def add_branch_counts_arg(g, *, default: list[int] | None, help: str = "comma-separated branch counts, e.g. 1,2,4,8 "
                                                                         "(one measurement each)") -> None:
    """`--branches 1,2,4` (alias `--eval_branches`): the branch counts an evaluation or benchmark runs at."""
    g.add_argument("--branches", "--eval_branches", dest="branches", type=int_list, default=default, help=help)


# --- training ------------------------------------------------------------------------------------------

def add_train_args(p: ArgParser, *, epochs: int, lr: float, wandb_project: str, init_weight: bool = True,
                   log_interval: int = 100, save_interval: int = 100) -> None:
    """`init_weight=False` for stages whose starting weights are named otherwise (--base_model)."""
    g = p.add_argument_group("training")
    add_epochs_arg(g, epochs)
    g.add_argument("--accumulation_steps", type=positive_int, default=1, help="micro-batches per optimizer step")
    add_learning_rate_arg(g, lr)
    g.add_argument("--min_lr_ratio", type=ratio, default=0.1, help="cosine floor as a share of the peak LR")
    g.add_argument("--warmup_iters", type=nonneg_int, default=0, help="linear warm-up optimizer steps")
    g.add_argument("--weight_decay", type=nonneg_float, default=0.01, help="AdamW weight decay (matrices only)")
    g.add_argument("--grad_clip", type=nonneg_float, default=1.0, help="max gradient norm (0 = no clipping)")
    g.add_argument("--max_steps", type=nonneg_int, default=0,
                   help="optimizer steps (0 = one pass over the data x epochs)")
    g.add_argument("--stop_after_steps", type=nonneg_int, default=0,
                   help="save and exit after this many optimizer steps of this run (the schedule is unchanged); "
                        "for preemptible or time-sliced jobs, continue with --resume")
    add_log_interval_arg(g, log_interval, "optimizer steps between log lines")
    g.add_argument("--save_interval", type=positive_int, default=save_interval,
                   help="optimizer steps between checkpoints")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint + resume state in out_dir")
    add_overwrite_arg(g, "replace this stage's checkpoint in out_dir (without it, an existing one stops the run)")
    g.add_argument("--resume_override", action="append", default=[], metavar="KEY",
                   help="with --resume: accept a changed setting (a flag name, e.g. learning_rate) or changed "
                        "training data ('data'); repeatable, each one logged")
    if init_weight:
        add_model_path_arg(g, "init_weight", "start from these weights (a .pth checkpoint); 'none' trains from scratch "
                                             "(--model_path is the same flag)", "--init_weight")
    g.add_argument("--use_wandb", action="store_true", help="log to Weights & Biases (WANDB_MODE=offline works)")
    g.add_argument("--wandb_project", default=None, help=f"W&B project (default {wandb_project})")
    g.add_argument("--wandb_run_name", default=None, help="W&B run name (default: W&B's)")
    p.add_check(lambda a: _check_wandb(a, wandb_project))
    p.add_check(_check_train, paths=True)


def _check_wandb(args, default_project: str) -> None:
    given = [f"--{k}" for k in ("wandb_project", "wandb_run_name") if getattr(args, k) is not None]
    if given and not args.use_wandb:
        raise UsageError(f"{given[0]} goes with --use_wandb, which was not given")
    args.wandb_project = args.wandb_project or default_project


def _check_train(args) -> None:
    init = getattr(args, "init_weight", None)
    if init is not None and init.lower() not in ("none", "scratch", ""):
        check_not_resume_state(init, "--init_weight")
        if Path(init).is_dir():
            raise UsageError(f"--init_weight {init} is a directory; expected a .pth checkpoint")
        if not Path(init).exists():
            raise UsageError(f"--init_weight {init} does not exist (pass a .pth checkpoint, or --init_weight none "
                             "to start from random weights)")


# --- RL stages (PPO, GRPO): prompt batches, rollouts, rewards -------------------------------------------

# what the engine reads about grouping, for a stage whose data are prompts (RL): no branch-layout flags
PROMPT_BATCH_DEFAULTS = dict(batch_by_samples=False, min_branches_per_sample=1, max_branches_per_sample=None,
                             val_branches_per_sample=None, val_min_branches_per_sample=None,
                             val_max_branches_per_sample=None, max_total_tokens=0, random_time_offset=False,
                             random_branch_slots=0, align_to="left", mask_mode=None)


def add_prompt_batch_args(p: ArgParser, *, batch_size: int, branches: int | None) -> None:
    """Batches of RL prompts: `--batch_size` prompts per micro-batch; with `branches`, also
    `--branches_per_sample` (prompts decoded together as the isolated branches of one sample; PPO).
    Rollouts and training always use the isolated mask, so the mask and alignment flags do not apply (the
    checkpoint keeps its own mask rule for inference)."""
    g = p.add_argument_group("prompt batches")
    add_batch_size_arg(g, batch_size, "prompts per micro-batch")
    if branches is not None:
        add_branches_per_sample_arg(g, branches, "prompts decoded together as the isolated branches of one sample "
                                                 f"(default {branches})")
    else:
        p.set_defaults(branches_per_sample=1)
    p.set_defaults(**PROMPT_BATCH_DEFAULTS)


def add_rollout_args(p: ArgParser, *, max_new_tokens: int) -> None:
    """How a rollout generates (always sampling; validation rollouts decode greedily) and what it is scored by."""
    g = p.add_argument_group("rollouts")
    add_max_new_tokens_arg(g, max_new_tokens, minimum=1)
    add_sampling_args(g, {"temperature": 1.0, "top_p": 1.0, "top_k": 0}, "sampling temperature (default 1.0)",
                      "nucleus sampling (default 1.0: off)", "top-k sampling (default 0: off)")
    g.add_argument("--reward_model_path", default=None,
                   help="reward model checkpoint (trainer/train_reward_model.py) scoring each answer (default: exact "
                        "match of the answer with the record's 'answer')")
    p.add_check(_check_rollout, paths=True)


def _check_rollout(args) -> None:
    if args.temperature == 0:
        raise UsageError("--temperature 0 would decode greedily: RL rollouts sample (use a small positive value)")
    if args.reward_model_path is not None:
        check_input_file(args.reward_model_path, "--reward_model_path")
        check_not_resume_state(args.reward_model_path, "--reward_model_path")


def add_rl_train_args(p: ArgParser, *, default_data: str, batch_size: int, branches: int | None, epochs: int,
                      lr: float, max_new_tokens: int, wandb_project: str) -> None:
    """Every flag of an RL front (PPO, GRPO) on a MiniMind checkpoint, the stage's own ones aside."""
    add_model_shape_args(p, training=True)
    add_rope_args(p, training=True)
    add_prompt_batch_args(p, batch_size=batch_size, branches=branches)
    add_data_args(p, default_data=default_data, kind="prompts", training=True)
    add_model_source_args(p, checkpoint=False, hf=False, lora=False)
    add_runtime_args(p, seed=1337, distributed=True)
    add_output_args(p, out_dir="out", out_dir_help="checkpoints, resume state and metrics go here")
    add_train_args(p, epochs=epochs, lr=lr, wandb_project=wandb_project)
    add_rollout_args(p, max_new_tokens=max_new_tokens)
