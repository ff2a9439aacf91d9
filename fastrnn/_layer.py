"""The layer driver shared by every cell: stacking, directions, lengths, dropout and state.

A cell backend knows one direction of one layer (the forward/backward pair of
`fastrnn._backends`); this module scans it over layers and directions the way PyTorch's
`apply_layer_stack` does, and keeps parameters, gradients and the cache between forward and
backward. `fastrnn.LSTM`, `GRU` and `RNN` are thin subclasses that name their cell.
"""
import warnings
from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import _backends
from ._cells import CELLS
from ._checks import as_array, flag, float_array, integer_array, positive_int, random_generator
from ._grad_mode import is_grad_enabled
from ._gate_statistics import gate_statistics
from ._init import apply_init_options, check_forget_bias, check_recurrent_init
from ._module import Module
from ._typing import State

# Short names the kernels use -> PyTorch's parameter name prefixes.
_PARAM_PREFIX = {
    "w_ih": "weight_ih",
    "w_hh": "weight_hh",
    "b_ih": "bias_ih",
    "b_hh": "bias_hh",
    "w_peep": "weight_peephole",
    "w_hr": "weight_hr",
}


class RecurrentLayer(Module):
    """A stack of recurrent layers over one cell type; see docs/layers.md for the public contract.

    Subclasses set `cell`, the name of the cell's spec in fastrnn/_cells.py, which gives the
    gates, the state, the parameter shapes and the options (`cell_options`, checked there).
    """

    cell = None

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        *,
        bias=True,
        batch_first=False,
        bidirectional=False,
        dropout=0.0,
        peephole=False,
        proj_size=0,
        dtype=np.float32,
        backend="auto",
        seed=None,
        recurrent_init="uniform",
        forget_bias=0.0,
        **cell_options,
    ):
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.num_layers = positive_int("num_layers", num_layers)
        self.bias = flag("bias", bias)
        self.batch_first = flag("batch_first", batch_first)
        self.bidirectional = flag("bidirectional", bidirectional)
        self.peephole = flag("peephole", peephole)
        self.dropout = dropout
        self.proj_size = _check_proj_size(proj_size, self.hidden_size)
        # The size of h and of each direction's output: P with a projection, else H.
        self.output_size = self.proj_size or self.hidden_size
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                "dropout > 0 only acts between stacked layers, but num_layers=1", UserWarning, stacklevel=3
            )
        spec = CELLS[self.cell]
        self.num_gates, self.state_names = spec.num_gates, spec.state_names
        self._cell_options = spec.check_options(cell_options)
        self.recurrent_init = check_recurrent_init(recurrent_init)
        self.forget_bias = check_forget_bias(forget_bias, spec, self.bias)
        super().__init__(dtype)
        self.backend = _backends.resolve_backend(backend, self.cell)
        self._forward_fn, self._backward_fn = _backends.cell_functions(self.backend, self.cell)
        self._gate_activations_fn = _backends.cell_module(self.backend, self.cell).gate_activations
        self._rng = random_generator(seed)
        self.training = True
        # The opt-in record of backward (docs/layers.md §13).
        self.record_gradient_norms = False
        self.gradient_norms = None

        self.num_directions = 2 if self.bidirectional else 1
        # For each (layer, direction): the kernels' short names -> this layer's arrays.
        self._unit_params, self._unit_grads = [], []
        bound = 1.0 / np.sqrt(self.hidden_size)
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else self.output_size * self.num_directions
            for direction in range(self.num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = spec.param_shapes(layer_input, self.hidden_size, self.bias, self.peephole,
                                           self.proj_size)
                unit_params, unit_grads = {}, {}
                for short, shape in shapes.items():
                    name = _PARAM_PREFIX[short] + suffix
                    # Drawn in float64 so a float32 and a float64 layer of one seed agree.
                    weights = self._rng.uniform(-bound, bound, size=shape)
                    unit_params[short], unit_grads[short] = self._add_param(name, weights)
                for short in ("b_ih", "b_hh", "w_peep", "w_hr"):
                    unit_params.setdefault(short, None)
                    unit_grads.setdefault(short, None)
                self._unit_params.append(unit_params)
                self._unit_grads.append(unit_grads)
        # After every default draw: the other parameters of a seed stay those of the default init.
        for unit_params in self._unit_params:
            apply_init_options(self._rng, unit_params, spec, self.hidden_size, self.recurrent_init,
                               self.forget_bias)
        # The arrays and kernels are set up for these: changing one later is an AttributeError.
        self._fix_attributes(
            "input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional",
            "peephole", "proj_size", "output_size", "backend", "num_directions", "cell", "recurrent_init",
            "forget_bias",
            **self._cell_options,
        )

    @property
    def dropout(self):
        """Dropout probability between stacked layers; may be changed between calls (a backward
        uses the masks of its own forward)."""
        return self._dropout

    @dropout.setter
    def dropout(self, value):
        self._dropout = _check_dropout(value)

    # -- modes, parameters --------------------------------------------------------------

    def train(self, mode: bool = True) -> "RecurrentLayer":
        """Set training mode (dropout active between layers) or, with `mode` False, evaluation.

        Parameters
        ----------
        mode : bool, default True
            True: training mode; False: evaluation mode (no dropout).

        Returns
        -------
        RecurrentLayer
            This layer.
        """
        self.training = bool(mode)
        return self

    def eval(self) -> "RecurrentLayer":
        """Set evaluation mode (no dropout); returns this layer."""
        return self.train(False)

    def __repr__(self):
        options = [f"{self.input_size}", f"{self.hidden_size}"]
        if self.num_layers != 1:
            options.append(f"num_layers={self.num_layers}")
        for name in ("bidirectional", "batch_first", "peephole"):
            if getattr(self, name):
                options.append(f"{name}=True")
        if not self.bias:
            options.append("bias=False")
        if self.dropout:
            options.append(f"dropout={self.dropout}")
        if self.proj_size:
            options.append(f"proj_size={self.proj_size}")
        options += [f"{key}={value!r}" for key, value in self._repr_options().items()]
        if self.recurrent_init != "uniform":
            options.append(f"recurrent_init={self.recurrent_init!r}")
        if self.forget_bias:
            options.append(f"forget_bias={self.forget_bias}")
        options += [f"dtype={self.dtype.name}", f"backend={self.backend!r}"]
        return f"{type(self).__name__}({', '.join(options)})"

    def _repr_options(self):
        """The options that __repr__ shows besides the common ones."""
        return self._cell_options

    # -- forward and backward -----------------------------------------------------------

    def forward(self, x: ArrayLike, state: Optional[State] = None,
                lengths: Optional[ArrayLike] = None) -> Tuple[np.ndarray, State]:
        """Run the stack over the sequences `x` (docs/layers.md).

        Parameters
        ----------
        x : array_like of float, shape (T, B, D), (B, T, D) with batch_first, or (T, D)
            The input sequences; (T, D) is one unbatched sequence, as torch takes it. Converted
            to the layer dtype and copied.
        state : array or tuple of arrays, optional
            The initial state, shape (num_layers * dirs, B, H) each ((num_layers * dirs, H) for
            unbatched x): h for GRU and RNN, the tuple (h, c) for LSTM. None: zeros.
        lengths : array_like of int, shape (B,), optional
            Valid steps of each sequence, 1 <= lengths[b] <= T: later steps keep the state and
            output zeros. None: every sequence has T steps.

        Returns
        -------
        y : numpy.ndarray, shape (T, B, H * dirs), (B, T, H * dirs) or (T, H * dirs)
            The last layer's outputs, both directions concatenated, layer dtype.
        state_n : array or tuple of arrays, shaped as `state`
            The state after each sequence's last valid step, per layer and direction.

        Raises
        ------
        ValueError, TypeError
            For an input of the wrong shape or a non-float dtype, naming the argument.
        """
        # Unbatched input (T, D), as torch takes it: run as a batch of one, (T, 1, D), and give
        # y (T, H * dirs) and states (num_layers * dirs, H) back; batch_first does not apply.
        x = as_array("x", x)
        unbatched = x.ndim == 2
        batch_first = self.batch_first and not unbatched
        # x and state are copied: the kernels keep them for backward, and the caller may reuse
        # their arrays in between.
        x_shape = (None, self.input_size) if unbatched else (None, None, self.input_size)
        x = float_array("x", x, self.dtype, x_shape, copy=True)
        if unbatched:
            x = x[:, None, :]
        if batch_first:
            x = np.ascontiguousarray(x.transpose(1, 0, 2))
        steps, batch = x.shape[:2]
        if steps == 0 or batch == 0:
            raise ValueError(f"x must have at least one step and one sequence, got shape {x.shape}")
        lengths = _check_lengths(lengths, steps, batch)
        if lengths is not None:
            # Whatever the padding holds (NaN, inf) must not matter: the weight gradient sums
            # x over every step, so 0 * NaN there would poison it. x is our copy.
            x[_padding(lengths, steps)] = 0
        states = self._check_state("state", state, batch, copy=True, unbatched=unbatched)

        dirs = self.num_directions
        keep = is_grad_enabled()  # under fastrnn.no_grad() the kernels keep nothing for backward
        final = [np.empty(shape, self.dtype) for shape in self._state_shapes(batch)]
        layer_caches, masks = [], []
        layer_input = x
        for layer in range(self.num_layers):
            if layer > 0 and self.training and self.dropout > 0:
                mask = self._dropout_mask(layer_input.shape)
                layer_input = layer_input * mask
                masks.append(mask)
            else:
                masks.append(None)
            outputs, caches = [], []
            for direction in range(dirs):
                unit = layer * dirs + direction
                state0 = tuple(s[unit] for s in states)
                y, state_n, cache = self._forward_fn(
                    layer_input, state0, self._unit_params[unit], lengths, direction == 1,
                    keep=keep, **self._cell_options,
                )
                for array, value in zip(final, state_n):
                    array[unit] = value
                outputs.append(y)
                caches.append(cache)
            layer_input = outputs[0] if dirs == 1 else np.concatenate(outputs, axis=2)
            layer_caches.append(caches)

        # Under fastrnn.no_grad() nothing is kept: the caches go when this call returns.
        self._cache = (layer_caches, masks, batch, layer_input.shape, lengths, unbatched) if keep else None
        y = layer_input
        if batch_first:
            y = np.ascontiguousarray(y.transpose(1, 0, 2))
        return self._unbatch(y, final, unbatched)

    def backward(self, dy: ArrayLike, dstate: Optional[State] = None) -> Tuple[np.ndarray, State]:
        """Backpropagate through the last forward call, adding the parameter gradients into `grads`.

        Parameters
        ----------
        dy : array_like of float, shaped as forward's y
            Gradient of the loss w.r.t. y.
        dstate : array or tuple of arrays, optional
            Gradient w.r.t. forward's state_n, shaped as it. None: zeros.

        Returns
        -------
        dx : numpy.ndarray, shaped as forward's x
            Gradient w.r.t. x, layer dtype.
        dstate0 : array or tuple of arrays, shaped as forward's state
            Gradient w.r.t. the initial state.

        Raises
        ------
        RuntimeError
            Without a forward call since the last backward (or under ``fastrnn.no_grad()``).
        """
        # Each forward allows one backward: the kernels may reuse their caches' buffers.
        layer_caches, masks, batch, y_shape, lengths, unbatched = self._cached()
        batch_first = self.batch_first and not unbatched
        if unbatched:
            expected = (y_shape[0], y_shape[2])
        else:
            expected = (y_shape[1], y_shape[0], y_shape[2]) if batch_first else y_shape
        dy = float_array("dy", dy, self.dtype, expected)
        if unbatched:
            dy = dy.reshape(y_shape)
        if batch_first:
            dy = np.ascontiguousarray(dy.transpose(1, 0, 2))
        dstates = self._check_state("dstate", dstate, batch, unbatched=unbatched)
        if lengths is not None:
            dy = np.where(_padding(lengths, y_shape[0])[:, :, None], 0, dy)  # see forward
        self._cache = None

        dirs, hidden = self.num_directions, self.output_size
        initial = [np.empty(shape, self.dtype) for shape in self._state_shapes(batch)]
        record = {} if self.record_gradient_norms else None
        dy_layer = dy
        for layer in reversed(range(self.num_layers)):
            dx = None
            for direction in range(dirs):
                unit = layer * dirs + direction
                dy_unit = dy_layer if dirs == 1 else np.ascontiguousarray(dy_layer[:, :, direction * hidden:(direction + 1) * hidden])
                norms = None if record is None else np.empty((len(self.state_names), dy.shape[0]))
                dx_unit, dstate0 = self._backward_fn(
                    dy_unit, tuple(d[unit] for d in dstates), layer_caches[layer][direction], self._unit_grads[unit],
                    norms,
                )
                if record is not None:
                    record[layer, direction] = dict(zip(self.state_names, norms))
                for array, value in zip(initial, dstate0):
                    array[unit] = value
                # Both directions read the same input, so their input gradients add.
                dx = dx_unit if dx is None else dx + dx_unit
            if masks[layer] is not None:
                dx *= masks[layer]
            dy_layer = dx

        if record is not None:
            self.gradient_norms = record
        if lengths is not None:
            # dx is zero at padded steps whatever the weights hold (a NaN weight times the zero
            # gate gradient of a padded step is NaN where a cell computes it at all)
            dy_layer = np.where(_padding(lengths, y_shape[0])[:, :, None], 0, dy_layer)
        if batch_first:
            dy_layer = np.ascontiguousarray(dy_layer.transpose(1, 0, 2))
        return self._unbatch(dy_layer, initial, unbatched)

    def gate_statistics(self):
        """How saturated the gates of the last forward call are (docs/layers.md §13).

        Needs the cache of a forward run outside `fastrnn.no_grad()` and not yet consumed by
        `backward`. Padded steps (t >= lengths[b]) are left out.

        Returns
        -------
        dict
            (layer, direction) -> {gate name -> {"saturated": float, "mean": float}}: the
            fraction of activations in the flat parts of the gate's function (σ < 0.05 or
            σ > 0.95; |tanh| > 0.95; relu: exactly 0) and their mean, over steps, sequences and
            hidden units. Gate names as in fastrnn/_cells.py ("h" for the RNN).
        """
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.gate_statistics needs the cache of a forward call run "
                "outside fastrnn.no_grad() and before backward"
            )
        layer_caches, _, _, _, lengths, _ = self._cache
        return {
            (layer, direction): gate_statistics(
                CELLS[self.cell], self._gate_activations_fn(cache), lengths, **self._cell_options
            )
            for layer, caches in enumerate(layer_caches)
            for direction, cache in enumerate(caches)
        }

    # -- helpers ------------------------------------------------------------------------

    def _dropout_mask(self, shape):
        keep = 1.0 - self.dropout
        if keep == 0.0:
            return np.zeros(shape, self.dtype)
        return (self._rng.random(shape) < keep).astype(self.dtype) / self.dtype.type(keep)

    def _state_shapes(self, batch):
        """The shape of each part of the state: (layers*dirs, B, H), with a projection
        (layers*dirs, B, P) for h."""
        units = self.num_layers * self.num_directions
        return [(units, batch, self.output_size if part == "h" else self.hidden_size)
                for part in self.state_names]

    def _check_state(self, name, state, batch, copy=False, unbatched=False):
        """The state (or its gradient) as a list of arrays of _state_shapes, zeros for None.

        With `unbatched` (B = 1) each array is given (layers*dirs, H), as torch takes it.
        """
        full_shapes = self._state_shapes(batch)
        shapes = [(units, size) for units, _, size in full_shapes] if unbatched else full_shapes
        shape = shapes[0] if len(shapes) == 1 else tuple(shapes)
        if len(self.state_names) == 1:
            if isinstance(state, (tuple, list)):
                raise TypeError(f"{name} must be an array of shape {shape} for {type(self).__name__}, got a {type(state).__name__}")
            parts = (state,)
        elif state is None:
            parts = (None,) * len(self.state_names)
        else:
            if not isinstance(state, (tuple, list)) or len(state) != len(self.state_names):
                pair = ", ".join(self.state_names)
                raise TypeError(f"{name} must be a tuple ({pair}) of arrays of shapes {shape}, got {type(state).__name__}")
            parts = state
        arrays = []
        for index, (part_name, part, part_shape, full_shape) in enumerate(zip(self.state_names, parts, shapes, full_shapes)):
            label = name if len(parts) == 1 else f"{name}[{index}] ({part_name})"
            array = np.zeros(part_shape, self.dtype) if part is None else float_array(label, part, self.dtype, part_shape, copy)
            arrays.append(array.reshape(full_shape))
        return arrays

    def _pack_state(self, arrays):
        return arrays[0] if len(arrays) == 1 else tuple(arrays)

    def _unbatch(self, sequence, states, unbatched):
        """(sequence, packed states) as returned: the batch axis of one dropped for unbatched input."""
        if unbatched:
            sequence = sequence.reshape(sequence.shape[0], sequence.shape[2])
            states = [s.reshape(s.shape[0], s.shape[2]) for s in states]
        return sequence, self._pack_state(states)


