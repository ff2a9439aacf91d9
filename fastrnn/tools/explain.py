"""`python -m fastrnn demo --explain`: why the plain RNN fails the adding problem (docs/cli.md §2).

The demo's loss reads only the last step's output, so the gradient that reaches h_t has crossed
T-1-t steps of the recurrence. With the layers' gradient-norm record (docs/layers.md §13) this
module measures ‖∂J/∂h_t‖ on held-out sequences, at initialisation and after training, and shows
it against that distance: a text table with log-spaced distances, and a PNG plot when matplotlib
(the `plot` extra) is installed.
"""
import io

import numpy as np

from .._io import atomic_write

SEQUENCES = 256  # held-out sequences the norms are measured on


def norms_by_distance(model, x, target):
    """‖∂J/∂h_t‖ of `model`'s recurrent layer on one batch, indexed by distance T-1-t.

    Parameters
    ----------
    model : fastrnn.tools.demo.AddingModel
    x : ndarray (T, B, 2), target : ndarray (B, 1)
        A batch of the adding problem; J is the demo's MSE on it.

    Returns
    -------
    ndarray float64 (T,): element d is ‖∂J/∂h_{T-1-d}‖ (Frobenius over the batch and units).
    """
    model.rnn.record_gradient_norms = True
    try:
        model.gradients(x, target)
    finally:
        model.rnn.record_gradient_norms = False
        model.rnn.zero_grad()
        model.head.zero_grad()
    return model.rnn.gradient_norms[0, 0]["h"][::-1].copy()


def log_distances(steps):
    """0, 1, 2, 4, 8, ... and the largest distance, steps - 1."""
    distances = [0] + [2 ** k for k in range(int(np.log2(max(steps - 1, 1))) + 1)] + [steps - 1]
    return sorted({d for d in distances if d < steps})


def table(title, curves, steps):
    """Lines of a text table: one row per log-spaced distance, one column per curve (label ->
    norms by distance), norms in scientific notation, and the far/near ratio of each curve."""
    labels = list(curves)
    width = max(10, *(len(label) for label in labels))
    lines = [title, "distance".ljust(9) + "".join(label.rjust(width + 2) for label in labels)]
    for d in log_distances(steps):
        lines.append(str(d).ljust(9) + "".join(f"{curves[label][d]:.2e}".rjust(width + 2) for label in labels))
    ratios = "".join(f"{curves[label][-1] / curves[label][0]:.1e}".rjust(width + 2) for label in labels)
    lines.append(f"{steps - 1}/0".ljust(9) + ratios)
    return lines


def pyplot_figure():
    """A new matplotlib Figure, or None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure(figsize=(10, 4.2), layout="constrained")


def plot(path, panels, steps):
    """Write a PNG of the curves to `path` (atomically); False when matplotlib is missing.

    Parameters
    ----------
    path : str or os.PathLike
    panels : list of (title, {label: norms by distance (steps,)})
    steps : int
    """
    figure = pyplot_figure()
    if figure is None:
        return False
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    distance = np.arange(steps)
    # One colour per label in every panel
    labels = list(dict.fromkeys(label for _, curves in panels for label in curves))
    for ax, (title, curves) in zip(axes, panels):
        for label, norms in curves.items():
            ax.semilogy(distance, norms, label=label, color=f"C{labels.index(label)}")
        ax.set_title(title)
        ax.set_xlabel("distance from the loss, T-1-t (steps)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("||dJ/dh_t||")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    with atomic_write(path) as file:
        file.write(buffer.getvalue())
    return True
