"""The cell registry: one `CellSpec` per recurrent cell, read by the layer driver, the backends and
the tests.

A spec says what a cell is (its gates in row order, its state, its parameters' shapes, its
options) and where it is implemented: a module of `fastrnn.reference` and, when compiled, a module
of `fastrnn._kernels`, each giving `forward` and `backward` under the cell contract of
fastrnn/_backends.py (docs/layers.md). The equations are in docs/math.md. Adding a cell: write its
reference module, register its spec here, and (optionally) its kernel module.
"""
from dataclasses import dataclass, field

from ._checks import choice, flag


def _bool_option(name):
    return lambda value: flag(name, value)


def _choice_option(name, choices):
    return lambda value: choice(name, value, choices)


@dataclass(frozen=True)
class CellOption:
    """A keyword option of a cell's `forward`: its default, its check (which returns the value to
    use, or raises TypeError/ValueError naming the option), and its variants (value -> the short
    name of the cell with that value, e.g. for test and benchmark case names)."""

    name: str
    default: object
    check: object
    variants: dict


@dataclass(frozen=True)
class CellSpec:
    """One recurrent cell.

    Attributes
    ----------
    name : str
        The cell's name, as backends and tests know it.
    gates : tuple of str
        The gate names in the order of their rows in w_ih, w_hh and the biases (G = len(gates)).
    state_names : tuple of str
        The parts of the recurrent state, e.g. ("h", "c").
    peephole_gates : tuple of str
        The gates that get a peephole weight row (w_peep is (len(peephole_gates), H)); empty
        when the cell has no peepholes.
    projection : bool
        Whether the cell takes an output projection w_hr (P, H) (torch's LSTM proj_size).
    options : tuple of CellOption
        The keyword options of the cell's `forward`.
    reference : str
        The module of the pure-NumPy implementation.
    kernels : str or None
        The module of the compiled implementation, or None (the reference only).
    """

    name: str
    gates: tuple
    state_names: tuple
    peephole_gates: tuple = ()
    projection: bool = False
    options: tuple = field(default=())
    reference: str = ""
    kernels: str = None

    @property
    def num_gates(self):
        """G: the number of gates, each H rows of the weights."""
        return len(self.gates)

    def check_options(self, values):
        """The cell's options from the user's `values` (a dict), checked, defaults filled in.

        Parameters
        ----------
        values : dict
            Option name -> value; names the cell does not know raise TypeError.

        Returns
        -------
        dict
            Every option of the cell -> its value.
        """
        known = {option.name: option for option in self.options}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise TypeError(f"the {self.name} cell has no option {unknown[0]!r}")
        return {name: option.check(values.get(name, option.default)) for name, option in known.items()}

    def param_shapes(self, input_size, hidden_size, bias=True, peephole=False, proj_size=0):
        """The shapes of one direction of one layer's parameters, by their short names.

        Parameters
        ----------
        input_size, hidden_size : int
            D and H.
        bias : bool
            Whether the layer has b_ih and b_hh.
        peephole : bool
            Whether it has w_peep (ValueError for a cell without peepholes).
        proj_size : int
            P, the size of h after the projection w_hr, 0 for none (ValueError for a cell without
            projection).

        Returns
        -------
        dict
            "w_ih" (G*H, D), "w_hh" (G*H, H) (G*H, P with a projection), and when present
            "b_ih", "b_hh" (G*H,), "w_peep" (len(peephole_gates), H) and "w_hr" (P, H).
        """
        rows = self.num_gates * hidden_size
        if proj_size and not self.projection:
            raise ValueError(f"proj_size={proj_size}: the {self.name} cell has no projection")
        shapes = {"w_ih": (rows, input_size), "w_hh": (rows, proj_size or hidden_size)}
        if bias:
            shapes.update(b_ih=(rows,), b_hh=(rows,))
        if peephole:
            if not self.peephole_gates:
                raise ValueError(f"peephole=True: the {self.name} cell has no peepholes")
            shapes["w_peep"] = (len(self.peephole_gates), hidden_size)
        if proj_size:
            shapes["w_hr"] = (proj_size, hidden_size)
        return shapes


CELLS = {
    spec.name: spec
    for spec in (
        CellSpec(
            name="rnn",
            gates=("h",),
            state_names=("h",),
            options=(
                CellOption("nonlinearity", "tanh", _choice_option("nonlinearity", ("tanh", "relu")),
                           {"tanh": "tanh", "relu": "relu"}),
            ),
            reference="fastrnn.reference.rnn",
            kernels="fastrnn._kernels.rnn",
        ),
        CellSpec(
            name="lstm",
            gates=("i", "f", "g", "o"),
            state_names=("h", "c"),
            peephole_gates=("i", "f", "o"),
            projection=True,
            reference="fastrnn.reference.lstm",
            kernels="fastrnn._kernels.lstm",
        ),
        # Hochreiter & Schmidhuber 1997: no forget gate, c_t = c_{t-1} + i * g. The compiled LSTM
        # module runs it too, telling the two apart by the number of gate rows.
        CellSpec(
            name="lstm_nf",
            gates=("i", "g", "o"),
            state_names=("h", "c"),
            peephole_gates=("i", "o"),
            projection=True,
            reference="fastrnn.reference.lstm_nf",
            kernels="fastrnn._kernels.lstm",
        ),
        CellSpec(
            name="gru",
            gates=("r", "z", "n"),
            state_names=("h",),
            options=(
                CellOption("reset_after", True, _bool_option("reset_after"),
                           {True: "reset_after", False: "reset_before"}),
            ),
            reference="fastrnn.reference.gru",
            kernels="fastrnn._kernels.gru",
        ),
    )
}
