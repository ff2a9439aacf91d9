"""`python -m fastrnn bench --train`: one char-LM training step end to end, as a user's loop runs it.

The step is charlm's: Embedding(96 -> 64) -> LSTM/GRU stack (64 -> H) -> Linear(H -> 96) ->
softmax_cross_entropy -> backward -> clip_grad_norm(5) -> Adam(lr=1e-3), float32, from a zero
state, on (T, B) random character indices (four batches taken in turn). Zeroing the gradients is
part of the step. torch runs the same model (nn.Embedding, nn.LSTM/GRU, nn.Linear, cross_entropy,
clip_grad_norm_, optim.Adam) from the same initial weights: fastrnn's are copied into torch's
modules under their common state_dict names, so the first step's losses agree (kept in --json).

The share of the cython step spent outside the recurrent layer comes from timing the layer's
forward and backward calls inside each step (perf_counter around the two calls): outside share =
1 - layer time / step time, per round, median over rounds.
"""
import argparse
import contextlib
import math
from time import perf_counter

import numpy as np

import fastrnn
from ..optim import Adam, merge
from .bench_core import (blas_threads, gemm_rate, import_peer, key_figure, matmul_flops, measure, percent, print_header,
                    print_table_header, settings, table_row)

VOCAB = 96
EMBED = 64
CLIP = 5.0
LEARNING_RATE = 1e-3
BATCHES = 4
RECURRENT = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
# (cell, layers, T, B, H): from tiny to two layers of 512, with the four models of issue 8's table.
MODELS = [("lstm", 1, 40, 16, 32), ("lstm", 1, 64, 32, 128), ("gru", 1, 64, 32, 128),
          ("lstm", 2, 100, 32, 256), ("lstm", 1, 50, 64, 512), ("lstm", 2, 50, 64, 512)]


def model_list(text):
    """argparse type: semicolon-separated CELL,LAYERS,T,B,H models, CELL lstm or gru."""
    models = []
    for item in (item.strip() for item in text.split(";") if item.strip()):
        cell, *sizes = [value.strip().lower() for value in item.split(",")]
        try:
            sizes = [int(value) for value in sizes]
        except ValueError:
            sizes = []
        if cell not in RECURRENT or len(sizes) != 4 or min(sizes) < 1:
            raise argparse.ArgumentTypeError(
                f"expected CELL,LAYERS,T,B,H[;...] with CELL lstm or gru and positive integers, got {text!r}")
        models.append((cell, *sizes))
    if not models:
        raise argparse.ArgumentTypeError(f"expected at least one CELL,LAYERS,T,B,H model, got {text!r}")
    return models


def char_batches(model, seed):
    """BATCHES pairs of (inputs, targets), int64 arrays (T, B) of character indices."""
    _, _, steps, batch, _ = model
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, VOCAB, (steps, batch)), rng.integers(0, VOCAB, (steps, batch)))
            for _ in range(BATCHES)]


class FastrnnStep:
    """One training step of the char-LM in fastrnn; a call returns the seconds spent in the
    recurrent layer's forward and backward calls. `losses` keeps every step's loss."""

    def __init__(self, model, backend, seed=0):
        cell, layers, _, _, hidden = model
        rng = np.random.default_rng(seed)
        self.embed = fastrnn.Embedding(VOCAB, EMBED, seed=rng)
        self.rnn = RECURRENT[cell](EMBED, hidden, layers, backend=backend, seed=rng)
        self.head = fastrnn.Linear(hidden, VOCAB, seed=rng)
        self.modules = {"embed": self.embed, "rnn": self.rnn, "head": self.head}
        self.params = merge(**{name: module.params for name, module in self.modules.items()})
        self.grads = merge(**{name: module.grads for name, module in self.modules.items()})
        self.optimizer = Adam(LEARNING_RATE)
        self.batches = char_batches(model, seed)
        self.losses = []

    def __call__(self):
        inputs, targets = self.batches[len(self.losses) % BATCHES]
        for module in self.modules.values():
            module.zero_grad()
        x = self.embed(inputs)
        start = perf_counter()
        y, _ = self.rnn(x)
        layer_seconds = perf_counter() - start
        logits = self.head(y)
        loss, dlogits = fastrnn.losses.softmax_cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        dy = self.head.backward(dlogits.reshape(logits.shape))
        start = perf_counter()
        dx, _ = self.rnn.backward(dy)
        layer_seconds += perf_counter() - start
        self.embed.backward(dx)
        fastrnn.clip_grad_norm(self.grads, CLIP)
        self.optimizer.step(self.params, self.grads)
        self.losses.append(loss)
        return layer_seconds


