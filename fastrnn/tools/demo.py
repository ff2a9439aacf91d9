"""`python -m fastrnn demo`: the adding problem, where gated cells beat the plain RNN (docs/cli.md §2).

The adding problem (Hochreiter & Schmidhuber 1997): every step of a sequence is a pair (a random
value in [0, 1], a marker in {0, 1}); exactly two steps are marked, one in each half of the
sequence, and the target is the sum of the two marked values. Predicting the mean (1.0) scores
an MSE of Var(u1 + u2) = 1/6; doing better means carrying the first marked value across at least
half the sequence. Each cell reads the sequence, its last hidden state goes through a Linear layer
to a scalar, and MSE, gradient clipping and Adam train it.
"""
import sys
import time

import numpy as np
from tqdm import tqdm

from .. import GRU, LSTM, RNN, available_backends, no_grad
from . import explain
from ._cli import (add_backend_arguments, int_at_least, name_list, output_problem, positive_float, positive_int,
                   training_backend, write_json)
from ..clip import clip_grad_norm
from ..losses import mse
from ..modules import Linear
from ..optim import Adam, merge

SUMMARY = "train a tanh RNN, an LSTM and a GRU on the adding problem and compare them"

CELLS = {"rnn": ("RNN", RNN), "lstm": ("LSTM", LSTM), "gru": ("GRU", GRU)}
SOLVED_MSE = 0.01
TEST_SEQUENCES = 2000
SPEEDUP_STEPS = 5
DTYPE = np.float32

DESCRIPTION = f"""\
The adding problem (Hochreiter & Schmidhuber 1997). Each step of a sequence is a pair (value in
[0, 1], marker in {{0, 1}}); one step in each half is marked and the target is the sum of the two
marked values. Predicting the mean scores MSE 1/6 ~ 0.167; a cell has solved the task when its
MSE on {TEST_SEQUENCES} held-out sequences is below {SOLVED_MSE}.

A tanh RNN, an LSTM and a GRU of the same size train on the same stream of batches (same seed):
cell -> last hidden state -> Linear -> scalar, MSE loss, gradient clipping, Adam. The table gives
each cell's test MSE, whether it solved the task, its training time and the speedup of the
cython backend over the pure-NumPy reference on the same training steps (fastest of {SPEEDUP_STEPS}).

--explain then shows why: the norm of the gradient w.r.t. h_t against the distance T-1-t from the
loss, at initialisation (with an LSTM whose forget-gate bias is raised by --forget-bias besides)
and after training; --plot FILE draws it as a PNG (needs matplotlib: pip install fastrnn[plot])."""


# Each half of a sequence holds one marked step.
sequence_length = int_at_least(2, "sequence_length")
cell_list = name_list(CELLS, "cell_list")


def add_arguments(parser):
    """The demo's options, on an argparse parser."""
    parser.add_argument("--seq-len", type=sequence_length, default=100, metavar="T",
                        help="steps per sequence; longer is harder for the plain RNN (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=2000, metavar="N",
                        help="training steps (batches) per cell (default: %(default)s)")
    parser.add_argument("--hidden", type=positive_int, default=64, metavar="H",
                        help="hidden size of every cell (default: %(default)s)")
    parser.add_argument("--batch", type=positive_int, default=64, metavar="B",
                        help="sequences per training step (default: %(default)s)")
    parser.add_argument("--lr", type=positive_float, default=1e-2, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--clip", type=positive_float, default=1.0, metavar="NORM",
                        help="clip the global gradient norm to NORM (default: %(default)s)")
    parser.add_argument("--cells", type=cell_list, default=list(CELLS), metavar="LIST",
                        help="comma list of cells to train, from rnn, lstm, gru (default: rnn,lstm,gru)")
    parser.add_argument("--explain", action="store_true",
                        help="show the gradient norm against the distance from the loss, at init and after training")
    parser.add_argument("--plot", metavar="FILE",
                        help="with --explain (implied): also write the curves as a PNG plot (needs matplotlib)")
    parser.add_argument("--forget-bias", type=positive_float, default=1.0, metavar="FB",
                        help="--explain: the raised forget-gate bias of the extra LSTM (default: %(default)s)")
    add_backend_arguments(parser, "seed of the weights, the training batches and the test set")


def adding_batch(rng, seq_len, batch):
    """x (T, B, 2) of (value, marker) pairs and target (B, 1), the sum of the two marked values."""
    values = rng.random((seq_len, batch))
    half = seq_len // 2
    first = rng.integers(0, half, size=batch)
    second = rng.integers(half, seq_len, size=batch)
    markers = np.zeros((seq_len, batch))
    columns = np.arange(batch)
    markers[first, columns] = 1.0
    markers[second, columns] = 1.0
    x = np.stack([values, markers], axis=2).astype(DTYPE)
    target = (values[first, columns] + values[second, columns])[:, None].astype(DTYPE)
    return x, target


