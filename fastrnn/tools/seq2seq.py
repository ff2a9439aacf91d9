"""`python -m fastrnn seq2seq`: an encoder-decoder trained three ways, to show exposure bias.

The task is generated: reverse a string of digits ("4071" -> "1704"), or add two numbers
("57+605" -> "662"). An LSTM (or GRU) layer encodes the source; its final state starts a decoder
cell (`fastrnn.LSTMCell`/`GRUCell`) that emits the target one token at a time, each step reading
the token before it. What that token is during training is the difference between the modes:

- teacher forcing: always the true previous token;
- free running: the decoder's own previous prediction (greedy), as at test time;
- scheduled sampling (Bengio et al. 2015): the true token with a probability that falls linearly
  from 1 to 0 over training, else the prediction.

At test time every model decodes greedily from its own predictions. A model trained only on true
prefixes never saw its own mistakes, so one error can derail the rest of the sequence: that gap
between teacher-forced token accuracy and greedy sequence accuracy is exposure bias.
"""
import sys
import time

import numpy as np
from tqdm import tqdm

from .. import GRU, LSTM, GRUCell, LSTMCell, no_grad
from ..clip import clip_grad_norm
from ..losses import softmax_cross_entropy
from ..modules import Embedding, Linear
from ..optim import Adam, merge
from ._cli import (add_backend_arguments, int_at_least, name_list, positive_float, positive_int,
                   training_backend, write_json)

SUMMARY = "train an encoder-decoder with teacher forcing, free running and scheduled sampling"
DESCRIPTION = __doc__.split("\n", 2)[2].strip()

DIGITS = 10
PLUS, BOS, EOS, PAD = 10, 11, 12, 13
VOCAB = 14
SYMBOLS = "0123456789+"
MODES = {"teacher": "teacher forcing", "free": "free running", "scheduled": "scheduled sampling"}
CELLS = {"lstm": (LSTM, LSTMCell), "gru": (GRU, GRUCell)}
TEST_SEQUENCES = 1000
DTYPE = np.float32

max_digits = int_at_least(2, "max_digits")
mode_list = name_list(MODES, "mode_list")


def add_arguments(parser):
    """The seq2seq command's options, on an argparse parser."""
    parser.add_argument("--task", choices=("reverse", "add"), default="reverse",
                        help="reverse a digit string, or add two numbers (default: %(default)s)")
    parser.add_argument("--max-digits", type=max_digits, default=8, metavar="N",
                        help="longest digit string (reverse) or operand (add) (default: %(default)s)")
    parser.add_argument("--modes", type=mode_list, default=list(MODES), metavar="LIST",
                        help="comma list of training modes from teacher, free, scheduled (default: all)")
    parser.add_argument("--cell", choices=tuple(CELLS), default="lstm", help="encoder and decoder cell (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=1500, metavar="N",
                        help="training steps (batches) per mode (default: %(default)s)")
    parser.add_argument("--hidden", type=positive_int, default=128, metavar="H", help="hidden size (default: %(default)s)")
    parser.add_argument("--embed", type=positive_int, default=16, metavar="E", help="token embedding size (default: %(default)s)")
    parser.add_argument("--batch", type=positive_int, default=64, metavar="B", help="sequences per step (default: %(default)s)")
    parser.add_argument("--lr", type=positive_float, default=5e-3, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--clip", type=positive_float, default=1.0, metavar="NORM",
                        help="clip the global gradient norm to NORM (default: %(default)s)")
    add_backend_arguments(parser, "seed of the weights, the training batches and the test set")


def make_batch(rng, task, max_digits, batch):
    """(source (S, B), source lengths (B,), target (T, B)) as token arrays, PAD-filled.

    The target ends with EOS; the source has no BOS/EOS.
    """
    sources, targets = [], []
    for _ in range(batch):
        if task == "reverse":
            digits = list(rng.integers(0, DIGITS, size=rng.integers(1, max_digits + 1)))
            sources.append(digits)
            targets.append(digits[::-1])
        else:
            a, b = (int(rng.integers(0, 10 ** int(rng.integers(1, max_digits + 1)))) for _ in range(2))
            sources.append([int(ch) for ch in str(a)] + [PLUS] + [int(ch) for ch in str(b)])
            targets.append([int(ch) for ch in str(a + b)])
    lengths = np.array([len(s) for s in sources])
    source = np.full((lengths.max(), batch), PAD, dtype=np.int64)
    target = np.full((max(len(t) for t in targets) + 1, batch), PAD, dtype=np.int64)
    for column, (s, t) in enumerate(zip(sources, targets)):
        source[:len(s), column] = s
        target[:len(t) + 1, column] = t + [EOS]
    return source, lengths, target


