"""`oracle-kd bench`: performance benchmarks (see run.py; BENCHMARKS.md is written from bench.json)."""

from oracle_kd.bench.batches import typical_batch
from oracle_kd.bench.run import run_bench

__all__ = ["run_bench", "typical_batch"]
