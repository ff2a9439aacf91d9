"""Whole-model checkpoints: any set of modules, an optimizer's state and metadata in one file.

`save(path, modules={"embed": embedding, "rnn": lstm, "head": linear}, optimizer=adam,
metadata={"epoch": 3})` writes one `.npz` file and `load(path)` rebuilds everything from it. No
pickle anywhere: the file is a NumPy zip archive read with `allow_pickle=False`, holding

- `__manifest__`: a JSON document (UTF-8 bytes as a uint8 array) with the format name and
  version, each module's class and constructor arguments, the optimizer's class and
  hyperparameters, the metadata, and the shape and dtype of every other array in the file;
- `module/<name>/<parameter>`: each module's parameters (PyTorch's names for the recurrent layers);
- `optimizer/<key>`: the optimizer's `state_dict()` (keys like "rnn.weight_ih_l0/exp_avg").

The file is written through `fastrnn._io.atomic_write`, so a crash or kill during `save` leaves
the previous file whole. `load` checks every array header against the archive's size and the
manifest before reading any array (so no damaged header can make it allocate more than the file
holds), builds each module from its manifest entry and checks its parameter shapes against the
arrays before loading them; a damaged or inconsistent file is a ValueError naming the entry.
"""
from __future__ import annotations

import json
import zipfile
import zlib
import os
from typing import Any, Dict, Mapping, NamedTuple, Optional, Union

import numpy as np

from . import cells, layers, modules as simple_modules, optim
from ._io import atomic_write
from ._npz import read_arrays, read_headers

__all__ = ["save", "load", "Checkpoint"]

FORMAT = "fastrnn-checkpoint"
VERSION = 1
MANIFEST = "__manifest__"

# The classes a checkpoint can hold, by the name the manifest records.
MODULE_CLASSES = {cls.__name__: cls for cls in (
    layers.LSTM, layers.GRU, layers.RNN, cells.LSTMCell, cells.GRUCell, cells.RNNCell, simple_modules.Linear,
    simple_modules.Embedding)}
OPTIMIZER_CLASSES = {cls.__name__: cls for cls in (optim.SGD, optim.Adagrad, optim.Adam)}
# Each optimizer's constructor arguments, all kept as attributes of the same name.
OPTIMIZER_ARGUMENTS = {"SGD": ("lr", "momentum", "weight_decay"), "Adagrad": ("lr", "eps", "weight_decay"),
                       "Adam": ("lr", "betas", "eps", "weight_decay")}


class Checkpoint(NamedTuple):
    """What `load` returns.

    Attributes
    ----------
    modules : dict of str to module
        The rebuilt modules, by the names given to `save`.
    optimizer : fastrnn.optim.SGD, Adagrad, Adam or None
        With its hyperparameters and state, or None when none was saved.
    metadata : dict
        The metadata given to `save` (JSON types), {} when none was.
    """

    modules: Dict[str, Any]
    optimizer: Optional[optim.Optimizer]
    metadata: Dict[str, Any]


def _module_config(module):
    """(class name, constructor keyword arguments) that rebuild `module` with its parameter shapes."""
    name = type(module).__name__
    if MODULE_CLASSES.get(name) is not type(module):
        raise TypeError(f"modules can hold {', '.join(MODULE_CLASSES)}, got {type(module).__name__}")
    if name == "Linear":
        config = {"in_features": module.in_features, "out_features": module.out_features,
                  "bias": "bias" in module.params}
    elif name == "Embedding":
        config = {"num_embeddings": module.num_embeddings, "embedding_dim": module.embedding_dim}
    else:
        keys = ("input_size", "hidden_size", "bias")
        if name in ("LSTM", "GRU", "RNN"):
            keys += ("num_layers", "batch_first", "bidirectional", "dropout")
        config = {key: getattr(module, key) for key in keys}
        if name in ("LSTM", "LSTMCell"):
            config.update(peephole=module.peephole, forget_gate=module.forget_gate)
        if name == "LSTM":
            config["proj_size"] = module.proj_size
        # The cell's own options (GRU's reset_after, RNN's nonlinearity), where repr(layer) reads them.
        config.update(module._cell_options)
    config["dtype"] = module.dtype.name
    return name, config


def _check_name(name):
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"module names must be non-empty strings without '/', got {name!r}")
    return name