class Seq2Seq:
    """Embedding -> encoder layer -> final state -> decoder cell, one token a step -> Linear."""

    def __init__(self, cell, hidden, embed, backend, seed, dtype=DTYPE):
        rng = np.random.default_rng(seed)
        layer_cls, cell_cls = CELLS[cell]
        self.dtype = np.dtype(dtype)
        self.source_embedding = Embedding(VOCAB, embed, dtype=dtype, seed=rng)
        self.target_embedding = Embedding(VOCAB, embed, dtype=dtype, seed=rng)
        self.encoder = layer_cls(embed, hidden, dtype=dtype, backend=backend, seed=rng)
        self.decoder = cell_cls(embed, hidden, dtype=dtype, backend=backend, seed=rng)
        self.head = Linear(hidden, VOCAB, dtype=dtype, seed=rng)
        modules = dict(source_embedding=self.source_embedding, target_embedding=self.target_embedding,
                       encoder=self.encoder, decoder=self.decoder, head=self.head)
        self.modules = list(modules.values())
        self.params = merge(**{name: module.params for name, module in modules.items()})
        self.grads = merge(**{name: module.grads for name, module in modules.items()})

    def encode(self, source, lengths):
        _, state = self.encoder(self.source_embedding(source), lengths=lengths)
        # The layer's state is (layers, B, H); the decoder cell's is (B, H).
        return tuple(part[0] for part in state) if isinstance(state, tuple) else state[0]

    def decode(self, state, steps, batch, choose_input):
        """Run the decoder `steps` steps; choose_input(t, logits_before) gives each step's input
        tokens (logits_before: the previous step's logits, None at t = 0). Returns the input
        tokens (steps, B), the outputs h (steps, B, H) and the logits (steps, B, VOCAB)."""
        inputs, outputs, logits = [], [], []
        previous = None
        for t in range(steps):
            tokens = choose_input(t, previous)
            with no_grad():  # the lookup is redone over all steps at once for backward
                x = self.target_embedding(tokens)
            state = self.decoder(x, state)
            h = state[0] if isinstance(state, tuple) else state
            with no_grad():  # likewise the head
                previous = self.head(h)
            inputs.append(tokens)
            outputs.append(h)
            logits.append(previous)
        return np.stack(inputs), np.stack(outputs), np.stack(logits)

    def train_step(self, batch, teacher_probability, rng, optimizer, clip):
        """One step where each decoder input is the true token with `teacher_probability`, else
        the previous prediction; returns the mean cross-entropy per target token."""
        for module in self.modules:
            module.zero_grad()
        loss = self.loss_and_gradients(batch, teacher_probability, rng)
        clip_grad_norm(self.grads, clip)
        optimizer.step(self.params, self.grads)
        return loss

    def loss_and_gradients(self, batch, teacher_probability, rng):
        """The mean cross-entropy per target token; adds its gradients into `grads`."""
        source, lengths, target = batch
        steps, size = target.shape

        def choose_input(t, previous_logits):
            if t == 0:
                return np.full(size, BOS, dtype=np.int64)
            teacher = target[t - 1]
            if teacher_probability >= 1.0:
                return teacher
            predicted = previous_logits.argmax(axis=1)
            use_teacher = rng.random(size) < teacher_probability
            return np.where(use_teacher, teacher, predicted)

        state = self.encode(source, lengths)
        inputs, outputs, _ = self.decode(state, steps, size, choose_input)
        # Record the lookups and the head over all steps at once, for their backward.
        self.target_embedding(inputs)
        logits = self.head(outputs)
        loss, dlogits = softmax_cross_entropy(logits.reshape(-1, VOCAB), target.reshape(-1), ignore_index=PAD)
        doutputs = self.head.backward(dlogits.reshape(logits.shape))

        # BPTT through the decoder's tape, last step first.
        dstate = tuple(np.zeros_like(part) for part in (state if isinstance(state, tuple) else (state,)))
        dinputs = np.empty(inputs.shape + (self.decoder.input_size,), self.dtype)
        for t in reversed(range(steps)):
            dstate = (dstate[0] + doutputs[t],) + dstate[1:]
            dinputs[t], dstate = self.decoder.backward(dstate if len(dstate) > 1 else dstate[0])
            dstate = dstate if isinstance(dstate, tuple) else (dstate,)
        self.target_embedding.backward(dinputs)
        dy = np.zeros((source.shape[0], size, self.encoder.hidden_size), self.dtype)
        dx, _ = self.encoder.backward(dy, tuple(part[None] for part in dstate) if len(dstate) > 1 else dstate[0][None])
        self.source_embedding.backward(dx)
        return loss

    @no_grad()
    def evaluate(self, batch):
        """Greedy decoding from the model's own predictions, and teacher-forced token accuracy."""
        source, lengths, target = batch
        steps, size = target.shape
        valid = target != PAD
        state = self.encode(source, lengths)

        def greedy(t, previous_logits):
            return np.full(size, BOS, dtype=np.int64) if t == 0 else previous_logits.argmax(axis=1)

        def teacher(t, previous_logits):
            return np.full(size, BOS, dtype=np.int64) if t == 0 else target[t - 1]

        _, _, logits = self.decode(state, steps, size, greedy)
        predicted = logits.argmax(axis=2)
        sequence_correct = np.all((predicted == target) | ~valid, axis=0)
        _, _, teacher_logits = self.decode(state, steps, size, teacher)
        teacher_correct = (teacher_logits.argmax(axis=2) == target) & valid
        return {
            "greedy_sequence_accuracy": float(sequence_correct.mean()),
            "greedy_token_accuracy": float(((predicted == target) & valid).sum() / valid.sum()),
            "teacher_forced_token_accuracy": float(teacher_correct.sum() / valid.sum()),
        }


