"""Scene text models: a CNN that turns a text image into column frames, the
CRNN family (CNN + BiLSTM + CTC) for students and conventional teachers, and
the Oracle Teacher's image source encoder.

Every model downsamples width by the product of its width pools
(`width_stride`) and says how many frames it emits (`frame_count`); the
presets give teachers and students the same pools, so their frames line up
one to one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from oracle_kd.models.layers import Dropout
from oracle_kd.models.oracle import OracleConfig, OracleTeacher


@dataclass
class ConvConfig:
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 96, 128])
    pools: list[str] = field(default_factory=lambda: ["2x2", "2x2", "2x1", "2x1", "1x1"])  # height x width
    blocks: int = 1  # conv layers (plain) or basic blocks (residual) per stage
    residual: bool = False  # ResNet-style basic blocks


@dataclass
class CRNNConfig:
    cnn: ConvConfig = field(default_factory=ConvConfig)
    rnn_hidden: int = 128  # per direction
    rnn_layers: int = 2
    dropout: float = 0.1


def width_stride(cfg: ConvConfig) -> int:
    """Pixels of width per output frame: the product of the width pools."""
    stride = 1
    for pool in cfg.pools:
        stride *= int(pool.split("x")[1])
    return stride


def conv_config(model_cfg: dict) -> ConvConfig:
    """The CNN of any scene-text model config: a CRNN's `cnn`, an Oracle Teacher's `encoder`."""
    from oracle_kd.config import from_dict

    return from_dict(ConvConfig, model_cfg.get("encoder", model_cfg.get("cnn")))


def frame_count(cfg: ConvConfig, width: int) -> int:
    """Frames a CNN of config `cfg` emits for an image `width` pixels wide: the pools
    floor at every stage, and nested floors of integer divisions are one floor."""
    return width // width_stride(cfg)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection (He et al., 2016)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = nn.Identity() if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def conv_layer(cin: int, cout: int, residual: bool) -> nn.Module:
    if residual:
        return BasicBlock(cin, cout)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ConvFrames(nn.Module):
    """(batch, 1, H, W) image -> (batch, W / stride, channels[-1]) column frames."""

    def __init__(self, cfg: ConvConfig):
        super().__init__()
        layers, cin = [], 1
        for cout, pool in zip(cfg.channels, cfg.pools):
            for _ in range(cfg.blocks):
                layers.append(conv_layer(cin, cout, cfg.residual))
                cin = cout
            ph, pw = (int(v) for v in pool.split("x"))
            if (ph, pw) != (1, 1):
                layers.append(nn.MaxPool2d((ph, pw), (ph, pw)))
        self.body = nn.Sequential(*layers)
        self.cfg = cfg
        self.out_dim = cin

    def frame_count(self, source_length: int) -> int:
        return frame_count(self.cfg, source_length)

    def forward(self, images, image_widths):
        feats = self.body(images).mean(dim=2)  # average the remaining height: (batch, C, frames)
        return feats.transpose(1, 2), frame_count(self.cfg, image_widths)


class CRNN(nn.Module):
    """Student and conventional teacher: CNN columns -> BiLSTM -> linear CTC head."""

    needs_targets = False

    def __init__(self, num_classes: int, cfg: CRNNConfig):
        super().__init__()
        self.cnn = ConvFrames(cfg.cnn)
        self.rnn = nn.LSTM(
            self.cnn.out_dim, cfg.rnn_hidden, num_layers=cfg.rnn_layers, bidirectional=True,
            batch_first=True, dropout=cfg.dropout if cfg.rnn_layers > 1 else 0.0,
        )
        self.drop = Dropout(cfg.dropout)
        self.head = nn.Linear(2 * cfg.rnn_hidden, num_classes)

    def frame_count(self, source_length: int) -> int:
        """Frames emitted for an image `source_length` pixels wide."""
        return self.cnn.frame_count(source_length)

    def forward(self, sources, source_lengths, targets=None, target_lengths=None):
        frames, frame_lengths = self.cnn(sources, source_lengths)
        # every image has the full width, so no packing is needed
        frames, _ = self.rnn(frames)
        return self.head(self.drop(frames)).log_softmax(-1), frame_lengths


def build_model(kind: str, cfg: dict, num_classes: int) -> nn.Module:
    """`kind` is student | conventional | oracle; `cfg` the preset's dict for it."""
    from oracle_kd.config import from_dict

    if kind in ("student", "conventional"):
        return CRNN(num_classes, from_dict(CRNNConfig, cfg))
    if kind == "oracle":
        encoder = ConvFrames(from_dict(ConvConfig, cfg.get("encoder", {})))
        return OracleTeacher(encoder, num_classes, from_dict(OracleConfig, {k: v for k, v in cfg.items() if k != "encoder"}))
    raise ValueError(f"unknown model kind {kind!r}: student, conventional or oracle")
