"""Layers the models share where torch's own is slow on the CPU.

Dropout: torch's CPU `bernoulli_` spends about 5 ns an element, so the dropout
layers took 11-12 % of a training step of the speech and translation teachers
(issue 16). Drawing 64 random bits per four elements and comparing 16-bit
chunks with a threshold gives the same layer, 2-3 times faster, on any device.

Time-major convolutions: a 1-D convolution net over (batch, channels, time)
tensors, as the speech models were, spends most of its step outside its matrix
products on the CPU: oneDNN reorders every pointwise convolution's input and
output, and its depthwise kernels are several times slower on that layout than
on channels-last. Kept as (batch, time, channels), a pointwise convolution is
one matrix product (`F.linear`), a depthwise one runs on oneDNN's channels-last
kernels, and batch norm normalises rows: the speech teacher's training step
took 0.65 of the time (issue 16). The layers keep `nn.Conv1d`'s and
`nn.BatchNorm1d`'s parameters, initialisation and checkpoint keys.

Images: the same layers also take (batch, channels, 1, time) tensors, the
layout of exported graphs. ONNX Runtime runs a chain of 2-D convolutions in its
blocked channel layout without reordering between them, while a time-major
graph gave it a matrix product, a bias add and a transposed convolution per
layer: the speech student's layers took 23 ms of its inference instead of 13.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_BITS = 16  # one random 16-bit chunk per element: p is rounded to a multiple of 1/65536
_LEVELS = 1 << CHUNK_BITS


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: in training, each element is zeroed with probability `p` (rounded to
    a multiple of 2**-16) and the others are scaled by 1 / (1 - that probability). Draws from
    torch's default generator on `x`'s device, so a seed fixes it."""
    drops = _drops(p)
    if not training or drops == 0:
        return x
    if drops == _LEVELS:
        return x * 0.0
    return x.masked_fill(_dropped(x, drops), 0.0).mul_(_LEVELS / (_LEVELS - drops))


def relu_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`dropout(torch.relu(x), p, training)`, the same numbers from the same random draws, in
    fewer passes over memory: the backward pass reads the output alone (an element passes its
    gradient, scaled, where the output is positive). 1.4 times faster on the CPU."""
    drops = _drops(p)
    if not training or drops == 0:
        return torch.relu(x)
    if drops == _LEVELS:
        return torch.relu(x) * 0.0
    return _ReLUDropout.apply(x, drops)


class _ReLUDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, drops: int):
        scale = _LEVELS / (_LEVELS - drops)
        y = torch.relu(x).masked_fill_(_dropped(x, drops), 0.0).mul_(scale)
        ctx.save_for_backward(y)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, y, 0.0).mul_(ctx.scale), None


def _dropped(x: torch.Tensor, drops: int) -> torch.Tensor:
    """Where to drop, in `x`'s shape: each element's 16-bit random chunk is among the `drops`
    lowest of the 2**16 values."""
    words = -(-x.numel() // 4)  # 64-bit words, four 16-bit chunks each
    bits = torch.empty(words, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)  # all 64 bits
    chunks = bits.view(torch.int16)[: x.numel()].view(x.shape)  # uniform on [-32768, 32767]
    return chunks < drops - (_LEVELS >> 1)


def _drops(p: float) -> int:
    """How many of the 2**16 chunk values drop an element at probability `p`."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    return round(p * _LEVELS)


