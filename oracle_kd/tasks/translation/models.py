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

from oracle_kd.models.layers import Dropout
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
        self.source_layers = LayerStack(cfg, cfg.source_layers)
        self.split = nn.Linear(cfg.d_model, cfg.upsample * cfg.d_model)
        self.layers = LayerStack(cfg, cfg.layers)
        self.drop = Dropout(cfg.dropout)

    def frame_count(self, source_length: int) -> int:
        return self.cfg.upsample * int(source_length)

    def forward(self, sources, source_lengths):
        batch, tokens = sources.shape
        d, k = self.cfg.d_model, self.cfg.upsample
        x = self.embedding(sources) * math.sqrt(d) + sinusoids(tokens, d, sources.device)
        x = self.source_layers(self.drop(x), source_lengths)
        x = self.split(x).reshape(batch, -1, d)  # token t -> frames k*t .. k*t + k-1
        frame_lengths = source_lengths * k
        x = x + sinusoids(x.shape[1], d, sources.device)
        return self.layers(self.drop(x), frame_lengths), frame_lengths


class EncoderLayer(nn.Module):
    """Pre-norm Transformer encoder layer (Vaswani et al., 2017; Xiong et al., 2020).

    Written out rather than nn.TransformerEncoderLayer: traced for ONNX, that layer's
    attention keeps the example's sequence length as a constant, so an exported model
    would refuse every other length."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.d_model % cfg.heads:
            raise ValueError(f"d_model {cfg.d_model} is not a multiple of heads {cfg.heads}")
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.attn_norm, self.ff_norm = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.ff = nn.Sequential(nn.Linear(cfg.d_model, cfg.ff_mult * cfg.d_model), nn.ReLU(), Dropout(cfg.dropout),
                                nn.Linear(cfg.ff_mult * cfg.d_model, cfg.d_model))
        self.drop = Dropout(cfg.dropout)

    def forward(self, x, pad):
        """x (batch, length, d_model); pad (batch, length), True at padding (never a whole row)."""
        batch, d = x.shape[0], x.shape[2]
        h = self.attn_norm(x)
        if torch.onnx.is_in_onnx_export():  # ONNX's Attention operator (opset 23) splits the heads itself,
            # so the graph has no transposes of them, and q, k, v are three products (no split of one):
            # ONNX Runtime 0.93 -> 1.18x eager's speed at 2 threads. It wants the mask's query axis in full.
            weights, biases = self.qkv.weight.split(d), self.qkv.bias.split(d)
            q, k, v = (nn.functional.linear(h, w, b) for w, b in zip(weights, biases))
            mask = (~pad[:, None, None, :]).expand(-1, -1, x.shape[1], -1)
            attended = torch.onnx.ops.attention(q, k, v, attn_mask=mask, q_num_heads=self.heads,
                                                kv_num_heads=self.heads)[0]
        else:
            q, k, v = self.qkv(h).reshape(batch, -1, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            attended = nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=~pad[:, None, None, :], dropout_p=self.dropout if self.training else 0.0)
            attended = attended.transpose(1, 2).reshape(batch, -1, d)
        x = x + self.drop(self.out(attended))
        return x + self.drop(self.ff(self.ff_norm(x)))


class LayerStack(nn.Module):
    """`count` pre-norm encoder layers and the stack's final LayerNorm (none if count is 0)."""

    def __init__(self, cfg: EncoderConfig, count: int):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(count))
        self.norm = nn.LayerNorm(cfg.d_model) if count else nn.Identity()

    def forward(self, x, lengths):
        pad = torch.arange(x.shape[1], device=x.device)[None] >= lengths[:, None]
        for layer in self.layers:
            x = layer(x, pad)
        return self.norm(x)


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
