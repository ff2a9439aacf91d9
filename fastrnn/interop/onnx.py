"""ONNX export and import of fastrnn's LSTM, GRU and RNN layers, one ONNX node per stacked layer.

`to_onnx(layer)` builds a graph of ONNX `LSTM` / `GRU` / `RNN` operators (direction
"bidirectional" for bidirectional layers) that computes the layer's forward pass in evaluation
mode; `from_onnx(model)` reads such nodes' weights back into a new fastrnn layer. Weight layouts:

- LSTM: ONNX gate order i, o, f, c (PyTorch's i, f, g, o reordered); peepholes P in order i, o, f.
- GRU: ONNX z, r, h (PyTorch's r, z, n); `linear_before_reset=1` is `reset_after=True`, 0 is
  `reset_after=False` (ONNX adds `Rbh` outside the reset product in that mode, as fastrnn does).
- RNN: activation Tanh or Relu.
- B is `[bias_ih, bias_hh]` per direction, W (dirs, G*H, D) and R (dirs, G*H, H) untransposed.

The graph's input is `x` ((T, B, D), or (B, T, D) for batch_first layers), optionally `lengths`
(int32 (B,), ONNX's `sequence_lens`) and the initial state `h0` (and `c0` for LSTM) of shape
(num_layers * dirs, B, H); its outputs are `y`, `h_n` (and `c_n`), as fastrnn's forward returns
them. Needs the `onnx` package (`pip install "fastrnn[interop]"`); onnxruntime runs the result.
float64 layers export valid float64 models, but onnxruntime's CPU LSTM, GRU and RNN kernels run
float32 only: export a float32 copy of the layer to run it there.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Union

import numpy as np
from numpy.typing import DTypeLike

from .._io import atomic_write
from .._layer import RecurrentLayer
from ._common import CELL_NAMES, cell_option, check_layer, load_units, reorder_gates, unit_arrays

__all__ = ["to_onnx", "from_onnx"]

# For each cell: the PyTorch gate at each ONNX gate position.
_ONNX_GATES = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN": (0,)}
# fastrnn's peephole rows are (i, f, o); ONNX's P is (i, o, f). The order is its own inverse.
_PEEPHOLE_ROWS = (0, 2, 1)
# The activations fastrnn computes, per direction, for the cells without a choice.
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
_STATE_NAMES = {"LSTM": ("h", "c"), "GRU": ("h",), "RNN": ("h",)}
# The ONNX input slot of each optional operator input.
_INPUT_SLOTS = {"B": 3, "sequence_lens": 4, "initial_h": 5, "initial_c": 6, "P": 7}


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError('fastrnn.interop.onnx needs the onnx package: pip install "fastrnn[interop]"') from None
    return onnx


def to_onnx(layer: RecurrentLayer, path: Union[str, os.PathLike, None] = None, *, lengths: bool = False,
            initial_state: bool = False, opset: int = 14) -> Any:
    """An ONNX model computing `layer`'s forward pass (evaluation mode: no dropout).

    Parameters
    ----------
    layer : fastrnn.LSTM, fastrnn.GRU or fastrnn.RNN
        Any number of layers and directions, with or without biases and peepholes.
    path : str or os.PathLike, optional
        Where to write the model too (atomically, see `fastrnn._io.atomic_write`).
    lengths : bool
        Add an int32 (B,) graph input `lengths` (each sequence's length, as `layer(x, lengths=...)`).
    initial_state : bool
        Add graph inputs `h0` (and `c0` for LSTM), (num_layers * dirs, B, H) like `layer`'s state.
    opset : int
        The ONNX opset to declare, at least 14.

    Returns
    -------
    onnx.ModelProto
        Inputs `x` (and `lengths`, `h0`, `c0`), outputs `y`, `h_n` (and `c_n`), all in the layer's
        dtype (float32 or float64) except `lengths`; T and B are symbolic.
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    cell = check_layer(layer)
    if opset < 14:
        raise ValueError(f"opset must be >= 14, got {opset}")
    element = TensorProto.FLOAT if layer.dtype == np.float32 else TensorProto.DOUBLE
    dirs, hidden, order = layer.num_directions, layer.hidden_size, _ONNX_GATES[cell]
    state_names = _STATE_NAMES[cell]
    nodes, initializers = [], []

    def constant(name, value):
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    steps_batch = ["B", "T"] if layer.batch_first else ["T", "B"]
    inputs = [helper.make_tensor_value_info("x", element, steps_batch + [layer.input_size])]
    sequence = "x"
    if layer.batch_first:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_time_major"], perm=[1, 0, 2]))
        sequence = "x_time_major"
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, ["B"]))
    if initial_state:
        shape = [layer.num_layers * dirs, "B", hidden]
        inputs += [helper.make_tensor_value_info(f"{name}0", element, shape) for name in state_names]
        constant("state_axis", np.array([0], np.int64))

    units = unit_arrays(layer)
    finals = {name: [] for name in state_names}
    for index in range(layer.num_layers):
        own = units[index * dirs:(index + 1) * dirs]
        operands = {
            "W": constant(f"W_l{index}", np.stack([reorder_gates(u["w_ih"], order, hidden) for u in own])),
            "R": constant(f"R_l{index}", np.stack([reorder_gates(u["w_hh"], order, hidden) for u in own])),
        }
        if layer.bias:
            operands["B"] = constant(f"B_l{index}", np.stack([
                np.concatenate([reorder_gates(u["b_ih"], order, hidden), reorder_gates(u["b_hh"], order, hidden)])
                for u in own
            ]))
        if layer.peephole:
            operands["P"] = constant(f"P_l{index}", np.stack([u["w_peep"][list(_PEEPHOLE_ROWS)].ravel() for u in own]))
        if lengths:
            operands["sequence_lens"] = "lengths"
        if initial_state:
            bounds = (constant(f"state_start_l{index}", np.array([index * dirs], np.int64)),
                      constant(f"state_end_l{index}", np.array([(index + 1) * dirs], np.int64)))
            for name in state_names:
                sliced = f"{name}0_l{index}"
                nodes.append(helper.make_node("Slice", [f"{name}0", *bounds, "state_axis"], [sliced]))
                operands[f"initial_{name}"] = sliced
        node_inputs = [sequence, operands["W"], operands["R"]] + [""] * 5
        for key, slot in _INPUT_SLOTS.items():
            if key in operands:
                node_inputs[slot] = operands[key]
        while not node_inputs[-1]:
            node_inputs.pop()
        attributes = {"hidden_size": hidden, "direction": "bidirectional" if dirs == 2 else "forward"}
        if cell == "GRU":
            attributes["linear_before_reset"] = int(cell_option(layer, "reset_after"))
        if cell == "RNN":
            attributes["activations"] = [cell_option(layer, "nonlinearity").capitalize()] * dirs
        outputs = [f"Y_l{index}"] + [f"{name}_n_l{index}" for name in state_names]
        nodes.append(helper.make_node(cell, node_inputs, outputs, name=f"{cell.lower()}_l{index}", **attributes))
        for name in state_names:
            finals[name].append(f"{name}_n_l{index}")
        # Y is (T, dirs, B, H); the next layer (and fastrnn's y) wants (T, B, dirs * H).
        nodes.append(helper.make_node("Transpose", [f"Y_l{index}"], [f"Y_l{index}_tbdh"], perm=[0, 2, 1, 3]))
        sequence = f"y_l{index}"
        nodes.append(helper.make_node("Reshape", [f"Y_l{index}_tbdh", constant(f"merge_directions_l{index}",
                                                                              np.array([0, 0, -1], np.int64))], [sequence]))
    nodes.append(helper.make_node("Transpose", [sequence], ["y"], perm=[1, 0, 2]) if layer.batch_first
                 else helper.make_node("Identity", [sequence], ["y"]))
    outputs = [helper.make_tensor_value_info("y", element, steps_batch + [dirs * hidden])]
    for name in state_names:
        nodes.append(helper.make_node("Concat", finals[name], [f"{name}_n"], axis=0))
        outputs.append(helper.make_tensor_value_info(f"{name}_n", element, [layer.num_layers * dirs, "B", hidden]))

    graph = helper.make_graph(nodes, f"fastrnn_{cell.lower()}", inputs, outputs, initializers)
    # IR version 8 (ONNX 1.10): old enough for every maintained runtime, new enough for opset 14+.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8,
                              producer_name="fastrnn")
    onnx.checker.check_model(model)
    if path is not None:
        with atomic_write(path) as file:
            file.write(model.SerializeToString())
    return model