class Dropout(nn.Module):
    """`nn.Dropout` with `dropout` above (same checkpoints: no parameters or buffers)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        _drops(p)  # a bad probability fails when the model is built, not in its first step
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ReLUDropout(Dropout):
    """A ReLU followed by `Dropout`, computed by `relu_dropout` (same checkpoints: no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_dropout(x, self.p, self.training)


class DepthwiseConv1d(nn.Conv1d):
    """A depthwise, 'same'-padded convolution over time (odd kernel, no bias) of time-major
    inputs: (batch, time, channels) -> (batch, ceil(time / stride), channels). The parameters
    and checkpoints of `nn.Conv1d(channels, channels, kernel, groups=channels, bias=False)`."""

    def __init__(self, channels: int, kernel: int, stride: int = 1, dilation: int = 1):
        if kernel % 2 == 0:
            raise ValueError(f"a 'same'-padded depthwise convolution needs an odd kernel, got {kernel}")
        if stride > 1 and dilation > 1:
            raise ValueError(f"a depthwise convolution takes a stride or a dilation, not both ({stride}, {dilation})")
        super().__init__(channels, channels, kernel, stride=stride, padding=dilation * (kernel // 2),
                         dilation=dilation, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # an image (batch, channels, 1, time)
            return self._image(x)
        batch, frames, channels = x.shape
        if self.dilation[0] == 1 or torch.jit.is_tracing():  # (batch, time, channels): a channels-last (batch,
            # channels, 1, time) image; a traced graph keeps the dilation (the phases below need the length as a number)
            return self._image(x.transpose(1, 2).unsqueeze(2)).squeeze(2).transpose(1, 2)
        half, d = self.kernel_size[0] // 2, self.dilation[0]
        # dilation d: the d interleaved phases of the sequence, each convolved without dilation
        # (oneDNN's dilated depthwise kernel is 2.5 times slower); time padded to a multiple of d
        # with zeros, which 'same' padding would have read anyway
        padded = -(-frames // d) * d
        if padded != frames:
            x = F.pad(x, (0, 0, 0, padded - frames))
        phases = x.view(batch, padded // d, d, channels).permute(0, 3, 1, 2)  # channels-last (b, c, t/d, d)
        y = F.conv2d(phases, self.weight.view(channels, 1, -1, 1), padding=(half, 0), groups=channels)
        return y.permute(0, 2, 3, 1).reshape(batch, padded, channels)[:, :frames]

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        # a view, not unsqueeze: the weight's gradient then has the weight's strides (DDP's buckets
        # expect them; with unsqueeze's, DDP warned and copied the gradient every step)
        return F.conv2d(x, self.weight.view(self.groups, 1, 1, -1), stride=(1, self.stride[0]),
                        padding=(0, self.padding[0]), dilation=(1, self.dilation[0]), groups=self.groups)


class PointwiseConv1d(nn.Conv1d):
    """A 1x1 convolution of time-major inputs, (batch, time, in) -> (batch, time, out): one
    matrix product (of an image (batch, in, 1, time): a 1x1 convolution). The parameters and
    checkpoints of `nn.Conv1d(in, out, 1, bias=bias)`."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return F.conv2d(x, self.weight.unsqueeze(3), self.bias)
        return F.linear(x, self.weight.squeeze(-1), self.bias)


class BatchNorm1d(nn.BatchNorm1d):
    """`nn.BatchNorm1d` over the channels of time-major inputs (batch, time, channels): the
    statistics of every (example, frame) row, as the channels-first layer computes them
    (and over dim 1 of an image (batch, channels, 1, time))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # (batch, channels, 1, time): nn.BatchNorm1d's own layout, less the 1
            return super().forward(x.squeeze(2)).unsqueeze(2)
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """An inference copy of `model` (in eval mode) in which every `BatchNorm1d` that follows a
    `PointwiseConv1d` in an `nn.Sequential` is merged into it: at inference batch norm is a
    per-channel affine map, so the pair is one matrix product with a bias. For deployment
    graphs (ONNX Runtime fuses a convolution with its batch norm, not a matrix product)."""
    model = copy.deepcopy(model).eval()
    for sequence in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(sequence) - 1):
            conv, norm = sequence[i], sequence[i + 1]
            if not (isinstance(conv, PointwiseConv1d) and isinstance(norm, BatchNorm1d)
                    and norm.running_mean is not None):
                continue
            with torch.no_grad():
                scale = torch.rsqrt(norm.running_var + norm.eps)
                if norm.affine:
                    scale = scale * norm.weight
                shift = -norm.running_mean * scale + (norm.bias if norm.affine else 0.0)
                merged = PointwiseConv1d(conv.in_channels, conv.out_channels).to(conv.weight)
                merged.weight.copy_(conv.weight * scale[:, None, None])
                merged.bias.copy_(shift if conv.bias is None else conv.bias * scale + shift)
            sequence[i], sequence[i + 1] = merged, nn.Identity()
    return model
