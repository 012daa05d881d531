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

BLANK_KEEP_BELOW = 0.9  # blank-aware KD: frames whose teacher blank probability exceeds this are not distilled


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


def frame_kd(student_log_probs, teacher_log_probs, frame_lengths, tau: float = 1.0,
             frames: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher || student) of frame posteriors softened by temperature `tau`,
    times tau^2 (Hinton et al., 2015, so that gradients keep their scale),
    averaged over valid frames (or over `frames`, a (batch, frames) bool mask).

    Softening log-probabilities by tau equals softening the logits, since
    log_softmax is invariant to a per-frame constant.
    """
    student = F.log_softmax(student_log_probs / tau, dim=-1)
    teacher = F.log_softmax(teacher_log_probs.float() / tau, dim=-1)
    kl = (teacher.exp() * (teacher - student)).sum(-1)  # (batch, frames)
    mask = frame_mask(frame_lengths, kl.shape[1]) if frames is None else frames
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


def blank_aware_frame_kd(student_log_probs, teacher_log_probs, frame_lengths, tau: float = 1.0,
                         blank: int = BLANK, max_blank_probability: float = BLANK_KEEP_BELOW) -> torch.Tensor:
    """Frame KD on the frames where the teacher is not sure of a blank.

    CTC teachers put blank on 60-77 % of frames with probability near 1; frame KD
    averaged over all frames is then mostly "copy my blanks", which the CTC loss
    already teaches, and a timing disagreement on the few label frames is a small
    part of the loss (Hilmes et al., 2025: which blank frames are distilled
    matters). This form keeps only frames whose teacher blank probability (at
    tau 1) is at most `max_blank_probability`: the spikes, and the uncertain
    frames beside them where the teacher's confusions and timing live. The KL
    (softened by tau, times tau^2, as `frame_kd`) is averaged over those frames;
    0 when there are none.
    """
    keep = frame_mask(frame_lengths, teacher_log_probs.shape[1])
    keep = keep & (teacher_log_probs[..., blank].float().exp() <= max_blank_probability)
    return frame_kd(student_log_probs, teacher_log_probs, frame_lengths, tau, frames=keep)


@torch.no_grad()
def best_path(log_probs, frame_lengths, targets, target_lengths, blank: int = BLANK) -> torch.Tensor:
    """(batch, frames) the label id of every frame on the most probable CTC path that
    collapses to `targets` (Viterbi forced alignment); -1 on padding frames.

    States are the usual extended sequence (blank, y1, blank, y2, ..., blank),
    2U+1 per row; a state is reached from itself, the state before, or two
    before when that skips a blank between two different labels. A row whose
    target needs more frames than it has has no path: ValueError.
    """
    batch, frames, _ = log_probs.shape
    states = 2 * targets.shape[1] + 1
    ext = torch.full((batch, states), blank, dtype=torch.long, device=log_probs.device)
    ext[:, 1::2] = targets.clamp(min=0)
    emit = log_probs.float().gather(2, ext[:, None, :].expand(batch, frames, states))  # (batch, frames, states)
    ninf = torch.tensor(float("-inf"), device=log_probs.device)
    skip_ok = torch.zeros(batch, states, dtype=torch.bool, device=log_probs.device)
    skip_ok[:, 3::2] = targets[:, 1:] != targets[:, :-1]  # label s may follow label s-2 directly
    score = torch.full((batch, states), float("-inf"), device=log_probs.device)
    score[:, :2] = emit[:, 0, :2]
    back = torch.zeros(frames, batch, states, dtype=torch.uint8, device=log_probs.device)  # steps back: 0, 1, 2
    for t in range(1, frames):
        stay = score
        one = torch.cat([ninf.expand(batch, 1), score[:, :-1]], 1)
        two = torch.where(skip_ok, torch.cat([ninf.expand(batch, 2), score[:, :-2]], 1), ninf)
        best, step = torch.stack([stay, one, two]).max(0)
        live = (t < frame_lengths)[:, None]  # rows past their last frame keep their final scores
        score = torch.where(live, best + emit[:, t], score)
        back[t] = step.to(torch.uint8)
    last = 2 * target_lengths  # final blank; the final label is last - 1
    end_blank = score.gather(1, last[:, None]).squeeze(1)
    end_label = score.gather(1, (last - 1).clamp(min=0)[:, None]).squeeze(1)
    end_label = torch.where(target_lengths > 0, end_label, ninf)
    if not torch.isfinite(torch.maximum(end_blank, end_label)).all():
        raise ValueError("a target has no CTC path in its frames (too long for the source)")
    state = torch.where(end_label > end_blank, last - 1, last)
    path = torch.full((batch, frames), -1, dtype=torch.long, device=log_probs.device)
    rows = torch.arange(batch, device=log_probs.device)
    for t in range(frames - 1, -1, -1):
        live = t < frame_lengths
        path[:, t] = torch.where(live, ext[rows, state], path[:, t])
        if t > 0:  # rows at or before their last frame step back along their pointers
            step = back[t, rows, state].long()
            state = torch.where(live, state - step, state)
    return path


def alignment_kd(student_log_probs, teacher_log_probs, frame_lengths, targets, target_lengths,
                 blank: int = BLANK) -> torch.Tensor:
    """Sequence-level KD from a teacher that read the labels: the student's frame
    targets are the teacher's best path for the true labels (`best_path`), and the
    loss is their cross-entropy averaged over valid frames.

    For the Oracle Teacher this hands over exactly what it is good at, where each
    label sits in the source, with the labels themselves always right (its greedy
    decode can differ from them); for a conventional teacher it is the same
    forced alignment through its posteriors.
    """
    path = best_path(teacher_log_probs, frame_lengths, targets, target_lengths, blank)
    on = path >= 0
    picked = student_log_probs.gather(-1, path.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * on).sum() / on.sum().clamp(min=1)


def sequence_kd(student_log_probs, teacher_log_probs, frame_lengths, blank: int = BLANK) -> torch.Tensor:
    """Sequence-level KD (Takashima et al., ICASSP 2018): the student's CTC loss on the
    teacher's greedy decode instead of (in addition to, with the ctc term) the labels.
    The decode came from a path over the same frames, so it is always feasible."""
    best = teacher_log_probs.argmax(-1)
    mask = frame_mask(frame_lengths, best.shape[1])
    keep = mask & (best != blank) & (best != F.pad(best, (1, 0), value=blank)[:, :-1])  # first frame of a run
    lengths = keep.sum(1)
    targets = torch.zeros(best.shape[0], max(1, int(lengths.max())), dtype=torch.long, device=best.device)
    for row in range(best.shape[0]):
        ids = best[row][keep[row]]
        targets[row, : len(ids)] = ids
    return ctc(student_log_probs, frame_lengths, targets, lengths, blank)


def kd_term(method: str, student_log_probs, teacher_log_probs, frame_lengths, targets, target_lengths,
            tau: float = 1.0) -> torch.Tensor:
    """The KD loss `method` (one of KD_METHODS) between a student and one teacher's frame
    log-probs over the same frames; `targets` are the true labels (alignment KD reads them)."""
    if method == "frame":
        return frame_kd(student_log_probs, teacher_log_probs, frame_lengths, tau)
    if method == "blank_aware":
        return blank_aware_frame_kd(student_log_probs, teacher_log_probs, frame_lengths, tau)
    if method == "guided":
        return guided_ctc(student_log_probs, teacher_log_probs, frame_lengths)
    if method == "alignment":
        return alignment_kd(student_log_probs, teacher_log_probs, frame_lengths, targets, target_lengths)
    if method == "sequence":
        return sequence_kd(student_log_probs, teacher_log_probs, frame_lengths)
    raise ValueError(f"unknown KD method {method!r}; choose from {', '.join(KD_METHODS)}")


KD_METHODS = ("frame", "blank_aware", "guided", "alignment", "sequence")
