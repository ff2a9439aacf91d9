"""PyTorch `nn.LSTM`, `nn.GRU` and `nn.RNN` state_dicts and modules into fastrnn layers.

fastrnn uses PyTorch's parameter names and layout, so a state_dict loads as it is once its
tensors are NumPy arrays; these helpers do that conversion, build a matching layer from a torch
module (`proj_size` LSTMs included: their `weight_hr_l*` projections load as they are). Nothing
here imports torch.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
from numpy.typing import DTypeLike

from .. import layers
from .._layer import RecurrentLayer

__all__ = ["load_torch_state_dict", "from_torch"]

# torch.nn.RNN's `mode` -> fastrnn.RNN's nonlinearity.
_RNN_MODES = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}


def _as_numpy(name, value):
    """A torch tensor (any device, with or without grad) or array_like as a NumPy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise TypeError(f"state_dict[{name!r}] must be a float tensor or array, got dtype {array.dtype}")
    return array


def load_torch_state_dict(layer: RecurrentLayer, state_dict: Mapping[str, Any]) -> None:
    """Load a torch `nn.LSTM` / `nn.GRU` / `nn.RNN` state_dict (tensors or arrays) into `layer`.

    Parameters
    ----------
    layer : fastrnn.LSTM, fastrnn.GRU or fastrnn.RNN
        Built with the torch module's sizes and options, `proj_size` included (see
        `from_torch`).
    state_dict : mapping of str to torch.Tensor or array_like
        PyTorch's names (`weight_ih_l0`, ...); tensors may be on any device and need grad.

    Raises
    ------
    ValueError
        For a state_dict of an LSTM with `proj_size > 0` (its `weight_hr_l*` projections) into a
        layer without projection, and the other way round. Also, as `layer.load_state_dict`,
        KeyError for missing or unexpected names and ValueError for wrong shapes; nothing is
        loaded then.
    """
    projections = sorted(name for name in state_dict if name.startswith("weight_hr_l"))
    proj_size = getattr(layer, "proj_size", 0)
    if projections and not proj_size:
        rows = _as_numpy(projections[0], state_dict[projections[0]]).shape[0]
        raise ValueError(
            f"state_dict holds {projections[0]!r}: it comes from torch.nn.LSTM(proj_size={rows}); build the "
            f"layer with proj_size={rows} to load it, got a layer with proj_size=0"
        )
    if proj_size and not projections:
        raise ValueError(
            f"layer has proj_size={proj_size} but state_dict has no 'weight_hr_l0': it comes from a module "
            "without projection (proj_size=0)"
        )
    layer.load_state_dict({name: _as_numpy(name, value) for name, value in state_dict.items()})


def from_torch(module: Any, *, dtype: Optional[DTypeLike] = None, backend: str = "auto") -> RecurrentLayer:
    """A new fastrnn layer with the options and weights of a torch `nn.LSTM`, `nn.GRU` or `nn.RNN`.

    Parameters
    ----------
    module : torch.nn.LSTM, torch.nn.GRU or torch.nn.RNN
    dtype : numpy.float32 or numpy.float64, optional
        Default: the module's parameter dtype.
    backend : str
        The new layer's backend.

    Returns
    -------
    fastrnn.LSTM, fastrnn.GRU or fastrnn.RNN
        In the module's training mode; GRU with `reset_after=True` (PyTorch's GRU).

    Raises
    ------
    TypeError
        For any other module.
    """
    kind = type(module).__name__
    if kind not in ("LSTM", "GRU", "RNN"):
        raise TypeError(f"module must be a torch.nn.LSTM, GRU or RNN, got {kind}")
    options = {"nonlinearity": _RNN_MODES[module.mode]} if kind == "RNN" else {}
    if kind == "LSTM":
        options["proj_size"] = module.proj_size
    state_dict = module.state_dict()
    if dtype is None:
        dtype = _as_numpy("weight_ih_l0", state_dict["weight_ih_l0"]).dtype
    layer = getattr(layers, kind)(
        module.input_size, module.hidden_size, module.num_layers, bias=module.bias,
        batch_first=module.batch_first, bidirectional=module.bidirectional, dropout=module.dropout,
        dtype=dtype, backend=backend, **options,
    )
    load_torch_state_dict(layer, state_dict)
    return layer.train(module.training)
