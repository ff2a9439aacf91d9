"""Build the Cython extension `fastrnn._kernels` over the C gate kernels in src_c/.

Set FASTRNN_DEBUG=1 to compile with bounds checks and assertions turned back on.
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTRNN_DEBUG", "0") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
}

extension = Extension(
    "fastrnn._kernels",
    sources=["fastrnn/_kernels.pyx", "src_c/gates.c"],
    include_dirs=["src_c", numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    # Plain -O2: no -march=native (wheels must run anywhere), no -ffast-math (parity needs IEEE).
    extra_compile_args=["-O0", "-g"] if DEBUG else ["-O2"],
)

setup(ext_modules=cythonize([extension], compiler_directives=directives))
