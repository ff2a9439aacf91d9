"""Keras 3 weights in and out: `LSTM`, `GRU` (both `reset_after` modes) and `SimpleRNN`.

Keras stores one layer and direction per `get_weights()` list:
``[kernel (D, G*H), recurrent_kernel (H, G*H), bias]``, without the bias when `use_bias=False`.
The kernels are fastrnn's (PyTorch's) `weight_ih` / `weight_hh` transposed. Gate orders:

- LSTM: Keras i, f, c, o is PyTorch's i, f, g, o; Keras has one bias, `bias_ih + bias_hh`.
- GRU: Keras z, r, h against PyTorch's r, z, n. With `reset_after=True` (Keras's default) the
  bias is (2, 3H), the input and recurrent biases; with `reset_after=False` it is one (3H,) bias,
  `bias_ih + bias_hh`. Both cells are the same equations as fastrnn's GRU with the same `reset_after`
  (see docs/math.md).
- SimpleRNN: one gate, one bias `bias_ih + bias_hh`, activation tanh or relu.

A stack of layers (and `keras.layers.Bidirectional`, forward then backward) is the units' lists
one after the other, as ``sum((l.get_weights() for l in keras_layers), [])`` gives them.
Keras has no peephole LSTM. Nothing here imports Keras.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .._layer import RecurrentLayer
from ._common import cell_option, check_layer, load_units, reorder_gates, unit_arrays

__all__ = ["to_keras_weights", "load_keras_weights"]

# For each cell: the PyTorch gate (row block) at each Keras gate position. Each order is its own
# inverse, so the same order maps Keras's gates back.
_KERAS_GATES = {"LSTM": (0, 1, 2, 3), "GRU": (1, 0, 2), "RNN": (0,)}


def _split_bias(layer):
    """Whether this layer's Keras bias is the (2, 3H) pair of input and recurrent biases."""
    return check_layer(layer) == "GRU" and cell_option(layer, "reset_after")


def _check_supported(layer):
    cell = check_layer(layer)
    if layer.peephole:
        raise ValueError("Keras has no peephole LSTM: a layer with peephole=True has no Keras weights")
    return cell


def to_keras_weights(layer: RecurrentLayer) -> List[np.ndarray]:
    """The layer's weights as Keras `set_weights` lists, every unit's list one after the other.

    Parameters
    ----------
    layer : fastrnn.LSTM, fastrnn.GRU or fastrnn.RNN
        Without peepholes. Stacked and bidirectional layers give their units in PyTorch's order
        (layer 0 forward, layer 0 backward, layer 1 forward, ...).

    Returns
    -------
    list of numpy.ndarray
        For each unit: kernel (D, G*H), recurrent_kernel (H, G*H) and, with biases, the bias
        ((G*H,) or (2, 3H) for GRU with reset_after=True), in the layer's dtype.
    """
    cell = _check_supported(layer)
    order, hidden, split = _KERAS_GATES[cell], layer.hidden_size, _split_bias(layer)
    weights = []
    for unit in unit_arrays(layer):
        weights += [reorder_gates(unit[name], order, hidden).T.copy() for name in ("w_ih", "w_hh")]
        if layer.bias:
            b_ih, b_hh = reorder_gates(unit["b_ih"], order, hidden), reorder_gates(unit["b_hh"], order, hidden)
            weights.append(np.stack([b_ih, b_hh]) if split else b_ih + b_hh)
    return weights


def load_keras_weights(layer: RecurrentLayer, weights: Sequence[ArrayLike]) -> None:
    """Load Keras `get_weights()` lists (every unit's, one after the other) into `layer` in place.

    Parameters
    ----------
    layer : fastrnn.LSTM, fastrnn.GRU or fastrnn.RNN
        Built with the Keras layers' sizes, `bias=use_bias`, the GRU's `reset_after` and the
        SimpleRNN's activation as `nonlinearity`; without peepholes.
    weights : list of array_like
        As `to_keras_weights` returns them; any float dtype (converted to the layer's).

    Raises
    ------
    ValueError
        For a wrong number of arrays or a wrong shape, naming the array; nothing is loaded then.
        Keras's single bias loads as `bias_ih` with `bias_hh` zero.
    """
    cell = _check_supported(layer)
    order, hidden, split = _KERAS_GATES[cell], layer.hidden_size, _split_bias(layer)
    expected = [array.shape for array in to_keras_weights(layer)]
    weights = list(weights)
    if len(weights) != len(expected):
        raise ValueError(f"weights must hold {len(expected)} arrays for {layer!r}, got {len(weights)}")
    for index, (array, shape) in enumerate(zip(weights, expected)):
        got = np.shape(array)
        if got != shape:
            raise ValueError(f"weights[{index}] must have shape {shape}, got {got}")
    per_unit = 3 if layer.bias else 2
    units = []
    for start in range(0, len(weights), per_unit):
        kernel, recurrent = (np.asarray(array) for array in weights[start:start + 2])
        unit = {"w_ih": reorder_gates(kernel.T, order, hidden), "w_hh": reorder_gates(recurrent.T, order, hidden)}
        if layer.bias:
            bias = np.asarray(weights[start + 2])
            if split:
                unit["b_ih"], unit["b_hh"] = (reorder_gates(row, order, hidden) for row in bias)
            else:
                unit["b_ih"] = reorder_gates(bias, order, hidden)
        units.append(unit)
    load_units(layer, units)
