"""What the converters share: the (layer, direction) units of a fastrnn layer and their arrays.

A fastrnn layer is a stack of `num_layers * num_directions` units, each holding PyTorch's
`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh` (and `weight_peephole`) for one direction of one
layer. Other formats store one unit at a time too, in their own gate order; converters go
through `unit_arrays` / `load_units` and only reorder gates and transpose.
"""
import numpy as np

from ..layers import GRU, LSTM, RNN

# The unit arrays' short names -> PyTorch's parameter name prefixes (the names of `state_dict`).
PREFIXES = {
    "w_ih": "weight_ih",
    "w_hh": "weight_hh",
    "b_ih": "bias_ih",
    "b_hh": "bias_hh",
    "w_peep": "weight_peephole",
}

# The ONNX and Keras operator names of fastrnn's layer classes.
CELL_NAMES = {LSTM: "LSTM", GRU: "GRU", RNN: "RNN"}


def reorder_gates(array, order, hidden):
    """The gate blocks of `array` (axis 0 holds G blocks of `hidden` rows) taken in `order`."""
    return np.concatenate([array[gate * hidden:(gate + 1) * hidden] for gate in order])


def check_layer(layer):
    """The layer's cell name ("LSTM", "GRU" or "RNN"); TypeError for anything else, ValueError for
    an LSTM with proj_size > 0 or without forget gate (neither ONNX's nor Keras's LSTM has them)."""
    name = CELL_NAMES.get(type(layer))
    if name is None:
        raise TypeError(f"layer must be a fastrnn LSTM, GRU or RNN, got {type(layer).__name__}")
    if getattr(layer, "proj_size", 0):
        raise ValueError(f"layer has proj_size={layer.proj_size}: ONNX's and Keras's LSTM have no projection "
                         "(weight_hr), only proj_size=0 converts")
    if not getattr(layer, "forget_gate", True):
        raise ValueError("layer has forget_gate=False: ONNX's and Keras's LSTM always have a forget gate")
    return name


def cell_option(layer, name):
    """The value of a cell option (GRU's reset_after, RNN's nonlinearity) as `repr(layer)` shows it."""
    return layer._cell_options[name]


def unit_suffixes(layer):
    """The parameter name suffix of every unit, in PyTorch's order: "_l0", "_l0_reverse", "_l1", ..."""
    directions = ("", "_reverse") if layer.bidirectional else ("",)
    return [f"_l{index}{direction}" for index in range(layer.num_layers) for direction in directions]


def unit_arrays(layer):
    """One dict per unit, short name -> a copy of the array (b_*, w_peep only when the layer has them)."""
    params = layer.state_dict()
    units = []
    for suffix in unit_suffixes(layer):
        units.append({
            short: params[prefix + suffix] for short, prefix in PREFIXES.items() if prefix + suffix in params
        })
    return units


def load_units(layer, units):
    """Load one dict per unit (as from `unit_arrays`) into `layer`, all checked before anything changes.

    A missing bias stands for zeros when the layer has biases (formats with one bias per gate).
    """
    suffixes = unit_suffixes(layer)
    if len(units) != len(suffixes):
        raise ValueError(f"{len(suffixes)} units (num_layers * directions) expected, got {len(units)}")
    params = layer.state_dict()
    state = {}
    for suffix, unit in zip(suffixes, units):
        for short, prefix in PREFIXES.items():
            name = prefix + suffix
            if name in params:
                state[name] = unit[short] if unit.get(short) is not None else np.zeros_like(params[name])
    layer.load_state_dict(state)
