"""Distillation losses for CTC models, as pure functions of tensors.

Shapes everywhere: `log_probs` (batch, frames, classes) are log-softmax
outputs with the blank at index 0; `frame_lengths` (batch,) count the valid
frames of each row; `targets` (batch, max_target_length) are label ids padded
with anything; `target_lengths` (batch,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oracle_kd.vocab import BLANK


def frame_mask(frame_lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(batch, frames) bool, True on valid frames."""
    return torch.arange(frames, device=frame_lengths.device)[None, :] < frame_lengths[:, None]


def ctc(log_probs, frame_lengths, targets, target_lengths, blank: int = BLANK) -> torch.Tensor:
    """Plain CTC loss: per-utterance negative log-likelihood divided by its target
    length, averaged over the batch (torch's `reduction="mean"`). Infeasible
    rows give infinity, which training treats as an error, not as zero."""
    return F.ctc_loss(
        log_probs.transpose(0, 1).float(),  # torch wants (frames, batch, classes)
        targets,
        frame_lengths,
        target_lengths,
        blank=blank,
        reduction="mean",
        zero_infinity=False,
    )


def frame_kd(student_log_probs, teacher_log_probs, frame_lengths, tau: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) of frame posteriors softened by temperature `tau`,
    times tau^2 (Hinton et al., 2015, so that gradients keep their scale),
    averaged over valid frames.

    Softening log-probabilities by tau equals softening the logits, since
    log_softmax is invariant to a per-frame constant.
    """
    student = F.log_softmax(student_log_probs / tau, dim=-1)
    teacher = F.log_softmax(teacher_log_probs.float() / tau, dim=-1)
    kl = (teacher.exp() * (teacher - student)).sum(-1)  # (batch, frames)
    mask = frame_mask(frame_lengths, kl.shape[1])
    return (kl * mask).sum() / mask.sum().clamp(min=1) * tau**2


def teacher_spikes(teacher_log_probs, frame_lengths, blank: int = BLANK) -> torch.Tensor:
    """(batch, frames) label id where the teacher's argmax is a non-blank label
    on a valid frame, else -1."""
    best = teacher_log_probs.argmax(-1)
    valid = frame_mask(frame_lengths, best.shape[1]) & (best != blank)
    return torch.where(valid, best, torch.full_like(best, -1))


def guided_ctc(student_log_probs, teacher_log_probs, frame_lengths, blank: int = BLANK) -> torch.Tensor:
    """Guided CTC training (Kurata & Audhkhasi, Interspeech 2019): on each frame
    where the teacher spikes with label k, raise the student's posterior of k.

    Loss = -sum over spike frames of p_student(k | t), divided by the number of
    spike frames; 0 when the teacher has no spike. Probabilities (not
    log-probabilities) as in the paper, so frames where the student is already
    sure stop pulling.
    """
    spikes = teacher_spikes(teacher_log_probs, frame_lengths, blank)
    on = spikes >= 0
    if not on.any():
        return student_log_probs.sum() * 0.0
    picked = student_log_probs.gather(-1, spikes.clamp(min=0).unsqueeze(-1)).squeeze(-1).exp()
    return -(picked * on).sum() / on.sum()


KD_LOSSES = {"frame": frame_kd, "guided": guided_ctc}


def distillation_loss(kind: str, student_log_probs, teacher_log_probs, frame_lengths, tau: float) -> torch.Tensor:
    """The KD term named `kind` ("frame" or "guided")."""
    if kind == "frame":
        return frame_kd(student_log_probs, teacher_log_probs, frame_lengths, tau)
    if kind == "guided":
        return guided_ctc(student_log_probs, teacher_log_probs, frame_lengths)
    raise ValueError(f"unknown KD method {kind!r}; choose from {sorted(KD_LOSSES)}")