class AddingModel:
    """cell (2 -> H) -> hidden state after the last step -> Linear (H -> 1)."""

    def __init__(self, cell, hidden, backend, seed, **options):
        rng = np.random.default_rng(seed)
        self.rnn = CELLS[cell][1](2, hidden, dtype=DTYPE, backend=backend, seed=rng, **options)
        self.head = Linear(hidden, 1, dtype=DTYPE, seed=rng)
        # The modules' own arrays under "rnn." and "head." names, for the optimizer and clipping.
        self.params = merge(rnn=self.rnn.params, head=self.head.params)
        self.grads = merge(rnn=self.rnn.grads, head=self.head.grads)

    def predict(self, x):
        """Predictions (B, 1) for x (T, B, 2), for training: the caller runs backward next."""
        y, _ = self.rnn(x)
        return self.head(y[-1])

    def infer(self, x):
        """Predictions (B, 1) for x (T, B, 2), for evaluation: no dropout, nothing to learn from.

        The one place the model runs for inference: under no_grad, nothing is kept for backward.
        """
        self.rnn.eval()
        try:
            with no_grad():
                return self.predict(x)
        finally:
            self.rnn.train()

    def gradients(self, x, target):
        """The gradients of the batch MSE in `grads` (zeroed first); returns the MSE."""
        self.rnn.zero_grad()
        self.head.zero_grad()
        steps, batch, _ = x.shape
        loss, dpred = mse(self.predict(x), target)
        # Only the last step's output feeds the head, so only it receives a gradient.
        dy = np.zeros((steps, batch, self.rnn.hidden_size), DTYPE)
        dy[-1] = self.head.backward(dpred)
        self.rnn.backward(dy)
        return loss

    def train_step(self, x, target, optimizer, clip):
        """One forward, backward, clip and update; returns the batch MSE before the update."""
        loss = self.gradients(x, target)
        clip_grad_norm(self.grads, clip)
        optimizer.step(self.params, self.grads)
        return loss


def train_cell(cell, args, backend, init_seed, data_seed, progress):
    """Train one cell for args.steps batches; returns (model, seconds)."""
    model = AddingModel(cell, args.hidden, backend, init_seed)
    optimizer = Adam(args.lr)
    data_rng = np.random.default_rng(data_seed)
    running = None
    bar = tqdm(range(args.steps), desc=f"{CELLS[cell][0]:<4}", unit="step", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, leave=True)
    start = time.perf_counter()
    for step in bar:
        x, target = adding_batch(data_rng, args.seq_len, args.batch)
        loss = model.train_step(x, target, optimizer, args.clip)
        # An exponential average over ~50 steps: the per-batch MSE is noisy.
        running = loss if running is None else 0.98 * running + 0.02 * loss
        if step % 10 == 0 or step == args.steps - 1:
            bar.set_postfix_str(f"train MSE {running:.4f}", refresh=False)
    seconds = time.perf_counter() - start
    bar.close()
    return model, seconds


def heldout_mse(model, x_test, y_test):
    loss, _ = mse(model.infer(x_test), y_test)
    return loss


def cython_speedup(cell, args, init_seed, data_seed):
    """Reference over cython time of one training step (the fastest of SPEEDUP_STEPS), or None.

    The fastest step is the one least disturbed by whatever else runs on the machine.
    """
    if "cython" not in available_backends():
        return None
    seconds = {}
    for backend in ("cython", "reference"):
        model = AddingModel(cell, args.hidden, backend, init_seed)
        optimizer = Adam(args.lr)
        data_rng = np.random.default_rng(data_seed)
        batches = [adding_batch(data_rng, args.seq_len, args.batch) for _ in range(SPEEDUP_STEPS + 1)]
        model.train_step(*batches[0], optimizer, args.clip)  # warm-up: first-touch allocations
        times = []
        for x, target in batches[1:]:
            start = time.perf_counter()
            model.train_step(x, target, optimizer, args.clip)
            times.append(time.perf_counter() - start)
        seconds[backend] = min(times)
    return seconds["reference"] / seconds["cython"]


def lesson(results, seq_len):
    """One line saying what the table shows about gated and plain cells."""
    gated = {cell: r["solved"] for cell, r in results.items() if cell != "rnn"}
    plain = results.get("rnn", {}).get("solved")
    if gated and all(gated.values()) and plain is False:
        return (f"The lesson: the gates of the LSTM and GRU carry the first marked value across up to {seq_len} "
                "steps; the plain tanh RNN's gradient vanishes over that distance, so it stays near the mean.")
    if gated and all(gated.values()) and plain:
        return (f"Over {seq_len} steps even the plain RNN bridged the gap; its gradient vanishes with "
                "distance, so try a longer --seq-len (e.g. 200) to see it fail.")
    if gated and not all(gated.values()):
        return "Not every gated cell reached the threshold in this budget: give them more --steps."
    return "Train rnn together with lstm or gru (--cells) to compare plain and gated cells."


