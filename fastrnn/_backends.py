"""Backends: where the single-direction, single-layer cell kernels come from.

Every backend provides, for each cell of the registry (fastrnn/_cells.py), three functions with
one contract (the layer driver in `fastrnn/_layer.py` only ever calls these; see docs/layers.md):

    forward(x, state0, params, lengths, reverse, keep=True, **options) -> (y, state_n, cache)
        x        (T, B, D) C-contiguous array of the layer dtype (float32 or float64).
        state0   tuple of (B, H) C-contiguous arrays: (h0,) for "rnn"/"gru", (h0, c0) for "lstm".
        params   dict: "w_ih" (G*H, D), "w_hh" (G*H, H), "b_ih" and "b_hh" (G*H,) or None when the
                 layer has no bias, and for the LSTM cells "w_peep" (P, H) or None (P: the cell
                 spec's peephole_gates) and "w_hr" (Hh, H) or None: a projection, h_t = W_hr r_t
                 (docs/math.md), with which h0, state_n's h, y and w_hh's columns have Hh
                 values instead of H (the key "w_hr" may be absent: None). Gate rows in the
                 order of the cell spec's gates (docs/math.md), C-contiguous, layer dtype.
        lengths  None (every sequence has T steps) or int64 (B,) array with 1 <= lengths[b] <= T.
                 At a step t >= lengths[b] sequence b keeps its state unchanged and its output
                 row y[t, b] is zero.
        reverse  False: steps t = 0 .. T-1; True: steps t = T-1 .. 0 (with lengths, the padded
                 steps come first and leave the state at state0, so each sequence starts at its
                 own last valid step).
        keep     True: cache holds what backward needs. False (the driver under fastrnn.no_grad(),
                 inference): backward will not be called; cache is None and the backend keeps
                 nothing for it (the compiled LSTM holds the states of two steps instead of all).
                 y and state_n are the same as with keep=True, bit for bit.
        options  the cell spec's options: "rnn": nonlinearity ("tanh" | "relu"); "gru":
                 reset_after (bool); the LSTM cells: none.
        Returns y (T, B, H), a fresh array; state_n, a tuple of fresh (B, H) arrays (the state
        after the last step processed); cache, an opaque object that backward consumes.
        Inputs are never modified.

    backward(dy, dstate_n, cache, grads, norms=None) -> (dx, dstate0)
        dy       (T, B, H) C-contiguous gradient w.r.t. y (rows at padded steps are ignored).
        dstate_n tuple like state0: gradient w.r.t. state_n.
        grads    dict with the same keys as params (value None where the param is None); the
                 parameter gradients are ADDED into these arrays in place.
        norms    None, or a float64 (S, T) array (S = len(state0)) that receives the gradient-norm
                 record: norms[k, t] is the Frobenius norm, over the batch and the hidden units,
                 of the whole gradient w.r.t. state part k (h, then c) after step t — for h,
                 dy[t] plus what step t+1 passes back. Padded (t, b) contribute nothing. It
                 changes no other result.
        Returns dx (T, B, D) and dstate0 (tuple like state0), fresh arrays.

    gate_activations(cache) -> (T, G, B, H) array, a fresh copy
        The activated gates the forward that made `cache` computed, gates in the cell spec's
        order (for "rnn", G = 1: h_t itself). Values at padded (t, b) are unspecified.

Arguments reaching these functions are already validated by the driver.
"""
from __future__ import annotations

import importlib
import warnings
from typing import List, Optional

from ._cells import CELLS

BACKENDS = ("reference", "cython")


def _kernel_module(cell):
    """The compiled module of `cell`, or None when the cell has none or it does not import."""
    name = CELLS[cell].kernels
    if name is None:
        return None
    try:
        module = importlib.import_module(name)
    except Exception:  # not only ImportError: any error raised while the module initialises
        return None
    if not (hasattr(module, "forward") and hasattr(module, "backward")):
        return None
    return module


def available_backends(cell: Optional[str] = None) -> List[str]:
    """Names of the backends that can run here, in order of preference for "auto".

    Parameters
    ----------
    cell : str, optional
        A cell name of fastrnn/_cells.py: the backends of that cell. None: "cython" is listed
        when the compiled kernels of every cell that has them import.

    Returns
    -------
    list of str
    """
    cells = [cell] if cell is not None else [name for name, spec in CELLS.items() if spec.kernels]
    names = ["reference"]
    if cells and all(_kernel_module(name) is not None for name in cells):
        names.insert(0, "cython")
    return names


_warned_fallback = set()


def resolve_backend(backend, cell):
    """Map a user's `backend` argument to a concrete backend name for `cell`, validating it.

    "auto" is "cython" when the cell's compiled kernels import, else "reference" (with a warning
    once per cell when it has compiled kernels that do not import): a cell without kernels moves
    only its own layers to the reference.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend == "auto":
        if _kernel_module(cell) is not None:
            return "cython"
        if CELLS[cell].kernels is not None and cell not in _warned_fallback:
            warnings.warn(
                f"fastrnn: the compiled module {CELLS[cell].kernels} did not import; "
                f"using the slow pure-NumPy reference backend for the {cell} cell",
                RuntimeWarning,
                stacklevel=4,  # the user line that built the layer
            )
            _warned_fallback.add(cell)
        return "reference"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of 'auto', 'reference', 'cython', got {backend!r}")
    if backend == "cython" and _kernel_module(cell) is None:
        raise ValueError(f"backend='cython' requested but the {cell} cell has no compiled kernels that import")
    return backend


def cell_module(backend, cell):
    """The module implementing `cell` for a concrete backend name (the contract above)."""
    if backend == "reference":
        return importlib.import_module(CELLS[cell].reference)
    return _kernel_module(cell)


def cell_functions(backend, cell):
    """(forward, backward) of `cell` for a concrete backend name."""
    module = cell_module(backend, cell)
    return module.forward, module.backward
