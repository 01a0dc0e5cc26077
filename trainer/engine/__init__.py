"""The one training engine every trainer front uses: named components, a loop of small methods, seams.

A front (trainer/train_*.py) declares its flags, subclasses `Stage` and calls `run(args, stage)`:

    Stage (the front)                         Trainer (trainer.py)
    -----------------                         --------------------
    checkpoint_stem, load_tokenizer  ------>  Checkpointer (checkpointer.py): claim out_dir + lock,
    build_model, select_trainable    ------>  ModelComponent (models.py): policy (+DDP), frozen companions
    build_companions                 ------>      "
    build_dataset                    ------>  DataComponent (data.py): streams, DataLoader, step count
                                              OptimizerComponent (optim.py): AdamW, scaler, LR schedule
    build_loss  (LossFn)             ------>  forward_backward: loss hook per micro-batch
    build_rollout (Rollout)          ------>  train_step: rollout phase before the forward (RL stages)
                                              Validator (validator.py), tracker (trainer/tracking.py)
    checkpoint_payload               ------>  Checkpointer.save: model file + resume state, as a pair
                                              TrainState (state.py): the counters; StopFlag (interrupt.py)

docs/DESIGN.md ("Training engine") shows how each coming stage (HF LoRA / full, DPO, reward model,
distillation, PPO, GRPO) fills these seams, and lists the guarantees (atomic pairs, resume checks,
exit codes).
"""

from trainer.engine.stage import Companion, Rollout, RolloutContext, Stage, samples_from_batch
from trainer.engine.state import TrainState
from trainer.engine.trainer import Trainer, run
from trainer.loss import CrossEntropyLoss, LossFn, LossOutput

__all__ = ["Companion", "CrossEntropyLoss", "LossFn", "LossOutput", "Rollout", "RolloutContext", "Stage",
           "TrainState", "Trainer", "run", "samples_from_batch"]
