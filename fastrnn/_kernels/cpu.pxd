# The floating-point mode, spin-wait hint, clock and flags of src_c/cpu.h (static inline there).
from libc.stdint cimport int64_t


cdef extern from "cpu.h" nogil:
    unsigned int fp_mode_fast_enter()
    void fp_mode_restore(unsigned int saved)
    void cpu_relax()
    int64_t monotonic_ns()
    int load_flag(const int *flag)
    void store_flag(int *flag, int value)
