"""`python -m fastrnn charlm [FILE]`: a character-level language model (SPEC §6).

Embedding -> LSTM or GRU stack -> Linear -> softmax over the characters, trained with truncated
BPTT: the training text is cut into `--batch` parallel streams, each read in chunks of `--bptt`
steps, and the recurrent state is carried from one chunk to the next as plain arrays. The last
10% of the text is held out; its perplexity is compared with that of the training part's unigram
distribution. Checkpoints are .npz files of plain arrays (weights, vocabulary as code points,
options as JSON text, optimizer state), read back with `allow_pickle=False`.
"""
import argparse
import json
import math
import os
import pickle
import sys
import sysconfig
import textwrap
import time
import zipfile

import numpy as np
from tqdm import tqdm

from .. import GRU, LSTM, distributed
from ..clip import clip_grad_norm
from ._cli import add_backend_arguments, choose_backend, non_negative_int, positive_float, positive_int, write_json
from ..losses import softmax_cross_entropy
from ..modules import Embedding, Linear
from ..optim import Adagrad, Adam, merge

SUMMARY = "train a character-level language model on a text file and sample from it"

# The default corpus: these modules of the running Python's standard library, concatenated in
# this order (about 470 kB of ASCII Python source), read from the local installation.
STDLIB_MODULES = (
    "argparse.py", "ast.py", "calendar.py", "configparser.py", "contextlib.py",
    "csv.py", "dataclasses.py", "difflib.py", "pprint.py", "textwrap.py",
)
HELD_OUT_FRACTION = 0.1
FORMAT = "fastrnn-charlm-1"
CELLS = {"lstm": LSTM, "gru": GRU}
ARCHITECTURE_DEFAULTS = {"cell": "lstm", "layers": 1, "hidden": 256, "embed": 32}
DEFAULT_LR = {"adam": 3e-3, "adagrad": 0.05}
DEFAULT_STEPS = 800
DTYPE = np.float32

DESCRIPTION = f"""\
Character-level language model: embedding -> LSTM or GRU (1-3 layers) -> linear -> softmax,
trained with truncated backpropagation through time, gradient clipping and Adam or Adagrad.
The last {HELD_OUT_FRACTION:.0%} of the text is held out: its perplexity is reported as training goes and
compared with the unigram baseline (the character frequencies of the training part, add-one
smoothed). Then the model writes a sample. Ctrl-C ends training early; evaluation, sampling and
saving still follow.

Without FILE it trains on Python source from this machine's standard library, the files
{textwrap.fill(", ".join(STDLIB_MODULES), 96)}
under sysconfig.get_paths()["stdlib"], concatenated in that order; nothing is downloaded.

examples:
  python -m fastrnn charlm --save model.npz          # about two minutes with the cython backend
  python -m fastrnn charlm --load model.npz --sample 500 --prime "def "
  python -m fastrnn charlm --load model.npz --steps 400 --save model.npz   # resume training
  python -m fastrnn charlm my_text.txt --cell gru --layers 2 --minutes 10"""


class CharLMError(Exception):
    """Bad input (file, checkpoint, prime): reported as one line on stderr, exit code 2."""


def layer_count(text):
    """argparse type: 1, 2 or 3."""
    value = int(text)
    if value not in (1, 2, 3):
        raise argparse.ArgumentTypeError(f"must be 1, 2 or 3, got {text}")
    return value


