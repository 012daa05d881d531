"""Layers the models share where torch's own is slow on the CPU.

Dropout: torch's CPU `bernoulli_` spends about 5 ns an element, so the dropout
layers took 11-12 % of a training step of the speech and translation teachers
(issue 16). Drawing 64 random bits per four elements and comparing 16-bit
chunks with a threshold gives the same layer, 2-3 times faster, on any device.

Depthwise convolution: oneDNN's weight gradient of a depthwise 1-D convolution
took 10 ms where the forward pass took 0.6 (a (32, 320, 111) batch, kernel
13): the speech models' depthwise layers, a thousandth of their FLOPs, took
a fifth of a teacher's training step. Their backward pass is two cheap
computations: the input gradient is the same convolution with the kernel
flipped, and the weight gradient is one product-sum per kernel tap.
"""

from __future__ import annotations

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
    words = -(-x.numel() // 4)  # 64-bit words, four 16-bit chunks each
    bits = torch.empty(words, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)  # all 64 bits
    chunks = bits.view(torch.int16)[: x.numel()].view(x.shape)  # uniform on [-32768, 32767]
    dropped = chunks < drops - (_LEVELS >> 1)
    return x.masked_fill(dropped, 0.0).mul_(_LEVELS / (_LEVELS - drops))


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


class DepthwiseConv1d(nn.Conv1d):
    """A depthwise, 'same'-padded `nn.Conv1d` (odd kernel, no bias: the same parameters and
    checkpoints), whose backward pass on the CPU is `_DepthwiseSame`'s when its stride is 1."""

    def __init__(self, channels: int, kernel: int, stride: int = 1, dilation: int = 1):
        if kernel % 2 == 0:
            raise ValueError(f"a 'same'-padded depthwise convolution needs an odd kernel, got {kernel}")
        super().__init__(channels, channels, kernel, stride=stride, padding=dilation * (kernel // 2),
                         dilation=dilation, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # elsewhere (GPUs, mixed precision, no gradient, a stride) torch's own path is used
        if (self.stride[0] == 1 and x.device.type == "cpu" and torch.is_grad_enabled()
                and not torch.is_autocast_enabled(x.device.type)):
            return _DepthwiseSame.apply(x, self.weight, self.dilation[0])
        return super().forward(x)


class _DepthwiseSame(torch.autograd.Function):
    """y[b, c, t] = sum_k w[c, k] x[b, c, t + d k - P], P = d (K - 1) / 2 (zeros outside)."""

    @staticmethod
    def forward(ctx, x, weight, dilation: int):
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        return F.conv1d(x, weight, padding=dilation * (weight.shape[-1] // 2), dilation=dilation, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        d, taps = ctx.dilation, weight.shape[-1]
        pad, frames = d * (taps // 2), x.shape[-1]
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:  # dx[s] = sum_k w[k] dy[s - d k + P]: the flipped kernel, the same padding
            grad_x = F.conv1d(grad, weight.flip(-1), padding=pad, dilation=d, groups=x.shape[1])
        if ctx.needs_input_grad[1]:  # dw[c, k] = sum over batch and time of dy[b, c, t] x[b, c, t + d k - P]
            padded = F.pad(x, (pad, pad))
            grad_weight = torch.stack([(grad * padded[:, :, k * d : k * d + frames]).sum((0, 2))
                                       for k in range(taps)], dim=1)[:, None, :]
        return grad_x, grad_weight, None
