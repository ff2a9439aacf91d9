"""Whether forward calls record what backward needs: `fastrnn.no_grad()`.

Modelled on torch's `no_grad`: a context manager (also usable as a decorator) under which the
layers, cells, `Linear` and `Embedding` compute their outputs without keeping anything for
backward, so inference, evaluation and sampling use less memory and time. The setting is per
thread, so a sampling thread does not switch off the training of another.
"""
import functools
import threading

_local = threading.local()


def is_grad_enabled():
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

    def __enter__(self):
        self._previous = is_grad_enabled()
        _local.enabled = False
        return self

    def __exit__(self, *exc_info):
        _local.enabled = self._previous
        return False

    def __call__(self, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with no_grad():
                return function(*args, **kwargs)
        return wrapper