def teacher_probability(mode, step, steps):
    if mode == "teacher":
        return 1.0
    if mode == "free":
        return 0.0
    return 1.0 - step / max(1, steps - 1)


def train_mode(mode, args, backend, seeds, progress):
    init_seed, data_seed, choice_seed = seeds
    model = Seq2Seq(args.cell, args.hidden, args.embed, backend, init_seed)
    optimizer = Adam(args.lr)
    data_rng, choice_rng = np.random.default_rng(data_seed), np.random.default_rng(choice_seed)
    running = None
    bar = tqdm(range(args.steps), desc=f"{mode:<9}", unit="step", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    start = time.perf_counter()
    for step in bar:
        batch = make_batch(data_rng, args.task, args.max_digits, args.batch)
        loss = model.train_step(batch, teacher_probability(mode, step, args.steps), choice_rng, optimizer, args.clip)
        running = loss if running is None else 0.98 * running + 0.02 * loss
        if step % 10 == 0 or step == args.steps - 1:
            bar.set_postfix_str(f"loss {running:.3f}", refresh=False)
    bar.close()
    return model, time.perf_counter() - start, running


def run(args):
    """Train each mode, evaluate greedy decoding on held-out data, print the table."""
    backend = training_backend(args, "seq2seq")
    if backend is None:
        return 2
    init_seed, data_seed, choice_seed, test_seed = np.random.SeedSequence(args.seed).spawn(4)
    test = make_batch(np.random.default_rng(test_seed), args.task, args.max_digits, TEST_SEQUENCES)
    print(f"seq2seq {args.task}, up to {args.max_digits} digits: {args.cell.upper()} encoder-decoder, hidden "
          f"{args.hidden}, {args.steps} steps of batch {args.batch} per mode, backend {backend}, seed {args.seed}")
    results = {}
    for mode in args.modes:
        # Every mode starts from the same weights and sees the same batches.
        model, seconds, loss = train_mode(mode, args, backend, (init_seed, data_seed, choice_seed), not args.quiet)
        results[mode] = {**model.evaluate(test), "final_train_loss": loss, "train_seconds": seconds}

    print()
    header = ("trained with", "train loss", "teacher-forced token acc", "greedy token acc", "greedy sequence acc", "time")
    rows = [(MODES[mode], f"{r['final_train_loss']:.3f}", f"{r['teacher_forced_token_accuracy']:.1%}",
             f"{r['greedy_token_accuracy']:.1%}", f"{r['greedy_sequence_accuracy']:.1%}", f"{r['train_seconds']:.0f} s")
            for mode, r in results.items()]
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(text.ljust(w) if i == 0 else text.rjust(w) for i, (text, w) in enumerate(zip(row, widths))))
    print()
    print(f"accuracies on {TEST_SEQUENCES} held-out sequences. teacher-forced: each step reads the true previous "
          "token; greedy: each step reads the model's own previous prediction, as in use. A sequence counts "
          "when every token and the end marker are right.")
    if args.json:
        summary = {"task": args.task, "max_digits": args.max_digits, "cell": args.cell, "hidden": args.hidden,
                   "embed": args.embed, "batch": args.batch, "steps": args.steps, "lr": args.lr, "clip": args.clip,
                   "seed": args.seed, "backend": backend, "test_sequences": TEST_SEQUENCES, "modes": results}
        if not write_json(args.json, summary, "seq2seq"):
            return 2
    return 0