def add_arguments(parser):
    """charlm's options, on an argparse parser."""
    parser.add_argument("file", nargs="?", metavar="FILE",
                        help="UTF-8 text to train on (default: the standard-library selection above)")
    model = parser.add_argument_group("model (taken from the checkpoint with --load)")
    # No argparse defaults here: None tells an option given on the command line from one left out.
    default = ARCHITECTURE_DEFAULTS
    model.add_argument("--cell", choices=tuple(CELLS), help=f"recurrent cell (default: {default['cell']})")
    model.add_argument("--layers", type=layer_count, metavar="{1,2,3}",
                       help=f"stacked recurrent layers (default: {default['layers']})")
    model.add_argument("--hidden", type=positive_int, metavar="H", help=f"hidden size (default: {default['hidden']})")
    model.add_argument("--embed", type=positive_int, metavar="E",
                       help=f"character embedding size (default: {default['embed']})")
    training = parser.add_argument_group("training")
    training.add_argument("--steps", type=non_negative_int, metavar="N",
                          help="training steps, each one chunk of every stream; 0: no training, only "
                               f"evaluation and sampling (default: {DEFAULT_STEPS}, or 0 with --load: "
                               "give --steps to resume training)")
    training.add_argument("--minutes", type=positive_float, metavar="M",
                          help="also stop training after this many minutes of wall time")
    training.add_argument("--bptt", type=positive_int, default=64, metavar="T",
                          help="characters per chunk: backpropagation is truncated after T steps "
                               "(default: %(default)s)")
    training.add_argument("--batch", type=positive_int, default=32, metavar="B",
                          help="parallel streams cut from the training text (default: %(default)s)")
    training.add_argument("--optim", choices=tuple(DEFAULT_LR), default="adam",
                          help="optimizer (default: %(default)s)")
    training.add_argument("--lr", type=positive_float,
                          help=f"learning rate (default: {DEFAULT_LR['adam']} for adam, "
                               f"{DEFAULT_LR['adagrad']} for adagrad)")
    training.add_argument("--clip", type=positive_float, default=5.0, metavar="NORM",
                          help="clip the global gradient norm to NORM (default: %(default)s)")
    training.add_argument("--eval-every", type=positive_int, default=200, metavar="N",
                          help="measure the held-out perplexity every N steps (default: %(default)s)")
    sampling = parser.add_argument_group("sampling and checkpoints")
    sampling.add_argument("--sample", type=non_negative_int, default=400, metavar="N",
                          help="characters to generate after training (default: %(default)s)")
    sampling.add_argument("--prime", metavar="TEXT",
                          help="text the sample continues; its characters must be in the vocabulary "
                               "(default: a newline)")
    sampling.add_argument("--temperature", type=positive_float, default=0.8, metavar="TEMP",
                          help="divide the logits by this before sampling: lower is more conservative "
                               "(default: %(default)s)")
    sampling.add_argument("--save", metavar="CKPT",
                          help="write weights, vocabulary, options and optimizer state to CKPT (.npz)")
    sampling.add_argument("--load", metavar="CKPT",
                          help="start from a checkpoint written by --save; with --steps 0 it only samples")
    add_backend_arguments(parser, "seed of the weights and of the sample")


# -- text ---------------------------------------------------------------------------------


