"""What every fastrnn layer shares: the params/grads dicts, their (de)serialisation, the cache."""
from typing import Dict, Mapping

import numpy as np
from numpy.typing import ArrayLike

from ._checks import check_dtype, load_arrays


class ArrayDict(dict):
    """A dict of a layer's arrays: entries are updated in place, never replaced or removed.

    The kernels hold these very arrays, so a replaced entry would be silently ignored. In-place
    operators work (`grads[k] += g` stores back the same array); write into an array with
    `d[k][...] = value`, or use `load_state_dict`.
    """

    def __setitem__(self, key, value):
        if key in self and value is self[key]:
            return
        raise TypeError(
            f"{key!r} cannot be replaced: the layer keeps its own arrays; write into it "
            f"with d[{key!r}][...] = value, or use load_state_dict"
        )

    def _read_only(self, *args, **kwargs):
        raise TypeError("the entries of a layer's params/grads cannot be added, replaced or removed")

    __delitem__ = update = pop = popitem = clear = setdefault = __ior__ = _read_only


class Module:
    """Base of the layers; `forward` keeps in `_cache` what `backward` needs.

    `params` and `grads` are ArrayDicts: their arrays are only ever updated in place, so dicts
    merged from them by `optim.merge` stay valid.
    """

    def __init__(self, dtype):
        self.dtype = check_dtype(dtype)
        self.params, self.grads = ArrayDict(), ArrayDict()
        self._cache = None

    def _add_param(self, name, value):
        """Register parameter `name` with initial `value` and a zero gradient; returns both."""
        param = np.ascontiguousarray(value, dtype=self.dtype)
        grad = np.zeros_like(param)
        dict.__setitem__(self.params, name, param)
        dict.__setitem__(self.grads, name, grad)
        return param, grad

    def _cached(self):
        """The cache of the last forward, for backward; RuntimeError without one."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a preceding forward call")
        return self._cache

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def zero_grad(self) -> None:
        """Set every gradient to zero, in place."""
        for grad in self.grads.values():
            grad.fill(0)

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of the parameters, by name."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike]) -> None:
        """Copy `state_dict`'s arrays into the parameters in place, after checking every one.

        Parameters
        ----------
        state_dict : mapping of str to array_like of float
            One array per parameter name of `params`, of that parameter's shape (any float
            dtype, converted).

        Raises
        ------
        KeyError
            For a missing or unexpected name.
        ValueError, TypeError
            For a wrong shape or a non-float array, naming the entry; nothing changes when any
            entry is wrong.
        """
        load_arrays("state_dict", self.params, state_dict)
