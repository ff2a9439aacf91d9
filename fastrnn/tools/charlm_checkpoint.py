"""charlm's checkpoints: one uncompressed, pickle-free .npz, written atomically and validated
against the sizes its stored options imply before anything large is read (docs/cli.md §3)."""
import json
import pickle
import zipfile
import zlib

import numpy as np

from .. import _cells, _npz
from .._io import atomic_write
from ..optim import Adagrad, Adam

FORMAT = "fastrnn-charlm-1"
# "rnn" is min-char-rnn's tanh Elman RNN.
CELL_NAMES = ("lstm", "gru", "rnn")
ARCHITECTURE_DEFAULTS = {"cell": "lstm", "layers": 1, "hidden": 256, "embed": 32}
DTYPE = np.float32
# A checkpoint's JSON options and format marker are small; a larger text member is damage.
MAX_TEXT_BYTES = 1 << 20


class CharLMError(Exception):
    """Bad input (file, checkpoint, prime): reported as one line on stderr, exit code 2."""


def expected_param_shapes(architecture, vocab_size):
    """"module.name" -> shape of every parameter of a CharModel, computed without building one."""
    hidden, embed = architecture["hidden"], architecture["embed"]
    gate_rows = _cells.CELLS[architecture["cell"]].num_gates * hidden  # charlm's cell names are specs
    shapes = {"embed.weight": (vocab_size, embed)}
    for layer in range(architecture["layers"]):
        shapes[f"rnn.weight_ih_l{layer}"] = (gate_rows, embed if layer == 0 else hidden)
        shapes[f"rnn.weight_hh_l{layer}"] = (gate_rows, hidden)
        shapes[f"rnn.bias_ih_l{layer}"] = (gate_rows,)
        shapes[f"rnn.bias_hh_l{layer}"] = (gate_rows,)
    shapes.update({"head.weight": (vocab_size, hidden), "head.bias": (vocab_size,)})
    return shapes


OPTIMIZERS = {"adam": Adam, "adagrad": Adagrad}


def make_optimizer(name, lr):
    return OPTIMIZERS[name](lr)


def optimizer_entries(name):
    """buffer -> "like param" or "step": the entries `state_dict` keeps per parameter for `name`.

    Read from a real optimizer after one step on a one-element parameter, so this follows the
    optimizer's own state layout.
    """
    optimizer = make_optimizer(name, 1.0)
    optimizer.step({"p": np.zeros(1, DTYPE)}, {"p": np.zeros(1, DTYPE)})
    return {key.rpartition("/")[2]: "like param" if value.shape == (1,) else "step"
            for key, value in optimizer.state_dict().items()}


def save_checkpoint(path, model, vocab, architecture, optimizer, optim_name, step, corpus):
    """Write the checkpoint atomically: a crash or a full disk leaves the previous file at `path`."""
    options = {**architecture, "optim": optim_name, "step": step, "corpus": corpus}
    arrays = {
        "format": np.array(FORMAT),
        "options": np.array(json.dumps(options)),
        "vocab": np.array([ord(char) for char in vocab], dtype=np.int32),
    }
    arrays.update({f"param/{name}": array for name, array in model.params.items()})
    arrays.update({f"optim/{key}": array for key, array in optimizer.state_dict().items()})
    try:
        with atomic_write(path) as file:  # a file object, so numpy does not append ".npz"
            np.savez(file, **arrays)
    except OSError as error:
        raise CharLMError(f"cannot write checkpoint {path}: {error.strerror or error}") from None


def read_headers(path):
    """name -> (shape, dtype) of every array of the checkpoint at `path`, from the headers alone
    (see fastrnn/_npz.py: no header can make the loader allocate more than the file holds)."""
    try:
        return _npz.read_headers(path)
    except FileNotFoundError:
        raise CharLMError(f"cannot read checkpoint {path}: no such file") from None
    except ValueError as error:
        raise CharLMError(f"{error}: not a fastrnn charlm checkpoint") from None


def check_header(path, name, header, shape, kinds, itemsize=None):
    """CharLMError unless array `name` has `shape` and a dtype of one of `kinds` (and `itemsize`)."""
    got_shape, dtype = header
    if dtype.kind not in kinds or (itemsize is not None and dtype.itemsize != itemsize):
        raise CharLMError(f"checkpoint {path} is damaged ({name!r} has dtype {dtype})")
    if shape is not None and got_shape != shape:
        raise CharLMError(f"checkpoint {path} does not fit this model ({name!r} has shape {got_shape}, "
                          f"the options imply {shape})")


