"""Backends: where the single-direction, single-layer cell kernels come from.

Every backend provides, for each cell name in CELLS, a pair of functions with one contract
(the layer driver in `fastrnn/_layer.py` only ever calls these two):

    forward(x, state0, params, lengths, reverse, **options) -> (y, state_n, cache)
        x        (T, B, D) C-contiguous array of the layer dtype (float32 or float64).
        state0   tuple of (B, H) C-contiguous arrays: (h0,) for "rnn"/"gru", (h0, c0) for "lstm".
        params   dict: "w_ih" (G*H, D), "w_hh" (G*H, H), "b_ih" and "b_hh" (G*H,) or None when the
                 layer has no bias, and for "lstm" "w_peep" (3, H) or None. Gate rows in SPEC §2
                 order (LSTM i,f,g,o; GRU r,z,n), C-contiguous, layer dtype.
        lengths  None (every sequence has T steps) or int64 (B,) array with 1 <= lengths[b] <= T.
                 At a step t >= lengths[b] sequence b keeps its state unchanged and its output
                 row y[t, b] is zero.
        reverse  False: steps t = 0 .. T-1; True: steps t = T-1 .. 0 (with lengths, the padded
                 steps come first and leave the state at state0, so each sequence starts at its
                 own last valid step).
        options  "rnn": nonlinearity ("tanh" | "relu"); "gru": reset_after (bool); "lstm": none.
        Returns y (T, B, H), a fresh array; state_n, a tuple of fresh (B, H) arrays (the state
        after the last step processed); cache, an opaque object that backward consumes.
        Inputs are never modified.

    backward(dy, dstate_n, cache, grads) -> (dx, dstate0)
        dy       (T, B, H) C-contiguous gradient w.r.t. y (rows at padded steps are ignored).
        dstate_n tuple like state0: gradient w.r.t. state_n.
        grads    dict with the same keys as params (value None where the param is None); the
                 parameter gradients are ADDED into these arrays in place.
        Returns dx (T, B, D) and dstate0 (tuple like state0), fresh arrays.

Arguments reaching these functions are already validated by the driver.
"""
import importlib
import warnings

CELLS = ("rnn", "lstm", "gru")
BACKENDS = ("reference", "cython")


def _cython_kernels():
    """The compiled module, or None when it does not import or lacks a cell."""
    try:
        kernels = importlib.import_module("fastrnn._kernels")
    except ImportError:
        return None
    for cell in CELLS:
        if not hasattr(kernels, f"{cell}_forward") or not hasattr(kernels, f"{cell}_backward"):
            return None
    return kernels


def available_backends():
    """Names of the backends that can run here, in order of preference for "auto"."""
    names = ["reference"]
    if _cython_kernels() is not None:
        names.insert(0, "cython")
    return names


_warned_fallback = False


def resolve_backend(backend):
    """Map a user's `backend` argument to a concrete backend name, validating it."""
    global _warned_fallback
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend == "auto":
        if _cython_kernels() is not None:
            return "cython"
        if not _warned_fallback:
            warnings.warn(
                "fastrnn: the compiled extension fastrnn._kernels did not import; "
                "using the slow pure-NumPy reference backend",
                RuntimeWarning,
                stacklevel=4,  # the user line that built the layer
            )
            _warned_fallback = True
        return "reference"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of 'auto', 'reference', 'cython', got {backend!r}")
    if backend == "cython" and _cython_kernels() is None:
        raise ValueError("backend='cython' requested but the extension fastrnn._kernels does not import")
    return backend


def cell_functions(backend, cell):
    """(forward, backward) of `cell` for a concrete backend name."""
    if backend == "reference":
        module = importlib.import_module(f"fastrnn.reference.{cell}")
        return module.forward, module.backward
    kernels = _cython_kernels()
    return getattr(kernels, f"{cell}_forward"), getattr(kernels, f"{cell}_backward")