def explain_gradients(args, backend, init_seed, trained, x_test, y_test):
    """Print (and with --plot, draw) ‖∂J/∂h_t‖ against the distance from the loss, at init and
    after training (explain.py)."""
    x, target = x_test[:, :explain.SEQUENCES], y_test[:explain.SEQUENCES]
    variants = [(CELLS[cell][0], cell, {}) for cell in args.cells]
    if "lstm" in args.cells:
        variants.insert(args.cells.index("lstm") + 1,
                        (f"LSTM fb=+{args.forget_bias:g}", "lstm", {"forget_bias": args.forget_bias}))
    at_init = {label: explain.norms_by_distance(AddingModel(cell, args.hidden, backend, init_seed, **options),
                                                x, target)
               for label, cell, options in variants}
    after = {CELLS[cell][0]: explain.norms_by_distance(model, x, target) for cell, model in trained.items()}
    panels = [("at initialisation", at_init), (f"after {args.steps} training steps", after)]
    print()
    print(f"||dJ/dh_t|| against the distance T-1-t from the loss (the MSE reads the last step only), "
          f"on {x.shape[1]} held-out sequences; last row: the ratio far/near")
    for title, curves in panels:
        print()
        print("\n".join(explain.table(f"{title}:", curves, args.seq_len)))
    if args.plot:
        print()
        if explain.plot(args.plot, panels, args.seq_len):
            print(f"plot written to {args.plot}")
        else:
            print("no plot: matplotlib is not installed (pip install matplotlib, or fastrnn[plot])")


def run(args):
    """Train, evaluate and report; returns the exit code."""
    problem = args.plot and output_problem(args.plot, "--plot")
    if problem:
        print(f"fastrnn demo: error: {problem}", file=sys.stderr)  # now, not after training
        return 2
    backend = training_backend(args, "demo")
    if backend is None:
        return 2
    init_seed, data_seed, test_seed = np.random.SeedSequence(args.seed).spawn(3)
    x_test, y_test = adding_batch(np.random.default_rng(test_seed), args.seq_len, TEST_SEQUENCES)
    baseline = float(np.mean((y_test - 1.0) ** 2))
    print(f"adding problem: T={args.seq_len} steps, hidden {args.hidden}, batch {args.batch}, {args.steps} steps "
          f"of Adam (lr {args.lr}, clip {args.clip}), backend {backend}, seed {args.seed}")

    results, models = {}, {}
    for cell in args.cells:
        # Every cell starts from the same seeds, so it sees the very same batches.
        model, seconds = train_cell(cell, args, backend, init_seed, data_seed, not args.quiet)
        models[cell] = model
        error = heldout_mse(model, x_test, y_test)
        results[cell] = {
            "test_mse": error,
            "solved": bool(error < SOLVED_MSE),
            "train_seconds": seconds,
            "cython_speedup": cython_speedup(cell, args, init_seed, data_seed),
        }

    print()
    header = ("cell", "test MSE", "baseline MSE", "solved", "train time", "cython speedup")
    rows = []
    for cell, r in results.items():
        speedup = "n/a (not built)" if r["cython_speedup"] is None else f"{r['cython_speedup']:.1f}x"
        rows.append((CELLS[cell][0], f"{r['test_mse']:.4f}", f"{baseline:.4f}", "yes" if r["solved"] else "no",
                     f"{r['train_seconds']:.1f} s", speedup))
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(text.ljust(width) if i == 0 else text.rjust(width)
                        for i, (text, width) in enumerate(zip(row, widths))).rstrip())
    print()
    print(f"solved: test MSE below {SOLVED_MSE} on {TEST_SEQUENCES} held-out sequences; "
          f"always predicting the mean (1.0) scores {baseline:.4f}.")
    print(f"cython speedup: time of one of these training steps (forward, backward, Adam; fastest of "
          f"{SPEEDUP_STEPS}) with the reference backend over the cython backend.")
    print(lesson(results, args.seq_len))
    if args.explain or args.plot:
        explain_gradients(args, backend, init_seed, models, x_test, y_test)

    if args.json:
        summary = {
            "task": "adding",
            "seq_len": args.seq_len, "hidden": args.hidden, "batch": args.batch, "steps": args.steps,
            "lr": args.lr, "clip": args.clip, "seed": args.seed, "backend": backend,
            "solved_below_mse": SOLVED_MSE, "test_sequences": TEST_SEQUENCES, "baseline_mse": baseline,
            "cells": results,
        }
        if not write_json(args.json, summary, "demo"):
            return 2
    return 0
