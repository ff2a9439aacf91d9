"""Time each piece of the char-LM training step outside the recurrent layer (float32).

    python -m benchmarks.toolkit_step [--repeats N] [--cpu-time]     # from the repository root

The step is charlm's: Embedding -> LSTM -> Linear -> softmax_cross_entropy -> backward ->
clip_grad_norm -> Adam. Every piece is timed once per round, the rounds interleaved, and the
median per piece printed with its share of the whole step (charlm's `train_step`, timed in the
same rounds). "toolkit" is the sum of the pieces other than the LSTM.

--cpu-time times with the process's CPU time instead of the wall clock: on a shared, busy
machine, run with OPENBLAS_NUM_THREADS=1 (everything on one thread), it leaves out the time
the process waited for a core, and so approaches the figures of an idle machine.
"""
import argparse
import time

import numpy as np

from fastrnn.clip import clip_grad_norm
from fastrnn.losses import softmax_cross_entropy
from fastrnn.optim import Adam
from fastrnn.tools.charlm import CharModel, train_step

VOCAB = 96
# (label, T, B, architecture)
CONFIGS = (
    ("LSTM 1 layer (64, 32, 128)", 64, 32, {"cell": "lstm", "layers": 1, "hidden": 128, "embed": 64}),
    ("LSTM 2 layers (100, 32, 256)", 100, 32, {"cell": "lstm", "layers": 2, "hidden": 256, "embed": 64}),
)
CLIP = 1e-3  # small, so that clip_grad_norm scales the gradients on every call (its slow path)


def pieces(model, optimizer, inputs, targets):
    """name -> a call timing one piece; every call sees inputs like those of a real step."""
    rng = np.random.default_rng(1)
    steps, batch = inputs.shape
    embedded = model.embed(inputs)
    hidden = rng.standard_normal((steps, batch, model.rnn.hidden_size)).astype(np.float32)
    logits = model.head(hidden)
    _, dlogits = softmax_cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    dlogits = dlogits.reshape(logits.shape)
    dembedded = rng.standard_normal(embedded.shape).astype(np.float32)

    def lstm_forward_backward():
        y, _ = model.rnn(embedded)
        model.rnn.backward(hidden)

    def embedding_backward():
        model.embed(inputs)
        model.embed.backward(dembedded)

    def linear_backward():
        model.head(hidden)
        model.head.backward(dlogits)

    return {
        "embedding forward": lambda: model.embed(inputs),
        "embedding fwd+bwd": embedding_backward,
        "linear forward": lambda: model.head(hidden),
        "linear fwd+bwd": linear_backward,
        "softmax_cross_entropy": lambda: softmax_cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1)),
        "clip_grad_norm": lambda: clip_grad_norm(model.grads, CLIP),
        "Adam step": lambda: optimizer.step(model.params, model.grads),
        "LSTM fwd+bwd": lstm_forward_backward,
        "whole step": lambda: train_step(model, optimizer, inputs, targets, None, CLIP),
    }


def measure(label, steps, batch, architecture, repeats, clock):
    rng = np.random.default_rng(0)
    model = CharModel(VOCAB, architecture, "auto", seed=0)
    optimizer = Adam(2e-3)
    inputs = rng.integers(0, VOCAB, (steps, batch))
    targets = rng.integers(0, VOCAB, (steps, batch))
    calls = pieces(model, optimizer, inputs, targets)
    for call in calls.values():  # warm-up: optimizer state, caches, BLAS threads
        call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = clock()
            call()
            times[name].append(clock() - start)
    median_ms = {name: 1e3 * float(np.median(values)) for name, values in times.items()}
    # Forward is counted inside fwd+bwd; the toolkit is what runs once per step.
    toolkit_names = ("embedding fwd+bwd", "linear fwd+bwd", "softmax_cross_entropy", "clip_grad_norm", "Adam step")
    toolkit = sum(median_ms[name] for name in toolkit_names)
    step = median_ms["whole step"]
    print(f"\n{label}, vocab {VOCAB}, embed {architecture['embed']}: median of {repeats} interleaved rounds, "
          f"{clock.__name__}")
    print(f"{'piece':<24}{'ms':>9}{'% of step':>11}")
    for name, value in median_ms.items():
        print(f"{name:<24}{value:9.3f}{100 * value / step:10.1f}%")
    print(f"{'toolkit (sum)':<24}{toolkit:9.3f}{100 * toolkit / step:10.1f}%")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--cpu-time", action="store_true", help="time with the process's CPU time")
    args = parser.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    for label, steps, batch, architecture in CONFIGS:
        measure(label, steps, batch, architecture, args.repeats, clock)


if __name__ == "__main__":
    main()