class TorchStep:
    """The same step in torch, from the weights of the FastrnnStep `source` and on its batches."""

    def __init__(self, torch, model, source):
        cell, layers, _, _, hidden = model
        nn = torch.nn
        self.torch = torch
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell](EMBED, hidden, layers)
        self.head = nn.Linear(hidden, VOCAB)
        for module, origin in ((self.embed, source.embed), (self.rnn, source.rnn), (self.head, source.head)):
            module.load_state_dict({name: torch.from_numpy(array) for name, array in origin.state_dict().items()})
        self.parameters = [p for module in (self.embed, self.rnn, self.head) for p in module.parameters()]
        self.optimizer = torch.optim.Adam(self.parameters, lr=LEARNING_RATE)
        self.batches = [(torch.from_numpy(inputs), torch.from_numpy(targets)) for inputs, targets in source.batches]
        self.losses = []

    def __call__(self):
        inputs, targets = self.batches[len(self.losses) % BATCHES]
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.head(self.rnn(self.embed(inputs))[0])
        loss = self.torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.parameters, CLIP)
        self.optimizer.step()
        self.losses.append(loss.item())


def make_steps(model, contenders, torch=None, seed=0):
    """{contender: step} for contenders among "cython", "reference" and "torch" (torch needs the
    module `torch`; it copies the weights of a fastrnn step of the same seed)."""
    steps = {name: FastrnnStep(model, name, seed) for name in contenders if name != "torch"}
    if "torch" in contenders:
        source = next(iter(steps.values()), None) or FastrnnStep(model, "reference", seed)
        steps["torch"] = TorchStep(torch, model, source)
    return steps


def step_flops(model):
    """FLOPs of the matrix products of one step: the recurrent layers' (see bench.matmul_flops) and
    the head's (forward, dx and dW: 3 products of 2·T·B·H·V)."""
    cell, layers, steps, batch, hidden = model
    flops = sum(matmul_flops(cell, (steps, batch, EMBED if layer == 0 else hidden, hidden), "forward+backward")
                for layer in range(layers))
    return flops + 3 * 2.0 * steps * batch * hidden * VOCAB


