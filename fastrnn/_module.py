"""What every fastrnn layer shares: the params/grads dicts, their (de)serialisation, the cache."""
import numpy as np

from ._checks import check_dtype, load_arrays


class Module:
    """Base of the layers. `params` and `grads` are dicts of arrays that are only ever updated in
    place, so dicts merged from them (`optim.merge`) stay valid; `forward` keeps in `_cache`
    what `backward` needs."""

    def __init__(self, dtype):
        self.dtype = check_dtype(dtype)
        self.params = {}
        self.grads = {}
        self._cache = None

    def _add_param(self, name, value):
        """Register parameter `name` with initial `value` and a zero gradient; returns both."""
        self.params[name] = np.ascontiguousarray(value, dtype=self.dtype)
        self.grads[name] = np.zeros_like(self.params[name])
        return self.params[name], self.grads[name]

    def _cached(self):
        """The cache of the last forward, for backward; RuntimeError without one."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a preceding forward call")
        return self._cache

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def zero_grad(self):
        """Set every gradient to zero, in place."""
        for grad in self.grads.values():
            grad.fill(0)

    def state_dict(self):
        """Copies of the parameters, by name."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state_dict):
        """Copy `state_dict`'s arrays into the parameters in place, after checking every one.

        Raises KeyError for a missing or unexpected name and ValueError/TypeError for a wrong
        shape or a non-float array, naming the entry; nothing changes when any entry is wrong.
        """
        load_arrays("state_dict", self.params, state_dict)
