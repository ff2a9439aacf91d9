"""Argument checking shared by every public class: one place for the error messages."""
import math
import numbers
from collections.abc import Mapping

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype):
    """The layer dtype as a np.dtype: float32 or float64, else TypeError naming `dtype`."""
    try:
        resolved = None if dtype is None else np.dtype(dtype)
    except TypeError:
        resolved = None
    # `in` compares with ==, and np.dtype(...) == None is True: test for None first.
    if resolved is None or resolved not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be numpy.float32 or numpy.float64, got {dtype!r}")
    return resolved


def float_array(name, value, dtype, shape=None, copy=False):
    """`value` as a C-contiguous array of `dtype`, converting from any float dtype or layout.

    Non-float input is a TypeError and a shape other than `shape` (None entries match any
    size) a ValueError, both naming `name`. Without `copy` the result may share memory with
    `value`; with it, it never does (for arrays kept past the call).
    """
    array = as_array(name, value)
    if array.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    if shape is not None:
        matches = array.ndim == len(shape) and all(
            want is None or want == got for want, got in zip(shape, array.shape)
        )
        if not matches:
            sizes = ["*" if size is None else str(size) for size in shape]
            expected = "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"
            raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
    if copy:
        return np.array(array, dtype=dtype, order="C", copy=True)
    return np.ascontiguousarray(array, dtype=dtype)


def as_array(name, value):
    """np.asarray(value), with a ValueError naming `name` for ragged nested sequences."""
    try:
        return np.asarray(value)
    except ValueError as error:
        raise ValueError(f"{name} must be a rectangular array: {error}") from None


def integer_array(name, value):
    """`value` as an integer array; anything else (floats, bools) is a TypeError naming `name`."""
    array = as_array(name, value)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers (an integer array), got dtype {array.dtype}")
    return array


def random_generator(seed):
    """A np.random.Generator from `seed`: None, an int >= 0 or a Generator (used as it is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed must be None, an int or a numpy.random.Generator, got {type(seed).__name__}")
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(seed)


def positive_int(name, value):
    """`value` as an int >= 1, else TypeError/ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def flag(name, value):
    """`value` as a bool: only True/False (or numpy.bool_), else TypeError naming `name`.

    Ints are refused too (0/1, and 2 or an array would otherwise be taken by truthiness).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def choice(name, value, options):
    """`value` if it is one of the strings `options`, else TypeError/ValueError naming `name`."""
    allowed = " or ".join(repr(option) for option in options)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be {allowed} (a str), got {type(value).__name__}")
    if value not in options:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def load_arrays(name, target, source):
    """Copy `source[key]` into each array `target[key]` in place, checking names and shapes.

    Raises KeyError for a missing or unexpected key and ValueError/TypeError for a wrong shape or
    a non-float value, naming the key, and TypeError when `source` is not a mapping. Nothing is
    copied unless every entry is valid.
    """
    if not isinstance(source, Mapping):
        raise TypeError(f"{name} must be a dict of arrays by name, got {type(source).__name__}")
    missing = [key for key in target if key not in source]
    if missing:
        raise KeyError(f"{name}: missing key {missing[0]!r}")
    unexpected = [key for key in source if key not in target]
    if unexpected:
        raise KeyError(f"{name}: unexpected key {unexpected[0]!r}")
    checked = {
        key: float_array(f"{name}[{key!r}]", source[key], array.dtype, array.shape)
        for key, array in target.items()
    }
    for key, array in target.items():
        array[...] = checked[key]


def in_place_float_array(name, value):
    """`value` itself if it is a writeable float numpy array, to be updated in place.

    Anything else is a TypeError (not a float ndarray) or ValueError (read-only) naming `name`.
    """
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        kind = f"dtype {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
        raise TypeError(f"{name} must be a float numpy array (it is updated in place), got {kind}")
    if not value.flags.writeable:
        raise ValueError(f"{name} is read-only, but it is updated in place: pass a writeable array")
    return value


def real_number(name, value, low=None, high=None, *, low_open=False, high_open=False, allow_inf=False):
    """`value` as a float between `low` and `high` (each included unless `low_open`/`high_open`).

    NaN is always refused and infinities unless `allow_inf`. A bool or non-real value is a
    TypeError and a value out of range a ValueError, each naming `name`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    if not (above and below and (math.isfinite(value) or (allow_inf and not math.isnan(value)))):
        lower = "(-inf" if low is None else ("(" if low_open else "[") + f"{low}"
        upper = ("inf]" if allow_inf else "inf)") if high is None else f"{high}" + (")" if high_open else "]")
        interval = f"{lower}, {upper}"
        finite = "" if allow_inf else "finite "
        raise ValueError(f"{name} must be a {finite}number in {interval}, got {value}")
    return value
