"""Flag groups for the model, 2D RoPE, mask, branches, decoding, model sources, runtime and outputs (see trainer.args)."""

from __future__ import annotations

from pathlib import Path

from model.device import DTYPE_ALIASES, DTYPE_NAMES
from model.presets import MODEL_PRESETS, PRESET_NAMES
from model.tokenizer import MINILLM_DEFAULT_SYSTEM
from parallel.names import ALIGNMENTS, MASK_MODES, PAIR_LAYOUTS, PE_TYPES, ROPE_2D_SCHEMES
from trainer.cli import (  # the value types and path checks are re-exported for the entry points
    ArgParser,
    BoolFlag,
    UsageError,
    check_local_or_hub,
    check_model_path,
    check_writable_dir,
    check_writable_file,
    device_name,
    dtype_name,
    nonneg_float,
    nonneg_int,
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
    g.add_argument("--preset", choices=PRESET_NAMES, default=None,
                   help="a MiniMind2 shape: small (MiniMind2-Small, 512x8), moe (MiniMind2-MoE, 640x8, 1+4 experts), "
                        "base (MiniMind2, 768x16); a shape flag given beside it overrides that one value "
                        "(model/presets.py)")
    g.add_argument("--hidden_size", type=positive_int, default=None, help="default 512")
    g.add_argument("--num_hidden_layers", type=positive_int, default=None, help="default 8")
    g.add_argument("--num_attention_heads", type=positive_int, default=None, help="default 8")
    g.add_argument("--num_key_value_heads", type=positive_int, default=None, help="default 2")
    g.add_argument("--use_moe", type=str2bool, nargs="?", const=True, default=None,
                   help="mixture of experts (4 routed + 1 shared, top-2); `--use_moe` or `--use_moe false`")
    if training:
        g.add_argument("--use_flex_attention", action="store_true", help="FlexAttention BlockMask on CUDA")
        add_gradient_checkpointing_arg(g)
    p.add_check(apply_preset)  # before _check_heads: the preset's values are checked like given ones
    p.add_check(_check_heads)


def apply_preset(args) -> None:
    """Fill the shape flags not given from `--preset` (a flag given explicitly keeps its value)."""
    if getattr(args, "preset", None) is None:
        return
    for key, value in MODEL_PRESETS[args.preset].shape.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def add_gradient_checkpointing_arg(g) -> None:
    g.add_argument("--gradient_checkpointing", action="store_true", help="recompute activations in backward")


def _check_heads(args) -> None:
    h, kv = args.num_attention_heads, args.num_key_value_heads
    if h is not None and kv is not None and h % kv:
        raise UsageError(f"--num_attention_heads {h} must be a multiple of --num_key_value_heads {kv}")
    if h is not None and args.hidden_size is not None and args.hidden_size % h:
        raise UsageError(f"--hidden_size {args.hidden_size} must be a multiple of --num_attention_heads {h}")


def add_patch_rope_arg(g, default: bool | None = True, help: str = "replace the model's rotary module with 2D RoPE (--no_patch_rope: keep the "
                                          "plain model and 1D positions)") -> None:
    """`--patch_rope` / `--no_patch_rope` (`default` None: neither given, a saved setting decides)."""
    g.add_argument("--patch_rope", action=BoolFlag, default=default, help=help)


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
        add_patch_rope_arg(g, default=None,
                           help="Hugging Face models: 2D RoPE (default; an adapter's saved setting decides when "
                                "neither is given); --no_patch_rope keeps the model's own rotary module (plain 1D "
                                "positions)")
    if stride and pe:
        g.add_argument("--pe", choices=PE_TYPES, default=None, help="2D RoPE (default) or Fourier branch embedding")
    g.add_argument("--rope_2d_ratio", type=ratio, default=ratio_default,
                   help="share of rotary pairs that carry the branch coordinate"
                        + (" (default 0.5)" if ratio_default is None else ""))
    g.add_argument("--rope_2d_scheme", choices=schemes, default=None if len(schemes) > 1 else schemes[0],
                   help="additive (default: one branch == the plain model)" + (" or reference" if len(schemes) > 1
                                                                                else ""))
    if stride:
        add_branch_stride_arg(g, prefix_sharing=prefix_sharing)
    if training:
        g.add_argument("--fpe_theta", type=positive_float, default=None,
                       help="pe=fpe: base of the sinusoid (default 1e4)")
        g.add_argument("--fpe_max_positions", type=positive_int, default=None, help="pe=fpe: table size (default 512)")
        g.add_argument("--fpe_learnable", type=str2bool, nargs="?", const=True, default=None,
                       help="pe=fpe: train the embedding table (default false)")
    if prefix_sharing:
        p.add_check(_check_prefix_sharing)


def add_branch_stride_arg(g, *, prefix_sharing: bool = False, default: int | None = None) -> None:
    """`--branch_stride` (`--stride`): the branch coordinate step (`default` None: the model's or 128 / 1)."""
    g.add_argument("--branch_stride", "--stride", dest="branch_stride",
                   type=nonneg_int if prefix_sharing else positive_int, default=default,
                   help="branch coordinate step " + ("(default 128 for rope, 1 for fpe)" if default is None else
                                                     f"(default {default})")
                        + ("; 0 = prefix sharing (every branch continues the main at coordinate 0, --mask "
                           "isolated)" if prefix_sharing else ""))


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


def add_prompt_mode_arg(g) -> None:
    """`--mode pretrain|sft`: plain completion, or chat prompts (the chat template on unless --no_chat_template)."""
    g.add_argument("--mode", choices=["pretrain", "sft"], default="sft",
                   help="pretrain: plain completion; sft: chat template on (unless --no_chat_template)")


def add_prompts_arg(g, *, default: list[str] | None = None, nargs: str = "*", help: str = "prompts") -> None:
    g.add_argument("--prompts", nargs=nargs, default=default, help=help)


def add_conversation_args(g, *, system_help: str, history_help: str) -> None:
    """`--system` (a system message opening the conversation) and `--history_turns` (earlier exchanges kept, 0 = all)."""
    g.add_argument("--system", default=None, help=system_help)
    g.add_argument("--history_turns", type=nonneg_int, default=0, help=history_help)


def add_chat_template_arg(g, *, default: bool | None, help: str) -> None:
    """`--chat_template` / `--no_chat_template`: wrap each prompt as a user turn of the tokenizer's chat template."""
    g.add_argument("--chat_template", action=BoolFlag, default=default, help=help)


def add_default_system_arg(g) -> None:
    """`--default_system [TEXT]`: MiniLLM's default system turn for a conversation that has none."""
    g.add_argument("--default_system", nargs="?", const=MINILLM_DEFAULT_SYSTEM, default=None, metavar="TEXT",
                   help=f"open each chat-formatted branch without a system message (no main) with a system turn "
                        f"(MiniLLM's template; bare flag: {MINILLM_DEFAULT_SYSTEM!r}); default: none")


def check_default_system(args, template_on: bool) -> None:
    """--default_system only applies to chat-formatted prompts."""
    if args.default_system is not None and not template_on:
        raise UsageError("--default_system only applies with the chat template (--chat_template, or --mode sft)")
    if args.default_system is not None and not args.default_system.strip():
        raise UsageError("--default_system: the system text is empty")


def _check_sampling(args) -> None:
    given = [f"--{k}" for k in SAMPLING_DEFAULTS if getattr(args, k) is not None]
    if given and not args.do_sample:
        raise UsageError(f"{', '.join(given)} only apply when sampling; add --do_sample (greedy decoding is the "
                         "default)")
    for k, v in SAMPLING_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)


# --- data ----------------------------------------------------------------------------------------------

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
    add_lora_layer_args(g)


def add_lora_layer_args(g) -> None:
    """--lora_alpha --lora_dropout --lora_target_modules: the shape of a new adapter (`model_lora.apply_lora`)."""
    g.add_argument("--lora_alpha", type=positive_float, default=None,
                   help="LoRA alpha: the update is scaled by alpha / rank (default: the rank, scaling 1)")
    g.add_argument("--lora_dropout", type=ratio, default=0.0, help="dropout on the LoRA input (default 0)")
    g.add_argument("--lora_target_modules", nargs="+", default=None, metavar="NAME",
                   help="Linear layers to adapt, by name or name suffix, e.g. q_proj k_proj v_proj o_proj (default: "
                        "every attention and MLP projection of the decoder blocks)")


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

