"""Atomic file writes: every file fastrnn writes goes through `atomic_write`.

A crash, a kill or a full disk in the middle of a save must leave the previous file intact, so
nothing is ever written in place: the data goes to a temporary file in the target's own folder
(same file system, so the rename below is atomic), is flushed and fsync'ed, and only then renamed
over the target. The folder is fsync'ed too, so the rename itself survives a power cut.
"""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """Open a temporary file that replaces `path` when the `with` block ends without an error.

    Usage: ``with atomic_write(path) as file: file.write(data)``. On an exception (including
    KeyboardInterrupt) the temporary file is removed and `path` is left as it was. `mode` is "wb"
    or "w" (text, with `encoding`, default UTF-8).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        if mode == "w":
            file = os.fdopen(handle, "w", encoding=encoding or "utf-8", newline="")
        else:
            file = os.fdopen(handle, "wb")
        with file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file 0600; give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make a rename in `folder` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
