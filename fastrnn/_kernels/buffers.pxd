# The buffers of a pass (buffers.pyx): large arrays in blocks cached between passes.
cpdef object empty(shape, dtype)