def from_onnx(model: Any, *, batch_first: bool = False, dtype: Optional[DTypeLike] = None,
              backend: str = "auto") -> RecurrentLayer:
    """A new fastrnn layer holding the weights of a model's ONNX `LSTM`, `GRU` or `RNN` nodes.

    The nodes (one per stacked layer, in graph order, all of one operator, direction and options)
    become one fastrnn layer; their W, R, B and P inputs must be initializers.

    Parameters
    ----------
    model : onnx.ModelProto, str or os.PathLike
        A model (or the path of one), e.g. made by `to_onnx`.
    batch_first : bool
        The new layer's `batch_first` (ONNX weights do not depend on the data layout).
    dtype : numpy.float32 or numpy.float64, optional
        The new layer's dtype; default: the weights' dtype.
    backend : str
        The new layer's backend.

    Returns
    -------
    fastrnn.LSTM, fastrnn.GRU or fastrnn.RNN

    Raises
    ------
    ValueError
        When the model has no such node, or options fastrnn does not compute (direction "reverse",
        clip, input_forget, other activations), naming the node and option.
    """
    onnx = _import_onnx()
    from onnx import helper, numpy_helper

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    nodes = [node for node in model.graph.node if node.op_type in _ONNX_GATES]
    if not nodes:
        raise ValueError("model has no ONNX LSTM, GRU or RNN node")
    cell = nodes[0].op_type
    options = [_node_options(node, cell, helper) for node in nodes]
    if any(option != options[0] for option in options):
        raise ValueError(f"every {cell} node must have the same direction and options, got {options}")
    direction, cell_options = options[0]
    dirs = 2 if direction == "bidirectional" else 1

    def weight(node, slot, label):
        if slot >= len(node.input) or not node.input[slot]:
            return None
        name = node.input[slot]
        if name not in initializers:
            raise ValueError(f"node {node.name!r}: input {label} ({name!r}) must be an initializer to import")
        return initializers[name]

    arrays = [{label: weight(node, slot, label) for label, slot in (("W", 1), ("R", 2), ("B", 3), ("P", 7))}
              for node in nodes]
    first_w = arrays[0]["W"]
    hidden = arrays[0]["R"].shape[-1]
    layer_class = {name: cls for cls, name in CELL_NAMES.items()}[cell]
    layer = layer_class(
        first_w.shape[2], hidden, len(nodes), bias=any(a["B"] is not None for a in arrays),
        batch_first=batch_first, bidirectional=dirs == 2, dtype=first_w.dtype if dtype is None else dtype,
        backend=backend, **({"peephole": any(a["P"] is not None for a in arrays)} if cell == "LSTM" else {}),
        **cell_options,
    )
    order = tuple(np.argsort(_ONNX_GATES[cell]))
    gate_rows = len(order) * hidden
    units = []
    for node, found in zip(nodes, arrays):
        for key, array in found.items():
            if array is not None and array.shape[0] != dirs:
                raise ValueError(f"node {node.name!r}: {key} must have {dirs} directions first, got shape {array.shape}")
        for d in range(dirs):
            unit = {"w_ih": reorder_gates(found["W"][d], order, hidden), "w_hh": reorder_gates(found["R"][d], order, hidden)}
            if found["B"] is not None:
                unit["b_ih"] = reorder_gates(found["B"][d][:gate_rows], order, hidden)
                unit["b_hh"] = reorder_gates(found["B"][d][gate_rows:], order, hidden)
            if found["P"] is not None:
                unit["w_peep"] = found["P"][d].reshape(3, hidden)[list(_PEEPHOLE_ROWS)]
            units.append(unit)
    load_units(layer, units)
    return layer


