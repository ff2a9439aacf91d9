"""Build the Cython extension modules of `fastrnn._kernels` over the C kernels in src_c/.

Set FASTRNN_DEBUG=1 to compile with bounds checks and assertions turned back on.
"""
import glob
import os
import shutil

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("FASTRNN_DEBUG", "0") == "1"

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
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
        # No -march=native (wheels must run anywhere), no -ffast-math (parity needs IEEE). -O3
        # turns on the vectoriser for the gate loops; -fno-trapping-math (value-safe: it only
        # lets the compiler assume FP exceptions are not trapped) lets it vectorise the
        # branch-free exp/tanh. -fno-wrapv undoes the -fwrapv of Python's own CFLAGS, which
        # CPython's code needs and these modules (the C kernels and Cython's output) do not, and
        # which keeps the compiler from vectorising some of the gate loops.
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3", "-fno-trapping-math", "-fno-wrapv"],
    )
    for name in MODULES
]


class build_ext_also_in_tree(build_ext):
    """build_ext that also leaves a copy of the compiled modules in the source tree.

    README's quick start is `pip install . && python -m fastrnn demo` from the checkout, where
    `python -m` puts the source tree first on sys.path: without the copies, that command would
    run the uncompiled in-tree package on the slow reference backend.
    """

    def finalize_options(self):
        # the modules compile independently: one per core unless `-j` says otherwise
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1
        super().finalize_options()

    def run(self):
        super().run()
        if self.inplace:
            return
        for ext in self.extensions:
            built = self.get_ext_fullpath(ext.name)
            package_dir = os.path.join(HERE, *ext.name.split(".")[:-1])
            if os.path.isdir(package_dir):
                shutil.copyfile(built, os.path.join(package_dir, os.path.basename(built)))


setup(
    ext_modules=cythonize(extensions, compiler_directives=directives),
    cmdclass={"build_ext": build_ext_also_in_tree},
)
