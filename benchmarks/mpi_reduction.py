"""Where a data-parallel charlm step spends its time: compute, waiting, gradient reduction, update.

    OPENBLAS_NUM_THREADS=1 mpiexec -n 2 python benchmarks/mpi_reduction.py --hidden 256
    OPENBLAS_NUM_THREADS=1 python benchmarks/mpi_reduction.py --hidden 256        # one process

charlm's model and step (embedding 32 -> one LSTM layer -> linear, float32, truncated BPTT over
--bptt characters of --batch streams of the default corpus, gradients averaged, clipped to 5,
Adam), with each phase timed on every rank: forward+backward on this rank's shard, a barrier (the
wait for the slowest rank: load imbalance and noise, not communication), `average_gradients`
(the reduction proper), `combine_metrics` (charlm's per-step loss/stop reduction) and clipping
plus the Adam step; then `average_gradients` alone, back to back (`reduce_alone`). Rank 0 prints the median of each phase over steps and ranks, and the bytes
each step reduces. The barrier exists only in this measurement, to tell waiting from reducing.
"""
import argparse
import json
import os
import time

import numpy as np

from fastrnn import clip_grad_norm, distributed
from fastrnn._io import atomic_write
from fastrnn.losses import softmax_cross_entropy
from fastrnn.tools.charlm import CharModel, default_corpus, encode, make_optimizer

PHASES = ("forward_backward", "wait", "reduce", "metrics", "clip_update")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32, help="global batch (streams), split over the ranks")
    parser.add_argument("--bptt", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60, help="timed steps, after --warmup untimed ones")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file (rank 0)")
    args = parser.parse_args()

    distributed.abort_on_error()
    comm = distributed.world()
    _, text = default_corpus()
    vocab = "".join(sorted(set(text)))
    data = encode(text, vocab, "the corpus")
    length = len(data) // args.batch
    streams = distributed.shard(data[:args.batch * length].reshape(args.batch, length))
    architecture = {"cell": "lstm", "layers": 1, "hidden": args.hidden, "embed": 32}
    model = CharModel(len(vocab), architecture, "cython", seed=0)
    optimizer = make_optimizer("adam", 3e-3)
    distributed.broadcast_parameters(model.params)

    timings, state = {phase: [] for phase in PHASES}, None
    for step in range(args.warmup + args.steps):
        position = step * args.bptt
        inputs = streams[:, position:position + args.bptt].T
        targets = streams[:, position + 1:position + args.bptt + 1].T
        marks = [time.perf_counter()]
        model.zero_grad()
        logits, state = model.forward(inputs, state)
        loss, dlogits = softmax_cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        model.backward(dlogits.reshape(logits.shape))
        marks.append(time.perf_counter())
        if comm is not None:
            comm.Barrier()
        marks.append(time.perf_counter())
        distributed.average_gradients(model.grads, weight=inputs.shape[1])
        marks.append(time.perf_counter())
        distributed.combine_metrics([loss, 0.0], weight=inputs.shape[1])
        marks.append(time.perf_counter())
        clip_grad_norm(model.grads, 5.0)
        optimizer.step(model.params, model.grads)
        marks.append(time.perf_counter())
        if step >= args.warmup:
            for phase, start, stop in zip(PHASES, marks, marks[1:]):
                timings[phase].append(stop - start)

    # The reduction alone, back to back after a barrier each: its cost when no rank is late.
    alone = []
    for _ in range(args.steps):
        if comm is not None:
            comm.Barrier()
        start = time.perf_counter()
        distributed.average_gradients(model.grads, weight=1)
        alone.append(time.perf_counter() - start)
    timings["reduce_alone"] = alone
    gathered = comm.gather(timings, root=0) if comm is not None else [timings]
    if not distributed.is_root():
        return
    values = sum(array.size for array in model.grads.values())
    median_ms = {phase: 1e3 * float(np.median(np.concatenate([t[phase] for t in gathered])))
                 for phase in (*PHASES, "reduce_alone")}
    step_ms = 1e3 * float(np.median(np.sum([np.concatenate([t[phase] for t in gathered]) for phase in PHASES],
                                           axis=0)))
    results = {
        "ranks": distributed.size(), "hidden": args.hidden, "batch": args.batch, "bptt": args.bptt,
        "steps": args.steps, "parameters": values, "bytes_reduced": 4 * (values + 1),
        "median_ms": median_ms, "step_ms": step_ms, "steps_per_s": 1e3 / step_ms,
        "load_average_1_5_15_min": os.getloadavg(),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        with atomic_write(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
