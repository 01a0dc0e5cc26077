"""White-box knowledge distillation: cross-entropy on the labels mixed with the temperature-scaled KL to a teacher.

    loss_fn = DistillLoss(mask_mode, teacher, alpha=0.5, temperature=1.5)
    out = loss_fn(student, batch)     # LossOutput: summed over the target tokens; metrics "ce", "kl"
    check_teacher(teacher, student)   # same vocabulary and position rules, or ValueError

At every target position (labels != -100, e.g. the assistant tokens of a conversation):

    loss = alpha * CE(student, label) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

(Hinton et al. 2015: T^2 keeps the gradient scale of the soft term independent of T). `alpha=0` is
pure distillation, `alpha=1` plain fine-tuning. The teacher sees the same batch (the same parallel
branches, positions and mask) under `torch.no_grad()`. Metrics, summed per target token: "ce" (the
student's cross-entropy) and "kl" (KL(teacher || student) at temperature T, without the T^2 factor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.logprobs import target_logits
from trainer.loss import LossFn, LossOutput, moe_aux_loss

# position settings that must agree: the batch's position_ids are built for the student's
POSITION_KEYS = ("pe", "branch_stride", "rope_2d_scheme")


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """`[N, V]`, `[N, V]` -> `[N]` KL(teacher_T || student_T) per position, in float32."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="none").sum(-1)


def check_teacher(teacher, student) -> None:
    """A teacher must share the student's vocabulary and read positions the same way (ValueError otherwise)."""
    t, s = teacher.config, getattr(student, "module", student).config
    if t.vocab_size != s.vocab_size:
        raise ValueError(f"the teacher has a vocabulary of {t.vocab_size} tokens, the student {s.vocab_size}: "
                         "distillation compares their distributions token by token, so they must match")
    for key in POSITION_KEYS:
        if getattr(t, key, None) != getattr(s, key, None):
            raise ValueError(f"the teacher was trained with {key}={getattr(t, key, None)!r} and the student has "
                             f"{key}={getattr(s, key, None)!r}: the batch's positions would mean something else to "
                             "the teacher")


class DistillLoss(LossFn):
    """alpha * CE + (1 - alpha) * T^2 * KL(teacher || student), summed over the target tokens."""

    perplexity_metric = "ce"  # the perplexity of the plain cross-entropy on the labels

    def __init__(self, mask_mode: str, teacher, *, alpha: float = 0.5, temperature: float = 1.0):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.mask_mode, self.teacher = mask_mode, teacher
        self.alpha, self.temperature = float(alpha), float(temperature)

    def __call__(self, model, batch: dict) -> LossOutput:
        student, labels, out = target_logits(model, batch, self.mask_mode)
        with torch.no_grad():
            teacher, _, _ = target_logits(self.teacher, batch, self.mask_mode)
        ce = F.cross_entropy(student.float(), labels, reduction="sum")
        kl = kd_kl(student, teacher, self.temperature).sum()
        loss = self.alpha * ce + (1.0 - self.alpha) * self.temperature ** 2 * kl
        metrics = {"ce": float(ce.detach()), "kl": float(kl.detach())}
        return LossOutput(loss, int(labels.numel()), metrics, moe_aux_loss(model, out))
