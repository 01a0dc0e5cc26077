"""Whole fronts in one call (MiniMind, Hugging Face, RL) and the training-run flags (see trainer.args)."""

from __future__ import annotations

import os
from pathlib import Path

from trainer.args.data import add_data_args, add_data_mode_args
from trainer.args.groups import (
    add_batch_size_arg,
    add_branch_args,
    add_branches_per_sample_arg,
    add_epochs_arg,
    add_gradient_checkpointing_arg,
    add_learning_rate_arg,
    add_lora_layer_args,
    add_lora_name_arg,
    add_lora_rank_arg,
    add_mask_args,
    add_max_new_tokens_arg,
    add_model_path_arg,
    add_model_shape_args,
    add_model_source_args,
    add_output_args,
    add_pair_batch_args,
    add_patch_rope_arg,
    add_rope_args,
    add_runtime_args,
    add_sampling_args,
)
from trainer.cli import (  # the value types and path checks are re-exported for the entry points
    ArgParser,
    BoolFlag,
    UsageError,
    check_input_file,
    check_not_resume_state,
    int_list,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    ratio,
)


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
        add_lora_layer_args(g)
        add_lora_name_arg(p, g, lora_name, "adapter name: out_dir/lora/{lora_name}_{model_tag}...")
        g.add_argument("--load_lora", default=None,
                       help="continue from this adapter (a .pth file or a PEFT folder written by a LoRA run)")
        p.add_check(_check_load_lora, paths=True)
        add_self_distill_args(p)
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
    if args.load_lora is not None:
        given = [f for f, v, d in (("--lora_alpha", args.lora_alpha, None), ("--lora_dropout", args.lora_dropout, 0.0),
                                   ("--lora_target_modules", args.lora_target_modules, None)) if v != d]
        if given:
            raise UsageError(f"{given[0]} shapes a new adapter; --load_lora {args.load_lora} continues one with its "
                             "own settings")


def add_self_distill_args(p: ArgParser) -> None:
    """--self_distill / --no_self_distill, --distill_alpha, --distill_temperature (the HF LoRA fronts and
    scripts/hf_columnar_experiment.py; trainer/hf.py `SelfDistillLoss`)."""
    g = p.add_argument_group("self-distillation (LoRA)")
    g.add_argument("--self_distill", action=BoolFlag, default=False,
                   help="learn the base model's own distribution of each branch decoded alone: the teacher is the "
                        "model with its adapter switched off under the isolated mask (no second model in memory)")
    g.add_argument("--distill_alpha", type=ratio, default=None,
                   help="with --self_distill: weight of the cross-entropy on the labels (default 0 = pure KL)")
    g.add_argument("--distill_temperature", type=positive_float, default=None,
                   help="with --self_distill: softmax temperature of the KL term (default 1)")
    p.add_check(_check_self_distill)


def _check_self_distill(args) -> None:
    if not args.self_distill:
        for flag, v in (("--distill_alpha", args.distill_alpha), ("--distill_temperature", args.distill_temperature)):
            if v is not None:
                raise UsageError(f"{flag} is a setting of --self_distill (add --self_distill, or drop {flag})")
        return
    args.distill_alpha = 0.0 if args.distill_alpha is None else args.distill_alpha
    args.distill_temperature = 1.0 if args.distill_temperature is None else args.distill_temperature


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
