"""Atomic file writes: every file fastrnn writes goes through `atomic_write`.

A crash, a kill or a full disk in the middle of a save must leave the previous file intact, so
nothing is ever written in place: the data goes to a temporary file in the target's own folder
(same file system, so the rename below is atomic), is flushed and fsync'ed, and only then renamed
over the target. The folder is fsync'ed too, so the rename itself survives a power cut.
"""
import contextlib
import errno
import os
import secrets
import stat

# Temporary files are ".<target name>.<random>.tmp": hidden, and easy to recognise after a kill.
TEMPORARY_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """Open a temporary file that replaces `path` when the `with` block ends without an error.

    Usage: ``with atomic_write(path) as file: file.write(data)``. On an exception (including
    KeyboardInterrupt) the temporary file is removed and `path` is left as it was. A new file
    gets the permissions a plain ``open(path, "w")`` would give it (0o666 less the umask); a
    replaced file keeps its permission bits.

    Parameters
    ----------
    path : str or os.PathLike
        The file to create or replace.
    mode : {"wb", "w"}
        Binary, or text with `encoding` (default UTF-8) and no newline translation.
    encoding : str, optional
        Text encoding for mode "w".

    Yields
    ------
    file object
        The open temporary file.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = _create_temporary(path)
    try:
        if mode == "w":
            file = os.fdopen(handle, "w", encoding=encoding or "utf-8", newline="")
        else:
            file = os.fdopen(handle, "wb")
        with file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_folder(folder)


def check_writable(path):
    """Raise the OSError a save to `path` would meet, without touching `path` itself.

    Creates and removes a temporary file next to `path`, which is what `atomic_write` needs: the
    folder must exist and accept new files. A `path` that is a folder is an IsADirectoryError.
    Tools call this before long work, so a bad output path fails at once rather than after it.

    Parameters
    ----------
    path : str or os.PathLike
        The file a later `atomic_write` will create or replace.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    handle, temporary = _create_temporary(path)
    os.close(handle)
    os.unlink(temporary)


def _create_temporary(path):
    """(descriptor, name) of a new empty file next to `path`, mode 0o666 less the umask."""
    folder, name = os.path.split(os.path.abspath(path))
    while True:
        temporary = os.path.join(folder, f".{name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")
        try:
            # O_EXCL: never reuse or follow an existing name; the kernel applies the umask.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue


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
