"""Build the Cython extension modules of `fastrnn._kernels` over the C kernels in src_c/.

Set FASTRNN_DEBUG=1 to compile with bounds checks and assertions turned back on.

Nothing is written into the source tree by `pip install .`: Cython's .c files, the compiled
objects and the egg-info go to a build directory outside it (FASTRNN_BUILD_DIR, or one per
checkout in the system's temporary directory). `python setup.py build_ext --inplace`, the
developer build, puts the compiled modules next to their .pyx files (and nothing else).
"""
import glob
import hashlib
import os
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("FASTRNN_DEBUG", "0") == "1"
BUILD_DIR = os.environ.get("FASTRNN_BUILD_DIR") or os.path.join(
    tempfile.gettempdir(), f"fastrnn-build-{hashlib.sha1(HERE.encode()).hexdigest()[:12]}"
)

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
}

# Compiler flags by compiler type (distutils' "unix" covers GCC and clang, "msvc" Microsoft's).
# No -march=native (wheels must run anywhere), no -ffast-math (parity needs IEEE). -O3 turns on
# the vectoriser for the gate loops; -fno-trapping-math (value-safe: it only lets the compiler
# assume FP exceptions are not trapped) lets it vectorise the branch-free exp/tanh. -fno-wrapv
# undoes the -fwrapv of Python's own CFLAGS, which CPython's code needs and these modules (the C
# kernels and Cython's output) do not, and which keeps the compiler from vectorising some of the
# gate loops. -g0 drops the debug information Python's CFLAGS ask for (most of the module size).
# MSVC: /O2 is its full optimisation, /fp:precise its IEEE-keeping default made explicit.
COMPILE_ARGS = {
    "unix": ["-O0", "-g"] if DEBUG else ["-O3", "-fno-trapping-math", "-fno-wrapv", "-g0"],
    "msvc": ["/Od", "/Zi"] if DEBUG else ["/O2", "/fp:precise"],
}

# One extension module per file of fastrnn/_kernels/: the shared tiers (threads, buffers,
# products, scan) and one per cell. The C kernels are headers (src_c/*.h, each instantiated for
# float and double) compiled into the module that cimports them.
MODULES = ("threads", "buffers", "products", "scan", "lstm", "gru", "rnn")

extensions = [
    Extension(
        f"fastrnn._kernels.{name}",
        sources=[f"fastrnn/_kernels/{name}.pyx"],
        depends=glob.glob("fastrnn/_kernels/*.pxd") + glob.glob("src_c/*.h"),
        include_dirs=["src_c", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in MODULES
]


class build_ext_parallel(build_ext):
    """build_ext compiling the modules in parallel, with the flags of the compiler it runs."""

    def finalize_options(self):
        # the modules compile independently: one per core unless `-j` says otherwise
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1
        super().finalize_options()

    def build_extensions(self):
        args = COMPILE_ARGS.get(self.compiler.compiler_type, [])
        for ext in self.extensions:
            ext.extra_compile_args = args
        super().build_extensions()


setup(
    ext_modules=cythonize(
        extensions, compiler_directives=directives, build_dir=os.path.join(BUILD_DIR, "cython")
    ),
    cmdclass={"build_ext": build_ext_parallel},
    options={"build": {"build_base": BUILD_DIR}, "egg_info": {"egg_base": BUILD_DIR}},
)
