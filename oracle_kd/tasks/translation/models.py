"""Translation models: a CTC non-autoregressive Transformer (student and conventional teacher)
and the Oracle Teacher's source encoder.

The source is embedded, encoded at token rate (`source_layers`), upsampled by
`upsample` = k (each state is projected to k states: Libovicky and Helcl, 2018),
and encoded again at frame rate (`layers`); a CTC head reads the frames over the
target subwords. So a source of n tokens gives k * n frames, and a target needs
at most that many (with a blank between repeats) to be CTC-feasible. The Oracle
Teacher uses the same upsampled encoder as its source encoder and the target
subword embeddings (no positions) as its keys and values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from oracle_kd.models.oracle import OracleConfig, OracleTeacher, sinusoids


@dataclass
class EncoderConfig:
    d_model: int = 256
    heads: int = 4
    source_layers: int = 1  # Transformer layers over the source tokens, before upsampling
    layers: int = 3  # Transformer layers over the upsampled frames
    ff_mult: int = 4
    dropout: float = 0.1
    upsample: int = 3  # k: CTC frames per source token


class UpsampledEncoder(nn.Module):
    """source ids (batch, tokens), lengths -> (frames (batch, k * tokens, d_model), frame_lengths)."""

    def __init__(self, source_size: int, cfg: EncoderConfig):
        super().__init__()
        if cfg.upsample < 1:
            raise ValueError(f"upsample must be at least 1, not {cfg.upsample}")
        self.cfg, self.out_dim = cfg, cfg.d_model
        self.embedding = nn.Embedding(source_size, cfg.d_model, padding_idx=0)
        self.source_layers = _stack(cfg, cfg.source_layers)
        self.split = nn.Linear(cfg.d_model, cfg.upsample * cfg.d_model)
        self.layers = _stack(cfg, cfg.layers)
        self.drop = nn.Dropout(cfg.dropout)

    def frame_count(self, source_length: int) -> int:
        return self.cfg.upsample * int(source_length)

    def forward(self, sources, source_lengths):
        batch, tokens = sources.shape
        d, k = self.cfg.d_model, self.cfg.upsample
        x = self.embedding(sources) * math.sqrt(d) + sinusoids(tokens, d, sources.device)
        x = self._encode(self.source_layers, self.drop(x), source_lengths)
        x = self.split(x).reshape(batch, tokens * k, d)  # token t -> frames k*t .. k*t + k-1
        frame_lengths = source_lengths * k
        x = x + sinusoids(tokens * k, d, sources.device)
        return self._encode(self.layers, self.drop(x), frame_lengths), frame_lengths

    @staticmethod
    def _encode(layers, x, lengths):
        if layers is None:
            return x
        pad = torch.arange(x.shape[1], device=x.device)[None] >= lengths[:, None]
        return layers(x, src_key_padding_mask=pad)


def _stack(cfg: EncoderConfig, count: int):
    if count == 0:
        return None
    layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, cfg.ff_mult * cfg.d_model, cfg.dropout,
                                       batch_first=True, norm_first=True)
    # enable_nested_tensor off: the nested fast path changes padded outputs between train and eval
    return nn.TransformerEncoder(layer, count, norm=nn.LayerNorm(cfg.d_model), enable_nested_tensor=False)


class CTCTransformer(nn.Module):
    """The CTC-NAT model: forward(sources, source_lengths) -> (log_probs (batch, frames, classes), frame_lengths)."""

    needs_targets = False

    def __init__(self, source_size: int, num_classes: int, cfg: EncoderConfig):
        super().__init__()
        self.encoder = UpsampledEncoder(source_size, cfg)
        self.head = nn.Linear(cfg.d_model, num_classes)

    def frame_count(self, source_length: int) -> int:
        return self.encoder.frame_count(source_length)

    def forward(self, sources, source_lengths, targets=None, target_lengths=None):  # targets: the core's one call
        frames, frame_lengths = self.encoder(sources, source_lengths)
        return self.head(frames).log_softmax(-1), frame_lengths


def build_model(kind: str, cfg: dict, source_size: int, num_classes: int) -> nn.Module:
    """`kind` is student | conventional | oracle; `cfg` the preset's dict for it
    (the Oracle's: its decoder's OracleConfig keys and `encoder`, an EncoderConfig)."""
    from oracle_kd.config import from_dict

    if kind in ("student", "conventional"):
        return CTCTransformer(source_size, num_classes, from_dict(EncoderConfig, cfg))
    if kind == "oracle":
        encoder = UpsampledEncoder(source_size, from_dict(EncoderConfig, cfg.get("encoder", {})))
        return OracleTeacher(encoder, num_classes, from_dict(OracleConfig, {k: v for k, v in cfg.items() if k != "encoder"}))
    raise ValueError(f"unknown model kind {kind!r}: student, conventional or oracle")


def upsample_factor(model_cfg: dict) -> int:
    """k of any translation model config (an Oracle's is its encoder's)."""
    return int(model_cfg.get("encoder", model_cfg).get("upsample", EncoderConfig.upsample))
