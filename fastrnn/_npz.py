"""Reading `.npz` archives that may be damaged or hostile: the array headers first, then the arrays.

`numpy.load` allocates whatever shape an array header claims before it reads a byte of data, so
a damaged or crafted header can ask for terabytes. `read_headers` checks every member against
the archive before any array is read: stored uncompressed (as `numpy.savez` writes them), with
exactly header + shape x itemsize bytes, no pickled objects. Then the arrays can be read safely
with `read_arrays`. Both raise ValueError naming the file for anything wrong.
"""
import math
import os
import zipfile
import zlib

import numpy as np

NPY_SUFFIX = ".npy"


def read_headers(path):
    """name -> (shape, dtype) of every array of the `.npz` at `path`, from the headers alone.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict of str to (tuple of int, numpy.dtype)

    Raises
    ------
    FileNotFoundError
        When there is no file at `path`.
    ValueError
        When the file is not an intact, uncompressed archive of `.npy` members whose headers
        agree with their sizes, or holds object arrays.
    """
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            declared = sum(member.file_size for member in members)
            if declared > os.path.getsize(path):
                raise ValueError(f"its members claim {declared} bytes, more than the file holds")
            for member in members:
                name = member.filename[:-len(NPY_SUFFIX)]
                if not member.filename.endswith(NPY_SUFFIX) or name in headers:
                    raise ValueError(f"member {member.filename!r} is not one .npy array")
                if member.compress_type != zipfile.ZIP_STORED:
                    raise ValueError(f"member {member.filename!r} is compressed (numpy.savez stores arrays as they are)")
                headers[name] = _member_header(archive, member)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, SyntaxError, NotImplementedError, zipfile.BadZipFile,
            zipfile.LargeZipFile, zlib.error) as error:
        raise ValueError(f"{path} is not an intact .npz archive: {error}") from None
    return headers


def _member_header(archive, member):
    """(shape, dtype) of one `.npy` member, after checking that its size matches its header."""
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"member {member.filename!r} has .npy version {version}, not 1.0 or 2.0")
        header_size = stream.tell()
    if dtype.hasobject:
        raise ValueError(f"array {member.filename!r} holds Python objects (pickles), which are never loaded")
    data_size = math.prod(shape) * dtype.itemsize
    if member.file_size != header_size + data_size:
        raise ValueError(f"array {member.filename!r} claims shape {shape} of {dtype} ({data_size} bytes) "
                         f"but holds {member.file_size - header_size} bytes")
    return tuple(shape), dtype


def read_arrays(path):
    """Every array of the `.npz` at `path` (checked with `read_headers` first), without pickle.

    Raises ValueError naming the file when an array does not read (a damaged byte fails the
    archive's CRC check).
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{path} is damaged (reading its arrays: {error})") from None