@contextlib.contextmanager
def thread_setting(threads, torch):
    """Run the block with every thread pool threadpoolctl finds (the BLAS libraries, OpenMP: so
    fastrnn's kernels too) and torch limited to `threads`; None leaves them as they are."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=threads):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(previous)


def run_train(args):
    """The training-step table; returns the JSON summary."""
    rounds, budget, _ = settings(args)
    models = args.models or MODELS
    torch = import_peer("torch", args.no_torch)
    default_threads = blas_threads()
    if torch is not None:
        torch.set_num_threads(default_threads)
    contenders = [name for name in ("cython", "reference") if name in fastrnn.available_backends()
                  and not (name == "reference" and args.no_reference)]
    contenders += ["torch"] if torch is not None else []
    print_header(" --train", rounds, torch)
    print(f"step: Embedding({VOCAB}, {EMBED}) -> CELL x LAYERS (H) -> Linear(H, {VOCAB}) -> "
          "softmax_cross_entropy -> backward")
    print(f"  -> clip_grad_norm({CLIP:g}) -> Adam, T steps of B sequences; torch: the same model, same weights")
    print("times in ms per step; x PEER: PEER's time over cython's; outside: the share of the cython step")
    print("outside the recurrent layer (its forward and backward timed inside the step); GEMM %: the")
    print("step's matrix-product FLOPs over NumPy's sgemm rate at the same thread count")
    columns = train_columns(contenders)
    print_table_header(columns)
    steps_rows, results = [], []
    rates, counts = {}, {}  # thread count -> setting, so that a limit equal to the default runs once
    for threads in args.threads:
        counts.setdefault(threads or default_threads, threads)
    for count, threads in counts.items():
        with thread_setting(threads, torch):
            rates[count] = rate = gemm_rate()
            for model in models:
                row = measure_model(model, contenders, torch, rounds, budget, count, steps_rows)
                if "cython_ms" in row:
                    row["gemm_share"] = step_flops(model) / (row["cython_ms"] / 1e3) / rate
                results.append(row)
                print(table_row(columns, row), flush=True)
    for count, rate in rates.items():
        print(f"NumPy sgemm rate (2048^3) at {count} thread(s): {rate / 1e9:.1f} GFLOP/s")
    geomeans = geometric_means(results)
    for count, value in geomeans.items():
        print(f"geometric mean, torch's time over cython's, {count} thread(s): {value:.2f}x")
    return {"gemm_rate_flops": {str(count): rate for count, rate in rates.items()}, "rounds": rounds,
            "vocab": VOCAB, "embed": EMBED,
            "torch": getattr(torch, "__version__", None), "steps": steps_rows, "results": results,
            "geomean_vs_torch": {str(count): value for count, value in geomeans.items()}}


def measure_model(model, contenders, torch, rounds, budget, threads, steps_rows):
    """Time one model's step for every contender; appends one row per contender to `steps_rows`
    and returns the model's row (times, ratios and outside shares)."""
    cell, layers, steps, batch, hidden = model
    key = {"cell": cell, "layers": layers, "T": steps, "B": batch, "H": hidden, "threads": threads}
    passes = make_steps(model, contenders, torch)
    inner = {}
    medians = measure(passes, rounds, budget, inner)
    row = dict(key)
    for name, values in medians.items():
        entry = dict(key, contender=name, ms=1e3 * float(np.median(values)), spread=max(values) / min(values),
                     rounds_ms=[1e3 * value for value in values], first_loss=passes[name].losses[0])
        if name in inner:
            shares = [1.0 - layer / step for layer, step in zip(inner[name], values)]
            entry["layer_ms"] = 1e3 * float(np.median(inner[name]))
            entry["outside_share"] = min(1.0, max(0.0, float(np.median(shares))))
        steps_rows.append(entry)
        row[f"{name}_ms"] = entry["ms"]
        row[f"{name}_spread"] = entry["spread"]
        if "outside_share" in entry:
            row[f"{name}_outside_share"] = entry["outside_share"]
    if "cython_ms" in row:
        for peer in ("reference", "torch"):
            if f"{peer}_ms" in row:
                row[f"speedup_vs_{peer}"] = row[f"{peer}_ms"] / row["cython_ms"]
    return row


def geometric_means(results):
    """{thread count: geometric mean over the models of torch's step time over cython's}."""
    ratios = {}
    for row in results:
        if "speedup_vs_torch" in row:
            ratios.setdefault(row["threads"], []).append(row["speedup_vs_torch"])
    return {count: math.exp(float(np.mean(np.log(values)))) for count, values in ratios.items()}


def train_columns(contenders):
    """The --train table's columns for the contenders timed."""
    titles = {"cython": "cython", "reference": "ref", "torch": "torch"}
    columns = [("cell", -4, lambda row: row["cell"]), ("L", 1, lambda row: str(row["layers"])),
               ("T,B,H", -11, lambda row: f"{row['T']},{row['B']},{row['H']}"),
               ("thr", 3, lambda row: str(row["threads"]))]
    columns += [(titles[name], 7, key_figure(f"{name}_ms")) for name in contenders]
    if "cython" in contenders:
        columns += [(f"x {titles[peer]}", 7, key_figure(f"speedup_vs_{peer}"))
                    for peer in ("torch", "reference") if peer in contenders]
        columns += [("outside", 7, key_figure("cython_outside_share", fmt=percent)),
                    ("GEMM %", 6, key_figure("gemm_share", fmt=percent)),
                    ("spread", 6, key_figure("cython_spread", fmt=lambda v: f"{v:.2f}"))]
    return columns
