"""The initialisation options of the layers and cells beyond the default draw (docs/math.md §2):
orthogonal recurrent weights and the LSTM's forget-gate bias (docs/layers.md §1)."""
import numpy as np

from ._checks import real_number

RECURRENT_INITS = ("uniform", "orthogonal")


def check_recurrent_init(value):
    """`value` if it names a recurrent-weight initialisation, else ValueError naming it."""
    if not isinstance(value, str) or value not in RECURRENT_INITS:
        raise ValueError(f"recurrent_init must be 'uniform' or 'orthogonal', got {value!r}")
    return value


def check_forget_bias(value, spec, bias):
    """`value` as a finite float; a nonzero value needs a cell with an "f" gate and biases."""
    value = real_number("forget_bias", value)
    if value != 0.0 and "f" not in spec.gates:
        raise ValueError(f"forget_bias={value}: the {spec.name} cell has no forget gate")
    if value != 0.0 and not bias:
        raise ValueError(f"forget_bias={value} needs bias=True (it is added to bias_ih)")
    return value


def orthogonal_blocks(rng, num_blocks, size):
    """`num_blocks` independent random orthogonal (size, size) matrices, stacked.

    Each is the Q of the QR decomposition of a standard normal matrix, its columns' signs fixed
    by R's diagonal so that Q is uniformly (Haar) distributed (Mezzadri 2007).

    Parameters
    ----------
    rng : numpy.random.Generator
    num_blocks, size : int

    Returns
    -------
    ndarray, float64, (num_blocks * size, size)
    """
    blocks = []
    for _ in range(num_blocks):
        q, r = np.linalg.qr(rng.standard_normal((size, size)))
        blocks.append(q * np.where(np.diag(r) < 0, -1.0, 1.0))
    return np.concatenate(blocks, axis=0)


def apply_init_options(rng, params, spec, hidden_size, recurrent_init, forget_bias):
    """Overwrite the default draw of one direction's `params` (short names -> arrays, in place).

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the orthogonal blocks; called only for recurrent_init="orthogonal".
    params : dict
        "w_hh" (G*H, H) and "b_ih" (G*H,) or None, as in the cell contract (docs/layers.md).
    spec : CellSpec
    hidden_size : int
    recurrent_init : "uniform" (keep the draw) or "orthogonal" (each gate's (H, H) block of
        w_hh a random orthogonal matrix, gain 1)
    forget_bias : float
        Added to the forget gate's rows of b_ih only: the cell sums b_ih and b_hh, so one is
        enough (PyTorch's layout; Keras's unit_forget_bias sets its single bias to 1).
    """
    if recurrent_init == "orthogonal":
        params["w_hh"][...] = orthogonal_blocks(rng, spec.num_gates, hidden_size)
    if forget_bias != 0.0:
        f = spec.gates.index("f")
        params["b_ih"][f * hidden_size:(f + 1) * hidden_size] += forget_bias
