"""pytest-benchmark counterpart of `python -m fastrnn bench --train`:
`pytest benchmarks/test_train_bench.py --benchmark-group-by=group` (not part of the test command:
pyproject's testpaths is tests/).

One char-LM training step (Embedding -> LSTM/GRU stack -> Linear -> softmax_cross_entropy ->
backward -> clip_grad_norm -> Adam, see fastrnn/tools/bench_train.py) per model and contender, at
the BLAS's default threads and at 1 thread; torch runs the same model from the same weights. The
interleaved side-by-side table with ratios and the outside-the-layer share is `bench --train`.
"""
import pytest

import fastrnn
from fastrnn.tools.bench_core import blas_threads
from fastrnn.tools.bench_train import MODELS, make_steps, thread_setting

CONTENDERS = [*fastrnn.available_backends(), "torch"]


def model_id(model):
    cell, layers, steps, batch, hidden = model
    return f"{cell}{layers}x{hidden}-T{steps}-B{batch}"


@pytest.mark.parametrize("threads", [None, 1], ids=["default-threads", "1-thread"])
@pytest.mark.parametrize("model", MODELS, ids=model_id)
@pytest.mark.parametrize("contender", CONTENDERS)
def test_training_step(benchmark, contender, model, threads):
    torch = pytest.importorskip("torch") if contender == "torch" else None
    if torch is not None:
        torch.set_num_threads(blas_threads())
    step = make_steps(model, [contender], torch)[contender]
    benchmark.group = f"train {model_id(model)} {'default threads' if threads is None else '1 thread'}"
    with thread_setting(threads, torch):
        benchmark(step)
