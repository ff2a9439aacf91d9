"""The one table of cell cases the tests share, derived from the cell registry (fastrnn/_cells.py):
every cell with every variant of its options, with and without peepholes where it has them."""
import importlib
import itertools
from typing import NamedTuple

import numpy as np

import fastrnn
from fastrnn._cells import CELLS

# The public layer of each cell, and the layer arguments that select the cell.
LAYERS = {
    "rnn": (fastrnn.RNN, {}),
    "lstm": (fastrnn.LSTM, {}),
    "lstm_nf": (fastrnn.LSTM, {"forget_gate": False}),
    "gru": (fastrnn.GRU, {}),
}


class Case(NamedTuple):
    cell: str
    options: dict
    peephole: bool


def _cases():
    for spec in CELLS.values():
        variants = [[(option.name, value, label) for value, label in option.variants.items()]
                    for option in spec.options]
        for choice in itertools.product(*variants):
            for peephole in (False, True) if spec.peephole_gates else (False,):
                name = "_".join([spec.name] + [label for _, _, label in choice]
                                + (["peephole"] if peephole else []))
                yield name, Case(spec.name, {option: value for option, value, _ in choice}, peephole)


# name -> Case, e.g. "gru_reset_before" -> Case("gru", {"reset_after": False}, False)
CASES = dict(_cases())


def reference(cell):
    """The reference module of `cell`."""
    return importlib.import_module(CELLS[cell].reference)


def kernels(cell):
    """The compiled module of `cell` (ImportError when it does not import)."""
    return importlib.import_module(CELLS[cell].kernels)


def num_states(cell):
    return len(CELLS[cell].state_names)


def make_params(case, rng, dtype, D, H, bias=True, scale=0.5):
    """Random parameters of one direction of one layer for `case`, uniform in ±scale."""
    cell, _, peephole = CASES[case]
    shapes = CELLS[cell].param_shapes(D, H, bias, peephole)
    params = {name: rng.uniform(-scale, scale, shape).astype(dtype) for name, shape in shapes.items()}
    for name in ("b_ih", "b_hh"):
        params.setdefault(name, None)
    if CELLS[cell].peephole_gates:
        params.setdefault("w_peep", None)
    return params


def make_layer(case, input_size, hidden_size, **options):
    """The public layer of `case` (its cell, options and peepholes), with `options` on top."""
    cell, cell_options, peephole = CASES[case]
    cls, selection = LAYERS[cell]
    if peephole:
        options = {"peephole": True, **options}
    return cls(input_size, hidden_size, **selection, **cell_options, **options)
