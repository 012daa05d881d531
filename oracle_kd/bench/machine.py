"""The machine's limits, measured as cases among the others (so under the same load):
an fp32 matrix multiply (compute) and a large tensor copy (memory bandwidth).

The matrix product is timed through both of PyTorch's CPU libraries, BLAS (`torch.mm`)
and oneDNN (a 1x1 convolution), and the peak is the faster: they do not reach the same
speed on every CPU (on AMD EPYC here, MKL's sgemm ran at half the speed of oneDNN's
AVX-512 kernels, so the models' convolutions and LSTMs came out above a BLAS-only peak)."""

from __future__ import annotations

import torch

MATMUL_SIZE = 1024  # square fp32 matrices: 4 MB each, large enough for the BLAS kernel's best speed
MATMULS_PER_CALL = 4  # a call lasts a few tenths of a second on 2 cores
CONV_CHANNELS, CONV_SIZE = 1024, 32  # a 1x1 convolution: a (1024 x 1024) by (1024 x 1024) product
COPY_BYTES = 256 << 20  # far past every cache level, so the copy streams through DRAM


def matmul_case(size: int = MATMUL_SIZE, per_call: int = MATMULS_PER_CALL):
    """(fn, flops per call): `per_call` products of two size x size fp32 matrices."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)

    def fn():
        for _ in range(per_call):
            torch.mm(a, b, out=out)

    return fn, 2 * size**3 * per_call


def conv_case(channels: int = CONV_CHANNELS, size: int = CONV_SIZE, per_call: int = MATMULS_PER_CALL):
    """(fn, flops per call): `per_call` 1x1 convolutions of `channels` channels over size x size
    positions, the same matrix product as `matmul_case` through the convolution library."""
    x, w = torch.randn(1, channels, size, size), torch.randn(channels, channels, 1, 1)

    @torch.no_grad()
    def fn():
        for _ in range(per_call):
            torch.nn.functional.conv2d(x, w)

    return fn, 2 * channels * channels * size * size * per_call


def copy_case(nbytes: int = COPY_BYTES):
    """(fn, bytes moved per call): one tensor copied into another, read once and written once."""
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2 * src.numel() * 4
