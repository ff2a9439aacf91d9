"""The buffers of a pass (see buffers.pxd): the one cache of memory blocks, whatever the cell.

A pass allocates its buffers and results afresh (several times T*B*H values). From malloc, memory
of that size comes straight from the kernel and goes back to it when freed, so every pass would
page-fault through all its buffers again. So the large arrays of a pass live in blocks that, when
their last array goes, wait in a cache for the next pass to ask for the same size, up to
CACHED_BYTES in all (past that, the idle blocks are freed and the cache starts over). Such an
array is an ordinary ndarray whose `base` is its block. Blocks are taken and given back with the
GIL held.
"""
import numpy as np

from cpython.buffer cimport PyBuffer_FillInfo
from libc.stdint cimport uintptr_t
from libc.stdlib cimport free, malloc


cdef enum:
    CACHED_MIN_BYTES = 1 << 16   # smaller arrays come from np.empty (malloc keeps those)
    CACHED_BYTES = 1 << 28       # at most this much idle memory in the cache
    # rows of batch slices start on their own cache line (no false sharing between threads),
    # and AVX-512 loads of a row do not straddle two
    BLOCK_ALIGNMENT = 64

cdef dict _idle_blocks = {}  # size in bytes -> addresses of idle blocks of that size
cdef size_t _idle_bytes = 0


cdef void _free_idle_blocks() noexcept:
    global _idle_bytes
    for addresses in _idle_blocks.values():
        for address in addresses:
            free(<void *><uintptr_t>address)
    _idle_blocks.clear()
    _idle_bytes = 0


cdef class _Block:
    """The memory of the arrays made by empty; back to the cache when they are gone."""
    cdef void *raw   # from malloc
    cdef void *data  # raw rounded up to BLOCK_ALIGNMENT
    cdef size_t size

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, self.data, <Py_ssize_t>self.size, 0, flags)

    def __dealloc__(self):
        global _idle_bytes
        if self.raw == NULL:
            return
        if self.size > CACHED_BYTES or _idle_blocks is None:  # None: the module is torn down
            free(self.raw)
            return
        if _idle_bytes + self.size > CACHED_BYTES:
            _free_idle_blocks()  # sizes that are not asked for again (e.g. a varying T) go too
        _idle_blocks.setdefault(self.size, []).append(<uintptr_t>self.raw)
        _idle_bytes += self.size


cpdef object empty(shape, dtype):
    """np.empty(shape, dtype), in a cached block when the array is large."""
    global _idle_bytes
    cdef size_t size = np.dtype(dtype).itemsize
    cdef _Block block
    for extent in shape:
        size *= <size_t>extent
    if size < CACHED_MIN_BYTES:
        return np.empty(shape, dtype)
    block = _Block.__new__(_Block)
    idle = _idle_blocks.get(size)
    if idle:
        block.raw = <void *><uintptr_t>idle.pop()
        _idle_bytes -= size
    else:
        block.raw = malloc(size + BLOCK_ALIGNMENT - 1)
        if block.raw == NULL:
            raise MemoryError(f"cannot allocate {size} bytes for an array of shape {shape}")
    block.data = <void *>((<uintptr_t>block.raw + BLOCK_ALIGNMENT - 1)
                          & ~<uintptr_t>(BLOCK_ALIGNMENT - 1))
    block.size = size
    return np.ndarray(shape, dtype, block)