def read_arrays(path, names):
    """The arrays `names` of the .npz at `path`, loaded without pickle."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in names}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, pickle.UnpicklingError) as error:
        raise CharLMError(f"checkpoint {path} is damaged (reading its arrays: {error})") from None


def is_size(value, low, high=None):
    """True for an int (not a bool) in [low, high]."""
    return (isinstance(value, int) and not isinstance(value, bool) and value >= low
            and (high is None or value <= high))


def parse_options(path, text):
    """The stored options (architecture, optimizer, step, corpus), each checked for type and range."""
    damaged = f"checkpoint {path} is damaged"
    try:
        options = json.loads(text)
    except ValueError:
        raise CharLMError(f"{damaged} (its options are not JSON)") from None
    if not isinstance(options, dict):
        raise CharLMError(f"{damaged} (its options are not a JSON object)")
    missing = [key for key in (*ARCHITECTURE_DEFAULTS, "step") if key not in options]
    if missing:
        raise CharLMError(f"{damaged} (its options lack {missing[0]!r})")
    architecture = {key: options[key] for key in ARCHITECTURE_DEFAULTS}
    valid = (isinstance(architecture["cell"], str) and architecture["cell"] in CELL_NAMES
             and is_size(architecture["layers"], 1, 3)
             and is_size(architecture["hidden"], 1) and is_size(architecture["embed"], 1))
    if not valid:
        raise CharLMError(f"{damaged} (options {json.dumps(architecture)}: expected cell one of {', '.join(CELL_NAMES)}, "
                          "layers an integer 1-3, hidden and embed positive integers)")
    if not is_size(options["step"], 0):
        raise CharLMError(f"{damaged} (step {json.dumps(options['step'])} is not a non-negative integer)")
    optim_name = options.get("optim")
    if optim_name is not None and optim_name not in OPTIMIZERS:
        raise CharLMError(f"{damaged} (unknown optimizer {json.dumps(optim_name)})")
    corpus = options.get("corpus")
    corpus_ok = corpus is None or (
        isinstance(corpus, dict) and set(corpus) == {"path", "sha256"}
        and (corpus["path"] is None or isinstance(corpus["path"], str))
        and isinstance(corpus["sha256"], str) and len(corpus["sha256"]) == 64)
    if not corpus_ok:
        raise CharLMError(f"{damaged} (its corpus record {json.dumps(corpus)} is not a path and a SHA-256)")
    return architecture, optim_name, options["step"], corpus


def parse_vocab(path, codes):
    """The vocabulary string from its int32 code points; CharLMError for repeats or non-characters."""
    codes = codes.tolist()
    if not codes or len(set(codes)) != len(codes):
        raise CharLMError(f"checkpoint {path} is damaged (its vocabulary is empty or repeats a character)")
    if any(not (0 <= code <= 0x10FFFF) or 0xD800 <= code <= 0xDFFF for code in codes):
        raise CharLMError(f"checkpoint {path} is damaged (its vocabulary holds a value that is no character)")
    return "".join(map(chr, codes))


def load_checkpoint(path):
    """What save_checkpoint wrote: architecture, optim_name, step, corpus, vocab, params and optim state.

    Validated before anything large is read: the array headers must match the shapes and dtypes
    the stored options imply, the archive must have exactly the expected arrays, and every
    loaded weight and optimizer buffer must be finite. Anything else is a CharLMError.
    """
    not_ours = f"{path} is not a fastrnn charlm checkpoint"
    headers = read_headers(path)
    small = {"format": "U", "options": "U", "vocab": "iu"}
    for name, kinds in small.items():
        if name not in headers:
            raise CharLMError(f"{not_ours} (no {name!r} array)")
        check_header(path, name, headers[name], None, kinds)
    for name in ("format", "options"):
        shape, dtype = headers[name]
        if shape != () or dtype.itemsize > MAX_TEXT_BYTES:
            raise CharLMError(f"{not_ours} ({name!r} is not a short string)")
    if len(headers["vocab"][0]) != 1 or headers["vocab"][0][0] > 0x110000:
        raise CharLMError(f"checkpoint {path} is damaged (its vocabulary has shape {headers['vocab'][0]})")
    meta = read_arrays(path, small)
    if str(meta["format"]) != FORMAT:
        raise CharLMError(f"{not_ours} (no '{FORMAT}' format marker)")
    architecture, optim_name, step, corpus = parse_options(path, str(meta["options"]))
    vocab = parse_vocab(path, meta["vocab"])

    expected = {f"param/{name}": shape for name, shape in expected_param_shapes(architecture, len(vocab)).items()}
    optim_names = [name for name in headers if name.startswith("optim/")]
    if optim_names:
        if optim_name is None:
            raise CharLMError(f"checkpoint {path} is damaged (optimizer state but no optimizer named)")
        for name, shape in list(expected.items()):
            for buffer, kind in optimizer_entries(optim_name).items():
                expected[f"optim/{name[len('param/'):]}/{buffer}"] = shape if kind == "like param" else ()
    missing = [name for name in expected if name not in headers]
    extra = [name for name in headers if name not in expected and name not in small]
    if missing or extra:
        what = f"lacks array {missing[0]!r}" if missing else f"has an unexpected array {extra[0]!r}"
        raise CharLMError(f"checkpoint {path} does not fit this model (it {what} for {describe(architecture)})")
    for name, shape in expected.items():
        is_step = name.endswith("/step")
        check_header(path, name, headers[name], shape, "iu" if is_step else "f", None if is_step else 4)

    arrays = read_arrays(path, expected)
    for name, array in arrays.items():
        if name.endswith("/step"):
            if array < 0:
                raise CharLMError(f"checkpoint {path} is damaged ({name!r} is negative)")
        elif not np.isfinite(array).all():
            raise CharLMError(f"checkpoint {path} holds non-finite values (NaN or inf) in {name!r}: "
                              "the model it saved had diverged")
    return {
        "architecture": architecture,
        "optim_name": optim_name,
        "step": step,
        "corpus": corpus,
        "vocab": vocab,
        "params": {name[len("param/"):]: value.astype(DTYPE) for name, value in arrays.items()
                   if name.startswith("param/")},
        "optim": {name[len("optim/"):]: value for name, value in arrays.items() if name.startswith("optim/")},
    }


def describe(architecture):
    """"LSTM 2x256, embedding 32"."""
    return (f"{architecture['cell'].upper()} {architecture['layers']}x{architecture['hidden']}, "
            f"embedding {architecture['embed']}")