def read_text(path):
    """The UTF-8 text of `path` with "\\r\\n" made "\\n"; CharLMError for anything unusable."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise CharLMError(f"cannot read {path}: {error.strerror}") from None
    if not data:
        raise CharLMError(f"{path} is empty")
    if b"\0" in data:
        raise CharLMError(f"{path} looks like a binary file (it contains NUL bytes), not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CharLMError(f"{path} is not UTF-8 text (invalid byte at offset {error.start})") from None
    return text.replace("\r\n", "\n")


def default_corpus():
    """(description, text) of the standard-library selection; CharLMError if a file is missing."""
    stdlib = sysconfig.get_paths()["stdlib"]
    texts = []
    for name in STDLIB_MODULES:
        path = os.path.join(stdlib, name)
        if not os.path.isfile(path):
            raise CharLMError(f"the default corpus needs {path}, which this Python installation lacks "
                              "(some ship only compiled files): give a text FILE instead")
        texts.append(read_text(path))
    return f"{len(STDLIB_MODULES)} standard-library modules ({stdlib})", "".join(texts)


def encode(text, vocab, what):
    """`text` as int64 indices into `vocab`; CharLMError naming `what` for an unknown character."""
    index = {char: i for i, char in enumerate(vocab)}
    unknown = sorted(set(text) - index.keys())
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise CharLMError(f"{what} has characters that are not in the vocabulary: {''.join(unknown[:10])!r}{more}")
    return np.fromiter((index[char] for char in text), dtype=np.int64, count=len(text))


# -- model --------------------------------------------------------------------------------


class CharModel:
    """Embedding (V -> E) -> LSTM/GRU stack (E -> H) -> Linear (H -> V), on (T, B) indices."""

    def __init__(self, vocab_size, architecture, backend, seed):
        rng = np.random.default_rng(seed)
        cell = CELLS[architecture["cell"]]
        self.embed = Embedding(vocab_size, architecture["embed"], dtype=DTYPE, seed=rng)
        self.rnn = cell(architecture["embed"], architecture["hidden"], architecture["layers"],
                        dtype=DTYPE, backend=backend, seed=rng)
        self.head = Linear(architecture["hidden"], vocab_size, dtype=DTYPE, seed=rng)
        self.modules = {"embed": self.embed, "rnn": self.rnn, "head": self.head}
        # The modules' own arrays under "embed.", "rnn." and "head." names.
        self.params = merge(**{name: module.params for name, module in self.modules.items()})
        self.grads = merge(**{name: module.grads for name, module in self.modules.items()})

    def forward(self, inputs, state):
        """logits (T, B, V) and the state after the last step, from indices (T, B)."""
        y, state = self.rnn(self.embed(inputs), state)
        return self.head(y), state

    def backward(self, dlogits):
        dy = self.head.backward(dlogits)
        dx, _ = self.rnn.backward(dy)
        self.embed.backward(dx)

    def zero_grad(self):
        for module in self.modules.values():
            module.zero_grad()

    def load(self, params):
        """Load "module.name" arrays; KeyError/ValueError from the modules name what is wrong."""
        for prefix, module in self.modules.items():
            module.load_state_dict({name[len(prefix) + 1:]: array for name, array in params.items()
                                    if name.startswith(prefix + ".")})
        extra = [name for name in params if name.split(".", 1)[0] not in self.modules]
        if extra:
            raise KeyError(f"unexpected parameter {extra[0]!r}")


def make_optimizer(name, lr):
    return Adam(lr) if name == "adam" else Adagrad(lr)


def heldout_nll(model, held, batch, chunk):
    """Mean negative log-likelihood (nats) of held[1:] given the preceding characters.

    The held-out text is cut into up to `batch` streams that start from a zero state and are
    read `chunk` steps at a time with the state carried.
    """
    streams = max(1, min(batch, (len(held) - 1) // chunk))
    length = (len(held) - 1) // streams
    inputs = held[:streams * length].reshape(streams, length).T
    targets = held[1:streams * length + 1].reshape(streams, length).T
    model.rnn.eval()
    total, state = 0.0, None
    for start in range(0, length, chunk):
        logits, state = model.forward(inputs[start:start + chunk], state)
        loss, _ = softmax_cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                        targets[start:start + chunk].reshape(-1))
        total += loss * logits.shape[0] * streams
    model.rnn.train()
    return total / (length * streams)


def unigram_nll(train, held, vocab_size):
    """Mean NLL of held[1:] under the add-one smoothed character frequencies of `train`."""
    counts = np.bincount(train, minlength=vocab_size) + 1.0
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[held[1:]].mean())


def sample(model, vocab, prime, length, temperature, rng):
    """`prime` followed by `length` characters drawn one at a time from the model."""
    model.rnn.eval()
    logits, state = model.forward(encode(prime, vocab, "--prime")[:, None], None)
    chars = []
    for _ in range(length):
        scaled = logits[-1, 0].astype(np.float64) / temperature
        probs = np.exp(scaled - scaled.max())
        cumulative = np.cumsum(probs)
        index = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(vocab) - 1)
        chars.append(vocab[index])
        logits, state = model.forward(np.array([[index]]), state)
    model.rnn.train()
    return prime + "".join(chars)


# -- checkpoints --------------------------------------------------------------------------


def save_checkpoint(path, model, vocab, architecture, optimizer, optim_name, step):
    arrays = {
        "format": np.array(FORMAT),
        "options": np.array(json.dumps({**architecture, "optim": optim_name, "step": step})),
        "vocab": np.array([ord(char) for char in vocab], dtype=np.int32),
    }
    arrays.update({f"param/{name}": array for name, array in model.params.items()})
    arrays.update({f"optim/{key}": array for key, array in optimizer.state_dict().items()})
    try:
        with open(path, "wb") as file:  # a file object, so numpy does not append ".npz"
            np.savez(file, **arrays)
    except OSError as error:
        raise CharLMError(f"cannot write checkpoint {path}: {error.strerror}") from None


def load_checkpoint(path):
    """What save_checkpoint wrote: architecture, optim_name, step, vocab, params and optim state."""
    not_ours = f"{path} is not a fastrnn charlm checkpoint"
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CharLMError(f"cannot read checkpoint {path}: no such file") from None
    except IsADirectoryError:
        raise CharLMError(f"cannot read checkpoint {path}: it is a directory") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError):
        raise CharLMError(f"{not_ours} (not an .npz archive of plain arrays)") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise CharLMError(f"{not_ours} (it holds a single array, not an .npz archive)")
    try:
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise CharLMError(f"{not_ours} (an .npz archive that holds pickled objects or is damaged)") from None
    if str(arrays.get("format", "")) != FORMAT:
        raise CharLMError(f"{not_ours} (no '{FORMAT}' format marker)")
    try:
        options = json.loads(str(arrays["options"]))
        codes = arrays["vocab"]
        vocab = "".join(chr(code) for code in codes.tolist())
        architecture = {key: options[key] for key in ARCHITECTURE_DEFAULTS}
        step = int(options["step"])
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise CharLMError(f"checkpoint {path} is damaged ({type(error).__name__}: {error})") from None
    sizes_ok = all(isinstance(architecture[key], int) and architecture[key] > 0 for key in ("hidden", "embed"))
    if architecture["cell"] not in CELLS or architecture["layers"] not in (1, 2, 3) or not sizes_ok:
        raise CharLMError(f"checkpoint {path} is damaged (options {json.dumps(architecture)})")
    if not vocab or len(set(vocab)) != len(vocab):
        raise CharLMError(f"checkpoint {path} is damaged (its vocabulary is empty or repeats a character)")
    return {
        "architecture": architecture,
        "optim_name": options.get("optim"),
        "step": step,
        "vocab": vocab,
        "params": {name[len("param/"):]: value for name, value in arrays.items() if name.startswith("param/")},
        "optim": {name[len("optim/"):]: value for name, value in arrays.items() if name.startswith("optim/")},
    }


def resolve_architecture(args, checkpoint):
    """The model's options: the checkpoint's (a differing explicit option is an error), else args."""
    architecture = {}
    for key, default in ARCHITECTURE_DEFAULTS.items():
        given = getattr(args, key)
        if checkpoint is None:
            architecture[key] = default if given is None else given
            continue
        saved = checkpoint["architecture"][key]
        if given is not None and given != saved:
            raise CharLMError(f"checkpoint {args.load} holds a model with --{key} {saved}, not {given}")
        architecture[key] = saved
    return architecture


# -- the command --------------------------------------------------------------------------


def run(args):
    """Train, evaluate, sample and save as the options say; returns the exit code."""
    # Data-parallel under mpiexec: one rank's crash or error ends every rank (none is left waiting),
    # Ctrl-C stops them all after the same step, and only rank 0 prints, samples and writes files.
    distributed.abort_on_error()
    distributed.defer_interrupts()
    if not distributed.is_root():
        args = argparse.Namespace(**{**vars(args), "quiet": True, "sample": 0, "save": None, "json": None})
    try:
        with distributed.stdout_on_root_only():
            return _run(args)
    except CharLMError as error:
        print(f"fastrnn charlm: error: {error}", file=sys.stderr)
        distributed.abort(2)
        return 2


def _run(args):
    if args.steps is None:
        args.steps = 0 if args.load else DEFAULT_STEPS
    backend = choose_backend(args.backend, "charlm")
    if backend is None:
        return 2
    checkpoint = load_checkpoint(args.load) if args.load else None
    architecture = resolve_architecture(args, checkpoint)
    source, text = None, None
    if args.file is not None:
        source, text = args.file, read_text(args.file)
    elif args.steps > 0 or checkpoint is None:
        source, text = default_corpus()
    vocab = checkpoint["vocab"] if checkpoint else "".join(sorted(set(text)))
    prime = args.prime if args.prime is not None else ("\n" if "\n" in vocab else vocab[0])
    if not prime:
        raise CharLMError("--prime must have at least one character")
    encode(prime, vocab, "--prime")  # fail now rather than after training

    init_seed, sample_seed = np.random.SeedSequence(args.seed).spawn(2)
    model = CharModel(len(vocab), architecture, backend, init_seed)
    optimizer = make_optimizer(args.optim, args.lr or DEFAULT_LR[args.optim])
    step = restore(model, optimizer, checkpoint, args) if checkpoint else 0
    # Data-parallel: every rank starts from rank 0's weights and optimizer state.
    distributed.broadcast_parameters(model.params)
    distributed.broadcast_optimizer_state(optimizer)
    cells = f"{architecture['cell'].upper()} {architecture['layers']}x{architecture['hidden']}"
    origin = f"checkpoint {args.load} (step {step})" if checkpoint else f"seed {args.seed}"
    print(f"charlm: {cells}, embedding {architecture['embed']}, vocabulary {len(vocab)}, from {origin}, "
          f"backend {backend}")
    results = {"backend": backend, "vocab_size": len(vocab), **architecture, "seed": args.seed, "start_step": step}

    if text is not None:
        data = encode(text, vocab, source)
        split = int(len(data) * (1 - HELD_OUT_FRACTION))
        train, held = data[:split], data[split:]
        check_lengths(source, train, held, args)
        unigram = math.exp(unigram_nll(train, held, len(vocab)))
        print(f"text: {source}, {len(data):,} characters ({len(train):,} for training, {len(held):,} held out)")
        results.update(source=source, characters=len(data), unigram_perplexity=unigram)
        if args.steps > 0:
            results.update(train_model(model, optimizer, train, held, step, args, unigram))
            step = results["steps_total"]
        if not distributed.is_root():
            return 0  # data-parallel: rank 0 alone evaluates, samples and writes
        if results.get("history"):
            perplexity = results["history"][-1]["heldout_perplexity"]
        else:
            perplexity = math.exp(heldout_nll(model, held, args.batch, 4 * args.bptt))
        ratio = unigram / perplexity
        print(f"held-out perplexity {perplexity:.2f} vs unigram baseline {unigram:.2f} "
              f"({ratio:.1f}x {'lower' if ratio >= 1 else 'higher'})")
        results["heldout_perplexity"] = perplexity

    if args.sample:
        generated = sample(model, vocab, prime, args.sample, args.temperature, np.random.default_rng(sample_seed))
        print(f"\n--- sample: {args.sample} characters at temperature {args.temperature}, seed {args.seed} ---")
        print(generated)
        print("--- end of sample ---")
        results["sample"] = generated
    if args.save:
        save_checkpoint(args.save, model, vocab, architecture, optimizer, args.optim, step)
        print(f"saved checkpoint {args.save} (step {step})")
    if args.json and not write_json(args.json, results, "charlm"):
        return 2
    return 0


def restore(model, optimizer, checkpoint, args):
    """Load the checkpoint's weights (and optimizer state, for the same optimizer); returns its step."""
    try:
        model.load(checkpoint["params"])
    except (KeyError, ValueError, TypeError) as error:
        message = error.args[0] if error.args else error
        raise CharLMError(f"checkpoint {args.load} does not fit this model: {message}") from None
    if checkpoint["optim"] and checkpoint["optim_name"] == args.optim:
        try:
            optimizer.load_state_dict(checkpoint["optim"])
        except (KeyError, ValueError, TypeError) as error:
            message = error.args[0] if error.args else error
            raise CharLMError(f"checkpoint {args.load} has a damaged optimizer state: {message}") from None
    elif checkpoint["optim"]:
        print(f"fastrnn charlm: note: the checkpoint holds {checkpoint['optim_name']} state; "
              f"--optim {args.optim} starts afresh", file=sys.stderr)
    return checkpoint["step"]