def _check_dropout(dropout):
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating, np.integer)):
        raise TypeError(f"dropout must be a number in [0, 1], got {type(dropout).__name__}")
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"dropout must be in [0, 1], got {dropout}")
    return float(dropout)


def _padding(lengths, steps):
    """(T, B) bool, True at the steps past each sequence's length."""
    return np.arange(steps)[:, None] >= lengths[None, :]


def _check_proj_size(proj_size, hidden_size):
    """proj_size as an int, 0 (no projection) <= proj_size < hidden_size, else TypeError/ValueError."""
    if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)):
        raise TypeError(f"proj_size must be an int, got {type(proj_size).__name__}")
    if not 0 <= proj_size < hidden_size:
        raise ValueError(f"proj_size must be 0 (no projection) or between 1 and hidden_size - 1 = {hidden_size - 1}, "
                         f"got {proj_size}")
    return int(proj_size)


def _check_lengths(lengths, steps, batch):
    """None or an int64 (B,) array with 1 <= lengths[b] <= T; None when every length is T."""
    if lengths is None:
        return None
    array = integer_array("lengths", lengths)
    if array.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) (one per sequence), got {array.shape}")
    if array.min() < 1 or array.max() > steps:
        raise ValueError(
            f"lengths must be between 1 and T={steps}, got values from {array.min()} to {array.max()}"
        )
    if array.min() == steps:
        return None
    # A copy: the kernels keep it for backward, and the caller may change the array in between.
    return np.array(array, dtype=np.int64, order="C")
