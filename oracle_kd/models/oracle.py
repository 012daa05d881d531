"""The Oracle Teacher: CTC frame posteriors p(pi_t | x, y) from the source and the labels.

One class for every task; the task hands it a source encoder that turns the
source into frames at the student's frame rate. Source frames are the queries
of the cross-attention, label embeddings its keys and values, so the output
keeps the source's time axis and a linear CTC head reads it.

Anti-copy design (PAPER.md): by default the label embeddings carry no
position information, so a frame can find a label only by content and the
order of the output must come from the source. `target_positions=True` adds
sinusoidal positions to the labels: the ablation that permits copying.
`target_noise` masks or substitutes a fraction of the labels during training.

`target_context=k` (odd, 0 = off) adds a convolution of width k over the label
embeddings: each key then carries its neighbours (an n-gram), still with no
absolute position. For long label sequences (a sentence holds most of the
alphabet) content alone says little about which occurrence a frame hears;
the local context tells occurrences apart. The copy test says whether it
reopens the copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from oracle_kd.models.layers import Dropout
from oracle_kd.vocab import BLANK


@dataclass
class OracleConfig:
    d_model: int = 128
    heads: int = 4
    layers: int = 2  # decoder blocks
    ff_mult: int = 4
    dropout: float = 0.1
    target_positions: bool = False  # True: the copy-permitting ablation
    target_noise: str = "none"  # "none" | "mask" | "substitute"
    target_noise_rate: float = 0.15  # fraction of labels masked/substituted in training
    target_context: int = 0  # odd width of a convolution over the label embeddings; 0 = none


def sinusoids(length: int, dim: int, device=None) -> torch.Tensor:
    """(length, dim) sinusoidal position encoding (Vaswani et al., 2017)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    scale = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    enc = torch.zeros(length, dim, device=device)
    enc[:, 0::2] = torch.sin(position * scale)
    enc[:, 1::2] = torch.cos(position * scale[: dim // 2])
    return enc


class DecoderBlock(nn.Module):
    """Pre-norm block: frame self-attention, frame-to-label cross-attention, feed-forward."""

    def __init__(self, cfg: OracleConfig):
        super().__init__()
        d = cfg.d_model
        self.self_norm = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.cross_norm = nn.LayerNorm(d)
        self.cross_attn = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.ff_norm = nn.LayerNorm(d)
        self.ff = nn.Sequential(
            nn.Linear(d, cfg.ff_mult * d), nn.GELU(), Dropout(cfg.dropout), nn.Linear(cfg.ff_mult * d, d)
        )
        self.drop = Dropout(cfg.dropout)

    def forward(self, frames, frame_pad, labels, label_pad):
        h = self.self_norm(frames)
        frames = frames + self.drop(self.self_attn(h, h, h, key_padding_mask=frame_pad, need_weights=False)[0])
        h = self.cross_norm(frames)
        frames = frames + self.drop(self.cross_attn(h, labels, labels, key_padding_mask=label_pad, need_weights=False)[0])
        return frames + self.drop(self.ff(self.ff_norm(frames)))


class OracleTeacher(nn.Module):
    """forward(sources, source_lengths, targets, target_lengths) -> (log_probs, frame_lengths)."""

    needs_targets = True

    def __init__(self, source_encoder: nn.Module, num_classes: int, cfg: OracleConfig):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.source_encoder = source_encoder  # sources -> (batch, frames, encoder.out_dim), frame_lengths
        self.source_proj = nn.Linear(source_encoder.out_dim, cfg.d_model)
        self.mask_id = num_classes  # one extra embedding row: the [MASK] label
        self.target_embedding = nn.Embedding(num_classes + 1, cfg.d_model)
        if cfg.target_context:
            if cfg.target_context < 0 or cfg.target_context % 2 == 0:
                raise ValueError(f"target_context must be 0 or an odd width, not {cfg.target_context}")
            self.target_context = nn.Conv1d(cfg.d_model, cfg.d_model, cfg.target_context,
                                            padding=cfg.target_context // 2)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, num_classes)

    def frame_count(self, source_length: int) -> int:
        return self.source_encoder.frame_count(source_length)  # the decoder keeps the encoder's frames

    def forward(self, sources, source_lengths, targets, target_lengths):
        feats, frame_lengths = self.source_encoder(sources, source_lengths)
        frames = self.source_proj(feats)
        frames = frames + sinusoids(frames.shape[1], frames.shape[2], frames.device)  # source order is allowed
        frame_pad = torch.arange(frames.shape[1], device=frames.device)[None] >= frame_lengths[:, None]

        labels, label_pad = self.label_keys(targets, target_lengths)
        for block in self.blocks:
            frames = block(frames, frame_pad, labels, label_pad)
        return self.head(self.norm(frames)).log_softmax(-1), frame_lengths

    def label_keys(self, targets, target_lengths):
        """The cross-attention's keys and values (batch, labels, d_model) and their padding mask."""
        labels = self.target_embedding(self._noisy(targets, target_lengths))
        label_pad = torch.arange(targets.shape[1], device=targets.device)[None] >= target_lengths[:, None]
        if self.cfg.target_context:  # padding is zeroed first, so a label's context ends where its row ends
            labels = labels.masked_fill(label_pad[..., None], 0.0)
            labels = labels + self.target_context(labels.transpose(1, 2)).transpose(1, 2)
        if self.cfg.target_positions:
            labels = labels + sinusoids(labels.shape[1], labels.shape[2], labels.device)
        return labels, label_pad & (target_lengths[:, None] > 0)  # an empty row attends to its pad, not to nothing

    def _noisy(self, targets, target_lengths):
        """Masked or substituted labels, in training only (PAPER.md, anti-copy options)."""
        targets = targets.clamp(min=0)
        if not self.training or self.cfg.target_noise == "none" or self.cfg.target_noise_rate <= 0:
            return targets
        hit = torch.rand(targets.shape, device=targets.device) < self.cfg.target_noise_rate
        if self.cfg.target_noise == "mask":
            return torch.where(hit, torch.full_like(targets, self.mask_id), targets)
        if self.cfg.target_noise == "substitute":
            other = torch.randint(BLANK + 1, self.num_classes, targets.shape, device=targets.device)
            return torch.where(hit, other, targets)
        raise ValueError(f"unknown target_noise {self.cfg.target_noise!r}: none, mask or substitute")