def check_lengths(source, train, held, args):
    """CharLMError unless the text is long enough for the streams and the held-out part."""
    minimum = args.batch * (args.bptt + 1)
    if args.steps > 0 and len(train) < minimum:
        raise CharLMError(
            f"{source} is too short: its training part has {len(train)} characters, but --batch {args.batch} "
            f"streams of --bptt {args.bptt} + 1 need {minimum} (use a longer text or smaller --batch/--bptt)")
    if len(held) < 2:
        raise CharLMError(f"{source} is too short to hold out {HELD_OUT_FRACTION:.0%} of it "
                          f"({len(train) + len(held)} characters)")


def train_step(model, optimizer, inputs, targets, state, clip):
    """One chunk: forward from `state`, backward, clip, update; returns (loss, state after the chunk).

    A non-finite gradient norm (an overflow) skips the update and returns a NaN loss.
    """
    model.zero_grad()
    logits, state = model.forward(inputs, state)
    loss, dlogits = softmax_cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    model.backward(dlogits.reshape(logits.shape))
    # Data-parallel: the gradient of the whole batch's mean loss, before clipping, on every rank.
    distributed.average_gradients(model.grads, weight=inputs.shape[1])
    if not math.isfinite(clip_grad_norm(model.grads, clip)):
        return math.nan, state
    optimizer.step(model.params, model.grads)
    return loss, state


