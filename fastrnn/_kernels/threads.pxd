# The threads of a pass: the BLAS thread setting around it, and a team of parked helper threads
# that run the parts of its phases (threads.pyx).
from libc.stdint cimport int64_t

cdef enum:
    MAX_PARTS = 8  # threads of a pass at most

# One part of a phase: `part` of `parts` of the work; run in every thread of a team.
ctypedef void (*part_fn)(void *work, int part, int parts) noexcept nogil

cdef struct Team:
    # parts - 1 helpers and the calling thread, which runs part 0
    int parts

cdef int pass_begin(int rows, int64_t macs) except -1
cdef void pass_end() noexcept
cdef void team_init(Team *team, int parts) noexcept
cdef void team_free(Team *team) noexcept
cdef void team_run(Team *team, part_fn fn, void *work) noexcept nogil


cdef inline int part_start(int part, int parts, int n) noexcept nogil:
    """First of the indices range(n) that part `part` of `parts` takes."""
    return <int>(<int64_t>part * n // parts)
