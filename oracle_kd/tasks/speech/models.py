"""Speech models: the QuartzNet family (Kriman et al., 2020) for students and
conventional teachers, and the Oracle Teacher's convolutional subsampling
source encoder. Every model divides the frame rate once, by its config's
`stride` (default 2: 10 ms feature frames -> 20 ms CTC frames), and says how
many frames it emits (`frame_count`); the presets give teachers and students
the same stride, so their frames line up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from oracle_kd.models.layers import BatchNorm1d, DepthwiseConv1d, PointwiseConv1d, ReLUDropout
from oracle_kd.models.oracle import OracleConfig, OracleTeacher
from oracle_kd.tasks.speech.audio import HOP_LENGTH, N_MELS, SAMPLE_RATE

HF_STREAM_CONTEXT_SECONDS = 4.0  # context each side of a streamed window for models with no finite receptive field


@dataclass
class QuartzNetConfig:
    prologue: list[int] = field(default_factory=lambda: [128, 33])  # channels, kernel; stride `stride`
    blocks: list[list[int]] = field(default_factory=lambda: [[128, 33], [128, 39], [192, 51], [192, 63], [192, 75]])
    block_repeat: int = 1  # S: how many times each block is repeated
    sub_blocks: int = 2  # R: separable conv sub-blocks per block
    epilogue: list[int] = field(default_factory=lambda: [256, 87])  # channels, kernel (dilation 2)
    head_channels: int = 384  # 1x1 conv before the CTC head
    dropout: float = 0.1
    stride: int = 2  # feature frames per CTC frame (the prologue's stride)


@dataclass
class SubsamplingConfig:
    channels: int = 192
    kernels: list[int] = field(default_factory=lambda: [11, 5])  # the first conv has stride `stride`
    stride: int = 2  # feature frames per CTC frame


def frame_stride(model_cfg: dict) -> int:
    """Feature frames per CTC frame of any speech model config: a QuartzNet's `stride`,
    an Oracle Teacher's `encoder.stride`, a Hugging Face model's samples per frame over HOP_LENGTH."""
    from oracle_kd.config import from_dict

    if "hf_config" in model_cfg:  # a Hugging Face model's (hf.py): the product of its convolutions' strides
        return max(1, math.prod(model_cfg["hf_config"].get("conv_stride", [HOP_LENGTH])) // HOP_LENGTH)
    oracle_keys = {f.name for f in fields(OracleConfig)} | {"encoder"}
    if oracle_keys & set(model_cfg):
        return from_dict(SubsamplingConfig, model_cfg.get("encoder")).stride
    return from_dict(QuartzNetConfig, model_cfg).stride


def receptive_field(model_cfg: dict) -> int:
    """Feature frames on each side of a CTC frame's centre (feature frame `stride * j`) that a
    QuartzNet of this config reads to compute frame j: half of each kernel, times its dilation,
    over every layer; the layers after the prologue count in CTC frames (`stride` feature frames)."""
    from oracle_kd.config import from_dict

    if "hf_config" in model_cfg:  # self-attention reads the whole input: no finite field, so a
        # streamed window of a Hugging Face model gets a fixed context, and its joined frames
        # approximate one pass (they are one pass for inputs shorter than a window)
        return int(HF_STREAM_CONTEXT_SECONDS * SAMPLE_RATE / HOP_LENGTH)
    cfg = from_dict(QuartzNetConfig, model_cfg)
    blocks = sum(kernel // 2 for _, kernel in cfg.blocks) * cfg.sub_blocks * cfg.block_repeat
    epilogue = 2 * (cfg.epilogue[1] // 2)  # dilation 2
    return cfg.stride * (blocks + epilogue) + cfg.prologue[1] // 2


def separable(cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Time-channel separable 1-D convolution of (batch, time, channels): depthwise over time,
    then pointwise over channels."""
    return nn.Sequential(
        DepthwiseConv1d(cin, kernel, stride=stride, dilation=dilation),
        PointwiseConv1d(cin, cout, bias=False),
        BatchNorm1d(cout),
    )


