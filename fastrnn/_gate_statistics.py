"""Gate saturation statistics of a forward pass (docs/layers.md §13): how many activations sit in
the flat parts of their gate's function, where the gradient through them all but vanishes."""
import numpy as np

# The gates whose function is tanh (the others are σ), by cell; the Elman cell's "h" follows
# its nonlinearity option.
_TANH_GATES = {"lstm": ("g",), "lstm_nf": ("g",), "gru": ("n",), "rnn": ("h",)}
SIGMOID_BOUNDS = (0.05, 0.95)  # σ below or above: saturated
TANH_BOUND = 0.95              # |tanh| above: saturated


def saturated(values, function):
    """Boolean array: where `values`, outputs of `function` ("sigmoid", "tanh" or "relu"), sit in
    its flat parts (relu: exactly 0, where no gradient passes)."""
    if function == "sigmoid":
        low, high = SIGMOID_BOUNDS
        return (values < low) | (values > high)
    if function == "tanh":
        return np.abs(values) > TANH_BOUND
    return values == 0


def gate_function(spec, gate, nonlinearity="tanh", **_):
    """The function ("sigmoid", "tanh" or "relu") that makes `gate` of the cell `spec`."""
    if gate not in _TANH_GATES[spec.name]:
        return "sigmoid"
    return nonlinearity if spec.name == "rnn" else "tanh"


def gate_statistics(spec, activations, lengths, **options):
    """Saturation and mean of each gate of one direction of one layer.

    Parameters
    ----------
    spec : CellSpec
        The cell (fastrnn/_cells.py).
    activations : ndarray (T, G, B, H)
        The activated gates, as a backend's `gate_activations` returns them.
    lengths : None or int64 (B,)
        Steps t >= lengths[b] are padding and left out.
    **options
        The cell's options (the Elman cell's `nonlinearity` decides its function).

    Returns
    -------
    dict
        gate name -> {"saturated": fraction in [0, 1], "mean": float}.
    """
    steps, _, batch, _ = activations.shape
    valid = np.ones((steps, batch), bool) if lengths is None else np.arange(steps)[:, None] < lengths
    stats = {}
    for index, gate in enumerate(spec.gates):
        values = activations[:, index][valid].astype(np.float64)  # (valid steps, H)
        function = gate_function(spec, gate, **options)
        stats[gate] = {"saturated": float(saturated(values, function).mean()), "mean": float(values.mean())}
    return stats