def save(path: Union[str, os.PathLike], modules: Mapping[str, Any], optimizer: Optional[optim.Optimizer] = None,
         metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Write `modules`, `optimizer`'s state and `metadata` to one `.npz` file at `path`, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (replaced whole; no suffix is added).
    modules : dict of str to module
        fastrnn LSTM, GRU, RNN, Linear and Embedding modules by name (names without "/").
        Parameters are saved in each module's dtype (float32 or float64).
    optimizer : fastrnn.optim.SGD, Adagrad or Adam, optional
        Its hyperparameters and `state_dict()` are saved.
    metadata : dict, optional
        Anything JSON can hold (epoch, loss, vocabulary, ...), returned by `load` as it is.

    Raises
    ------
    TypeError
        For a module or optimizer of another class, or metadata JSON cannot hold.
    ValueError
        For a bad module name.
    """
    if not isinstance(modules, dict):
        raise TypeError(f"modules must be a dict of name -> module, got {type(modules).__name__}")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    arrays, manifest = {}, {"format": FORMAT, "version": VERSION, "modules": {}, "optimizer": None,
                            "metadata": metadata, "arrays": {}}
    for name, module in modules.items():
        class_name, config = _module_config(module)
        manifest["modules"][_check_name(name)] = {"class": class_name, "config": config,
                                                  "training": getattr(module, "training", True)}
        for parameter, value in module.params.items():
            arrays[f"module/{name}/{parameter}"] = value
    if optimizer is not None:
        class_name = type(optimizer).__name__
        if OPTIMIZER_CLASSES.get(class_name) is not type(optimizer):
            raise TypeError(f"optimizer must be one of {', '.join(OPTIMIZER_CLASSES)}, got {class_name}")
        config = {key: getattr(optimizer, key) for key in OPTIMIZER_ARGUMENTS[class_name]}
        manifest["optimizer"] = {"class": class_name, "config": config}
        for key, value in optimizer.state_dict().items():
            arrays[f"optimizer/{key}"] = value
    manifest["arrays"] = {key: {"shape": list(value.shape), "dtype": value.dtype.name} for key, value in arrays.items()}
    try:
        text = json.dumps(manifest, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata must hold only JSON types (dict, list, str, int, float, bool, None): {error}") from None
    arrays[MANIFEST] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    with atomic_write(path) as file:
        np.savez(file, **arrays)


def load(path: Union[str, os.PathLike], *, backend: str = "auto") -> Checkpoint:
    """Rebuild the modules, optimizer and metadata saved by `save`.

    Parameters
    ----------
    path : str or os.PathLike
    backend : str
        The backend of the rebuilt recurrent layers and cells ("auto", "cython" or "reference").

    Returns
    -------
    Checkpoint
        `(modules, optimizer, metadata)`; modules in their saved dtype and training mode.

    Raises
    ------
    ValueError
        When the file is not a fastrnn checkpoint, is damaged (truncated, corrupted bytes), or
        its arrays disagree with its manifest; the message names the file and the entry.
    FileNotFoundError
        When there is no file at `path`.
    """
    manifest, arrays = _read(path)
    built = {}
    for name, entry in manifest["modules"].items():
        built[name] = _build_module(path, name, entry, arrays, backend)
    optimizer = None
    if manifest["optimizer"] is not None:
        entry = manifest["optimizer"]
        cls = OPTIMIZER_CLASSES.get(entry.get("class"))
        if cls is None:
            raise ValueError(f"{path}: unknown optimizer class {entry.get('class')!r}")
        try:
            optimizer = cls(**entry["config"])
            optimizer.load_state_dict({key[len("optimizer/"):]: value for key, value in arrays.items()
                                       if key.startswith("optimizer/")})
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: the optimizer's entry does not load: {error}") from None
    return Checkpoint(built, optimizer, manifest["metadata"])


def _read(path):
    """(manifest, arrays) from the file: every array header checked against the manifest's shape
    and dtype before the arrays are read (see fastrnn._npz)."""
    headers = read_headers(path)
    if MANIFEST not in headers or headers[MANIFEST][1] != np.uint8 or len(headers[MANIFEST][0]) != 1:
        raise ValueError(f"{path} is not a fastrnn checkpoint (no {MANIFEST} entry of bytes)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            manifest = json.loads(archive[MANIFEST].tobytes().decode("utf-8"))
    except (OSError, EOFError, ValueError, UnicodeDecodeError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{path}: the manifest does not read: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fastrnn checkpoint (format {manifest.get('format')!r})"
                         if isinstance(manifest, dict) else f"{path}: the manifest is not a JSON object")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {manifest.get('version')!r}, this fastrnn reads version {VERSION}")
    for field in ("modules", "metadata", "arrays"):
        if not isinstance(manifest.get(field), dict):
            raise ValueError(f"{path}: the manifest's {field!r} is missing or not a JSON object")
    listed = manifest["arrays"]
    found = {name: header for name, header in headers.items() if name != MANIFEST}
    if set(listed) != set(found):
        difference = sorted(set(listed) ^ set(found))
        raise ValueError(f"{path}: the manifest and the archive disagree about entry {difference[0]!r}")
    for key, (shape, dtype) in found.items():
        entry = listed[key] if isinstance(listed[key], dict) else {}
        shape_listed = entry.get("shape")
        want = (tuple(shape_listed) if isinstance(shape_listed, list) else shape_listed, entry.get("dtype"))
        if (shape, dtype.name) != want:
            raise ValueError(f"{path}: entry {key!r} has shape {shape} and dtype {dtype.name}, "
                             f"the manifest says shape {want[0]} and dtype {want[1]}")
    arrays = read_arrays(path)
    del arrays[MANIFEST]
    return manifest, arrays


def _build_module(path, name, entry, arrays, backend):
    """The module `name` built from its manifest entry, checked against its arrays, then loaded."""
    cls = MODULE_CLASSES.get(entry.get("class"))
    if cls is None:
        raise ValueError(f"{path}: module {name!r} has unknown class {entry.get('class')!r}")
    config = dict(entry.get("config", {}))
    if cls not in (simple_modules.Linear, simple_modules.Embedding):
        config["backend"] = backend  # layers and cells
    try:
        module = cls(**config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: module {name!r} cannot be built from its config {config}: {error}") from None
    prefix = f"module/{name}/"
    saved = {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
    expected = {key: (value.shape, value.dtype) for key, value in module.params.items()}
    found = {key: (value.shape, value.dtype) for key, value in saved.items()}
    if expected != found:
        wrong = sorted(key for key in set(expected) | set(found) if expected.get(key) != found.get(key))
        raise ValueError(f"{path}: module {name!r}'s parameter {wrong[0]!r} is {found.get(wrong[0])} in the file "
                         f"but {expected.get(wrong[0])} for {module!r}")
    module.load_state_dict(saved)
    if hasattr(module, "train"):
        module.train(bool(entry.get("training", True)))
    return module