class JasperBlock(nn.Module):
    """R separable sub-blocks with a pointwise residual from the block input added before the last ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, sub_blocks: int, dropout: float):
        super().__init__()
        self.subs = nn.ModuleList(separable(cin if i == 0 else cout, cout, kernel) for i in range(sub_blocks))
        self.residual = nn.Sequential(PointwiseConv1d(cin, cout, bias=False), BatchNorm1d(cout))
        self.drop = ReLUDropout(dropout)

    def forward(self, x):
        h = x
        for i, sub in enumerate(self.subs):
            h = sub(h)
            if i == len(self.subs) - 1:
                h = h + self.residual(x)
            h = self.drop(h)
        return h


def conv_out_length(lengths, stride: int):
    """Frames after a 'same'-padded odd-kernel convolution with this stride: ceil(T / stride)
    (`lengths` an int or a tensor)."""
    return (lengths + stride - 1) // stride


class QuartzNet(nn.Module):
    """features (batch, frames, N_MELS) -> CTC log-probs (batch, ceil(frames / stride), classes).
    Every layer works on time-major (batch, frames, channels) tensors (models/layers.py: the
    CPU's fast layout); the parameters are those of the channels-first QuartzNet's `nn.Conv1d`s."""

    needs_targets = False

    def __init__(self, num_classes: int, cfg: QuartzNetConfig):
        super().__init__()
        c, k = cfg.prologue
        self.stride = cfg.stride
        layers = [separable(N_MELS, c, k, stride=cfg.stride), nn.ReLU()]
        for channels, kernel in cfg.blocks:
            for _ in range(cfg.block_repeat):
                layers.append(JasperBlock(c, channels, kernel, cfg.sub_blocks, cfg.dropout))
                c = channels
        ec, ek = cfg.epilogue
        layers += [separable(c, ec, ek, dilation=2), nn.ReLU(),
                   PointwiseConv1d(ec, cfg.head_channels)]
        self.body = nn.Sequential(*layers)
        self.drop = ReLUDropout(cfg.dropout)  # the ReLU after the body, then dropout
        self.head = PointwiseConv1d(cfg.head_channels, num_classes)

    def frame_count(self, source_length: int) -> int:
        """CTC frames for `source_length` feature frames."""
        return conv_out_length(source_length, self.stride)

    def forward(self, sources, source_lengths, targets=None, target_lengths=None):
        if torch.onnx.is_in_onnx_export():  # the layers on (batch, channels, 1, time) images (models/layers.py:
            # ONNX Runtime chains the convolutions without reordering), time-major again for the softmax
            logits = self.head(self.drop(self.body(sources.transpose(1, 2).unsqueeze(2)))).squeeze(2).transpose(1, 2)
        else:
            logits = self.head(self.drop(self.body(sources)))
        return logits.log_softmax(-1), conv_out_length(source_lengths, self.stride)


class ConvSubsampling(nn.Module):
    """The Oracle Teacher's source encoder: 1-D convolutions over log-mel frames, the first with stride `stride`."""

    def __init__(self, cfg: SubsamplingConfig):
        super().__init__()
        self.stride = cfg.stride
        layers, cin = [], N_MELS
        for i, kernel in enumerate(cfg.kernels):
            layers += [nn.Conv1d(cin, cfg.channels, kernel, stride=cfg.stride if i == 0 else 1, padding=kernel // 2),
                       nn.BatchNorm1d(cfg.channels), nn.ReLU()]
            cin = cfg.channels
        self.body = nn.Sequential(*layers)
        self.out_dim = cfg.channels

    def frame_count(self, source_length: int) -> int:
        """CTC frames for `source_length` feature frames."""
        return conv_out_length(source_length, self.stride)

    def forward(self, sources, source_lengths):
        return self.body(sources.transpose(1, 2)).transpose(1, 2), conv_out_length(source_lengths, self.stride)


def build_model(kind: str, cfg: dict, num_classes: int) -> nn.Module:
    """`kind` is student | conventional | oracle; `cfg` the preset's dict for it. Or `custom`: a
    Hugging Face model trained by `distil`, from the config its checkpoint keeps (hf.py)."""
    from oracle_kd.config import from_dict

    if kind == "custom":
        from oracle_kd.tasks.speech.hf import rebuild

        return rebuild(cfg, num_classes)
    if kind in ("student", "conventional"):
        return QuartzNet(num_classes, from_dict(QuartzNetConfig, cfg))
    if kind == "oracle":
        encoder = ConvSubsampling(from_dict(SubsamplingConfig, cfg.get("encoder", {})))
        return OracleTeacher(encoder, num_classes, from_dict(OracleConfig, {k: v for k, v in cfg.items() if k != "encoder"}))
    raise ValueError(f"unknown model kind {kind!r}: student, conventional or oracle")
