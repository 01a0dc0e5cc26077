"""The names of the layout, attention, position-encoding and objective options, importable without torch.

Command-line parsers (trainer/args/) take their choices from here, so a bad value is refused before
torch is imported; `parallel.masks`, `parallel.layout`, `parallel.rope2d` and `model.model_minimind`
re-export the same tuples.
"""

MASK_MODES = ("columnar", "isolated")  # attention rule between branches (CLI --mask)
ALIGNMENTS = ("left", "right")  # branch alignment in time (CLI --align_to)
ROPE_2D_SCHEMES = ("additive", "reference")  # 2D RoPE variant (CLI --rope_2d_scheme)
PE_TYPES = ("rope", "fpe")  # position encoding of the branch axis (CLI --pe)
PAIR_LAYOUTS = ("shared", "separate")  # preference pairs: prompt once + two branches, or two sequences (--pair_layout)
DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")  # DPO objective (trainer/train_dpo.py --loss_type)
GRPO_LOSS_TYPES = ("dapo", "grpo", "dr_grpo")  # GRPO normalisation (trainer/train_grpo.py --loss_type; default first)
SCALE_REWARDS = ("group", "batch", "none")  # GRPO advantage scaling (--scale_rewards)
KL_ESTIMATORS = ("k1", "k2", "k3")  # per-token KL estimators (trainer/rl.py; PPO --kl_estimator)
CRITIC_MODES = ("separate", "shared")  # PPO critic: its own backbone, or a value head on the actor's (--critic)
