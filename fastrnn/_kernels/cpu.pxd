# The floating-point mode and spin-wait hint of src_c/cpu.h (static inline there).
cdef extern from "cpu.h" nogil:
    unsigned int fp_mode_fast_enter()
    void fp_mode_restore(unsigned int saved)
    void cpu_relax()