def _node_options(node, cell, helper):
    """(direction, fastrnn cell options) of one node; ValueError for what fastrnn does not compute."""
    attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
    direction = attributes.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "bidirectional"):
        raise ValueError(f"node {node.name!r}: direction {direction!r} is not supported (forward or bidirectional)")
    for unsupported in ("clip", "activation_alpha", "activation_beta"):
        if unsupported in attributes:
            raise ValueError(f"node {node.name!r}: attribute {unsupported!r} is not supported by fastrnn")
    if attributes.get("input_forget", 0):
        raise ValueError(f"node {node.name!r}: input_forget=1 is not supported by fastrnn")
    dirs = 2 if direction == "bidirectional" else 1
    activations = [a.decode() if isinstance(a, bytes) else a for a in attributes.get("activations", [])]
    options = {}
    if cell == "RNN":
        activations = activations or ["Tanh"] * dirs
        if len(set(activations)) != 1 or activations[0] not in ("Tanh", "Relu"):
            raise ValueError(f"node {node.name!r}: activations must be Tanh or Relu in every direction, got {activations}")
        options["nonlinearity"] = activations[0].lower()
    else:
        if activations and activations != _DEFAULT_ACTIVATIONS[cell] * dirs:
            raise ValueError(f"node {node.name!r}: activations must be {_DEFAULT_ACTIVATIONS[cell] * dirs}, got {activations}")
        if cell == "GRU":
            options["reset_after"] = bool(attributes.get("linear_before_reset", 0))
    return direction, options
