"""What every fastrnn layer shares: the params/grads dicts, their (de)serialisation, the cache,
the attributes fixed at construction and the one-call-at-a-time rule for threads."""
import functools
import threading
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

    def __reduce__(self):
        # copy and pickle would rebuild the dict entry by entry through __setitem__, which
        # refuses: rebuild it from all its items at once instead.
        return type(self), (dict(self),)


def _one_call_at_a_time(method, writes_grads):
    """`method` run under the module's lock, after checking its arrays (see Module)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._lock:
            self._check_arrays(writes_grads)
            return method(self, *args, **kwargs)

    return run


class Module:
    """Base of the layers; `forward` keeps in `_cache` what `backward` needs.

    `params` and `grads` are ArrayDicts: their arrays are only ever updated in place, so dicts
    merged from them by `optim.merge` stay valid.

    Threads: the `forward` and `backward` of every subclass (wrapped here, by __init_subclass__),
    `zero_grad`, `state_dict` and `load_state_dict` of one module run one at a time (a call waits
    for the one running in another thread), and the cache a forward leaves is its own thread's:
    a backward pairs with the last forward of the same thread. Before each forward and backward
    the arrays of `params` and `grads` are checked to be still what the kernels will read and
    write (shape, dtype, layout; grads writable), so an array changed in place by hand gives a
    clear ValueError instead of wrong numbers or a crash.

    Copies: `copy.deepcopy` and `pickle` give a module with its own arrays and no pending
    forward (the cache is not copied).
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, writes_grads in (("forward", False), ("backward", True)):
            if name in cls.__dict__:
                setattr(cls, name, _one_call_at_a_time(cls.__dict__[name], writes_grads))

    def __init__(self, dtype):
        self._lock = threading.RLock()  # re-entrant: a subclass's forward may call its parent's
        self._local = threading.local()
        self.dtype = check_dtype(dtype)
        self.params, self.grads = ArrayDict(), ArrayDict()
        self._shapes = {}
        self._cache = None
        self._fix_attributes("dtype", "params", "grads")

    # -- attributes fixed at construction ------------------------------------------------

    def _fix_attributes(self, *names, **values):
        """Make the attributes `names` (already set) and `values` (set here) read-only."""
        for name, value in values.items():
            object.__setattr__(self, name, value)
        fixed = self.__dict__.get("_fixed", frozenset())
        object.__setattr__(self, "_fixed", fixed | frozenset(names) | frozenset(values))

    def __setattr__(self, name, value):
        self._refuse_if_fixed(name)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._refuse_if_fixed(name)
        object.__delattr__(self, name)

    def _refuse_if_fixed(self, name):
        if name in self.__dict__.get("_fixed", ()):
            cls = type(self).__name__
            value = self.__dict__[name]
            shown = f" (it is {value!r})" if isinstance(value, (int, str, np.dtype)) else ""
            raise AttributeError(
                f"{cls}.{name} cannot be changed after construction{shown}: the layer's arrays "
                f"are set up for it; build a new {cls} instead (load_state_dict copies weights)"
            )

    # -- copy and pickle ----------------------------------------------------------------

    def __getstate__(self):
        # Locks and thread-local caches are not copied: a copy has no pending forward.
        state = dict(self.__dict__)
        del state["_lock"], state["_local"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__["_lock"] = threading.RLock()
        self.__dict__["_local"] = threading.local()

    # -- parameters and the cache -------------------------------------------------------

    def _add_param(self, name, value):
        """Register parameter `name` with initial `value` and a zero gradient; returns both."""
        param = np.ascontiguousarray(value, dtype=self.dtype)
        grad = np.zeros_like(param)
        dict.__setitem__(self.params, name, param)
        dict.__setitem__(self.grads, name, grad)
        self._shapes[name] = param.shape
        return param, grad

    def _check_arrays(self, writes_grads):
        """ValueError naming the entry when a params/grads array was changed in place so that it
        no longer fits the layer (reshaped, another dtype, strided; a read-only gradient when
        `writes_grads`): the kernels would read or write the wrong memory."""
        for name, shape in self._shapes.items():
            for kind, arrays in (("params", self.params), ("grads", self.grads)):
                array = arrays[name]
                if array.shape != shape or array.dtype != self.dtype or not array.flags.c_contiguous:
                    layout = "C-contiguous" if array.flags.c_contiguous else "non-contiguous"
                    raise ValueError(
                        f"{kind}[{name!r}] must stay a C-contiguous {self.dtype} array of shape "
                        f"{shape} (write into it, do not reshape or re-view it), got a {layout} "
                        f"{array.dtype} array of shape {array.shape}"
                    )
            if writes_grads and not self.grads[name].flags.writeable:
                raise ValueError(
                    f"grads[{name!r}] is read-only, but backward adds into it: make it writable "
                    f"again (grads[{name!r}].setflags(write=True))"
                )

    @property
    def _cache(self):
        """What the last forward of the calling thread left for its backward, or None."""
        return getattr(self._local, "cache", None)

    @_cache.setter
    def _cache(self, value):
        self._local.cache = value

    def _cached(self):
        """The cache of the last forward, for backward; RuntimeError without one."""
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward needs a preceding forward call (in the same thread)"
            )
        return self._cache

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def zero_grad(self) -> None:
        """Set every gradient to zero, in place."""
        with self._lock:
            for grad in self.grads.values():
                grad.fill(0)

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of the parameters, by name."""
        with self._lock:
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
        TypeError
            When `state_dict` is not a dict.
        KeyError
            For a missing or unexpected name.
        ValueError, TypeError
            For a wrong shape or a non-float array, naming the entry; nothing changes when any
            entry is wrong.
        """
        with self._lock:
            load_arrays("state_dict", self.params, state_dict)
