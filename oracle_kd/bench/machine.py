"""The machine's limits, measured as cases among the others (so under the same load):
an fp32 matrix multiply (compute) and a large tensor copy (memory bandwidth)."""

from __future__ import annotations

import torch

MATMUL_SIZE = 1024  # square fp32 matrices: 4 MB each, large enough for the BLAS kernel's best speed
MATMULS_PER_CALL = 4  # a call lasts a few tenths of a second on 2 cores
COPY_BYTES = 256 << 20  # far past every cache level, so the copy streams through DRAM


def matmul_case(size: int = MATMUL_SIZE, per_call: int = MATMULS_PER_CALL):
    """(fn, flops per call): `per_call` products of two size x size fp32 matrices."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)

    def fn():
        for _ in range(per_call):
            torch.mm(a, b, out=out)

    return fn, 2 * size**3 * per_call


def copy_case(nbytes: int = COPY_BYTES):
    """(fn, bytes moved per call): one tensor copied into another, read once and written once."""
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2 * src.numel() * 4