def train_model(model, optimizer, train, held, first_step, args, unigram):
    """Truncated BPTT over `--batch` streams of `train`; returns the numbers for the report.

    The data position follows the global step, so training resumed from a checkpoint continues
    where it stopped (from a zero state). Ctrl-C ends training early; the model is then still
    evaluated, sampled and saved.
    """
    length = len(train) // args.batch
    streams = train[:args.batch * length].reshape(args.batch, length)
    # Data-parallel: this rank's contiguous share of the streams, so each global batch is split.
    if args.batch < distributed.size():
        raise CharLMError(f"--batch {args.batch} is smaller than the {distributed.size()} processes: "
                          "each needs at least one stream")
    streams = distributed.shard(streams)
    chunks_per_pass = (length - 1) // args.bptt
    deadline = time.perf_counter() + 60 * args.minutes if args.minutes else math.inf
    history, running, skipped, state, done, stop = [], None, 0, None, 0, False
    bar = tqdm(total=args.steps, desc="charlm", unit="step", disable=args.quiet, file=sys.stderr,
               dynamic_ncols=True)

    def evaluate():
        if not distributed.is_root():
            return
        perplexity = math.exp(heldout_nll(model, held, args.batch, 4 * args.bptt))
        history.append({"step": first_step + done, "train_loss": running, "heldout_perplexity": perplexity})
        bar.set_postfix_str(f"loss {running:.3f}, held-out ppl {perplexity:.2f}")
        if not args.quiet:
            bar.write(f"step {first_step + done}: train loss {running:.3f} (ppl {math.exp(running):.2f}), "
                      f"held-out perplexity {perplexity:.2f} (unigram {unigram:.2f})", file=sys.stderr)

    start = time.perf_counter()
    try:
        while done < args.steps and not stop:
            chunk = (first_step + done) % chunks_per_pass
            if chunk == 0:
                state = None  # a new pass over the text: every stream starts again at its beginning
            position = chunk * args.bptt
            inputs = streams[:, position:position + args.bptt].T
            targets = streams[:, position + 1:position + args.bptt + 1].T
            loss, state = train_step(model, optimizer, inputs, targets, state, args.clip)
            # Data-parallel: the whole batch's loss, and every rank stops at the same step.
            time_up = time.perf_counter() >= deadline
            loss, stop = distributed.combine_metrics([loss, time_up or distributed.interrupted()],
                                                     weight=inputs.shape[1])
            done += 1
            bar.update(1)
            if stop and distributed.interrupted():  # Ctrl-C, now at the same step on every rank
                if distributed.is_root():
                    raise KeyboardInterrupt  # reported and handled as in one process
                break
            if math.isnan(loss):
                skipped += 1
                continue
            running = loss if running is None else 0.95 * running + 0.05 * loss
            if done % args.eval_every == 0:
                evaluate()
            elif done % 10 == 0:
                bar.set_postfix_str(f"loss {running:.3f}", refresh=False)
    except KeyboardInterrupt:
        bar.write("interrupted: training stops here; evaluating, sampling and saving what it learnt",
                  file=sys.stderr)
    seconds = time.perf_counter() - start
    if running is not None and (not history or history[-1]["step"] != first_step + done):
        evaluate()
    bar.close()
    print(f"trained {done} steps ({done * args.batch * args.bptt:,} characters) in {seconds:.1f} s"
          + (f", {skipped} skipped for a non-finite gradient" if skipped else ""))
    return {"steps": done, "steps_total": first_step + done, "train_seconds": seconds,
            "train_loss": running, "history": history}
