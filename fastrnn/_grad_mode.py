"""Whether forward calls record what backward needs: `fastrnn.no_grad()`.

Modelled on torch's `no_grad`: a context manager (also usable as a decorator) under which the
layers, cells, `Linear` and `Embedding` compute their outputs without keeping anything for
backward, so inference, evaluation and sampling use less memory and time. The setting is per
thread, so a sampling thread does not switch off the training of another.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_local = threading.local()


def is_grad_enabled() -> bool:
    """True unless the calling thread is inside `no_grad()`."""
    return getattr(_local, "enabled", True)


class no_grad:
    """Context manager and decorator: forward calls inside keep nothing for backward.

    A `backward` after such a forward raises RuntimeError (there is nothing to backpropagate
    through). Nesting is allowed; the previous setting is restored on exit.

    Examples
    --------
    >>> with fastrnn.no_grad():
    ...     y, state = lstm(x)
    """

    def __enter__(self) -> "no_grad":
        self._previous = is_grad_enabled()
        _local.enabled = False
        return self

    def __exit__(self, *exc_info: object) -> bool:
        _local.enabled = self._previous
        return False

    def __call__(self, function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with no_grad():
                return function(*args, **kwargs)
        return wrapper
