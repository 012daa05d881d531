"""How a case is measured: wall time round-robin, FLOPs and bytes counted, peak memory.

Everything here works on plain callables, so it can be checked on a tiny model
with numbers worked out by hand (tests/test_bench.py).
"""

from __future__ import annotations

import re
import statistics
import time
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


# A case of another engine (eager PyTorch, ONNX Runtime) than the case before it starts after this
# pause, untimed: torch's OpenMP threads spin for milliseconds after their work, and an ONNX Runtime
# call at 2 threads that followed an eager one 12 ms later took 7 or 14 ms by turns. A deployment
# runs one engine; the pause gives each the machine it would have there.
SETTLE_SECONDS = 0.05


def round_robin(cases: dict, repeats: int, warmup_rounds: int = 1, before=None,
                engines: dict[str, str] | None = None) -> dict[str, list[float]]:
    """Wall seconds of every call of every case, the cases run in turn (a, b, c, a, b, c, ...)
    so that all of them see the same machine load; `warmup_rounds` rounds first, not timed.
    `before(name)` runs untimed before each call (e.g. setting the thread count); a call of
    another engine than the call before it (`engines`: name -> engine) starts SETTLE_SECONDS later."""
    engines = engines or {}
    last = [None]

    def prepare(name):
        if before:
            before(name)
        if engines.get(name) != last[0]:
            time.sleep(SETTLE_SECONDS)
            last[0] = engines.get(name)

    for _ in range(warmup_rounds):
        for name, fn in cases.items():
            prepare(name)
            fn()
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            prepare(name)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def summary(seconds: list[float]) -> dict:
    """Median and spread of repeated timings: the interquartile range, and its share of the median."""
    q1, median, q3 = statistics.quantiles(seconds, n=4, method="inclusive") if len(seconds) > 1 else [seconds[0]] * 3
    return {"median_seconds": median, "spread": {"q1": q1, "q3": q3, "iqr": q3 - q1,
                                                 "iqr_over_median": (q3 - q1) / median if median else 0.0,
                                                 "min": min(seconds), "max": max(seconds), "n": len(seconds)}}


# --- operations counted -------------------------------------------------------------------------
# FlopCounterMode counts matmuls, convolutions and CUDA attention (2 FLOPs per multiply-add); the
# CPU kernels the models here also run are added below, so that their FLOPs are not silently 0,
# and grouped convolutions' gradients are counted with their groups.

def _rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kwargs) -> int:
    """One LSTM/GRU layer and direction (mkldnn kernel): every step of every sequence multiplies
    its input by W_ih (gates x in) and its state by W_hh (gates x hidden)."""
    steps = input_shape[0] * input_shape[1]  # time x batch, either layout
    return 2 * steps * (w_ih_shape[0] * w_ih_shape[1] + w_hh_shape[0] * w_hh_shape[1])


def _rnn_layer_backward_flop(input_shape, w_ih_shape, w_hh_shape, *args, out_shape=None, **kwargs) -> int:
    """Gradients of the inputs and of the weights: twice the forward multiply-adds."""
    return 2 * _rnn_layer_flop(input_shape, w_ih_shape, w_hh_shape)


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """The gradients of a convolution's input and of its weight each cost what its forward does.
    (torch's own formula counts a grouped convolution's weight gradient as a dense one: 64-320x
    too many FLOPs for the depthwise layers of the speech models.)"""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


CPU_FLOPS = {
    aten.convolution_backward: _conv_backward_flop,
    aten.mkldnn_rnn_layer: _rnn_layer_flop,
    aten.mkldnn_rnn_layer_backward: _rnn_layer_backward_flop,
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}


class BytesWritten(TorchDispatchMode):
    """Bytes of every tensor an operation returns (views excluded: they write nothing).
    Twice this (each result written once and read once) is a lower bound on the memory
    traffic of a working set larger than the caches; see `memory_bound_seconds`."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            self.bytes += sum(t.numel() * t.element_size() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        return out


def count(fn) -> dict:
    """FLOPs and bytes written by one call of `fn` (run once, untimed). Attention's fused
    inference path is turned off while counting, so that the same arithmetic is seen as matmuls."""
    with _mha_fastpath_off(), FlopCounterMode(display=False, custom_mapping=CPU_FLOPS) as flops, \
            BytesWritten() as written:
        fn()
    return {"flops": int(flops.get_total_flops()), "bytes_written": int(written.bytes)}


@contextmanager
def _mha_fastpath_off():
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


# --- memory -------------------------------------------------------------------------------------

def peak_rss_mb(fn) -> dict:
    """The process's peak resident memory during one call of `fn`, from Linux's VmHWM, which
    writing 5 to /proc/self/clear_refs resets to the current RSS just before the call. The peak
    includes what the process held before (`rss_before_mb`); `rss_growth_mb` is the call's own.
    None where the reset is not allowed (not Linux, or a locked-down /proc)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        fn()
        return {"peak_rss_mb": None, "rss_before_mb": None, "rss_growth_mb": None}
    before = _status_mb("VmRSS")
    fn()
    peak = _status_mb("VmHWM")
    return {"peak_rss_mb": round(peak, 1), "rss_before_mb": round(before, 1), "rss_growth_mb": round(peak - before, 1)}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1)) / 1024
