"""pytest-benchmark suite over the shapes of docs/performance.md §9: `pytest benchmarks/ --benchmark-group-by=group`.

The comparison table with interleaved repeats and GEMM share is `python -m fastrnn bench`; this
suite gives pytest-benchmark's statistics for the same passes (float32, forward+backward).
"""
import pytest

import fastrnn
from fastrnn.tools.bench import _torch_pass
from fastrnn.tools.bench_core import SHAPES, _fastrnn_pass, bench_lengths

BACKENDS = fastrnn.available_backends()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_backward(benchmark, backend, cell, shape):
    benchmark.group = f"{cell} {shape}"
    benchmark(_fastrnn_pass(cell, shape, backend, "forward+backward"))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_backward_lengths(benchmark, backend, cell, shape):
    """The same pass with lengths uniform in [T/10, T] (bench_lengths), beside the padded one."""
    benchmark.group = f"{cell} {shape}"
    benchmark(_fastrnn_pass(cell, shape, backend, "forward+backward", lengths=bench_lengths(shape)))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_forward_backward_torch(benchmark, cell, shape):
    torch = pytest.importorskip("torch")
    benchmark.group = f"{cell} {shape}"
    benchmark(_torch_pass(torch, cell, shape, "forward+backward"))
