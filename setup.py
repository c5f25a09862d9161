"""Build the compiled core: every .pyx under src/cbptt becomes an extension module.

BLAS is not linked here: the modules cimport scipy.linalg.cython_blas and take the function
pointers SciPy exports at import time. CBPTT_CYTHON_DEBUG=1 turns Cython's safety checks back on
(and builds at -O0 with debug information).

Python's CFLAGS carry -g, which puts 4 MB of DWARF into the two modules (1.5 MB of a 2 MB
wheel); the optimised build drops it with -g0 (the instructions do not change; the symbol table
stays, so perf still names functions). CBPTT_DEBUG_INFO=1 keeps it, for addr2line or perf
annotate on the optimised build.

CBPTT_PORTABLE=1 compiles the kernels as plain C only, as on a processor without the x86-64
dispatch of isa.h: no AVX2 or AVX-512 variants and no AVX-512 panel products (OpenBLAS runs
every product).
"""
import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("CBPTT_CYTHON_DEBUG", "0") not in ("", "0")
DEBUG_INFO = DEBUG or os.environ.get("CBPTT_DEBUG_INFO", "0") not in ("", "0")
PORTABLE = os.environ.get("CBPTT_PORTABLE", "0") not in ("", "0")
# _isa: the instruction set in use; _kernels: the cell and loss kernels, for tests
MODULES = ["_isa", "_blas", "_layout", "_engine", "_arrays", "_dropout", "_kernels"]
# what the modules are built from besides their .pyx: the BLAS layer and the engine's layers
# (src/cbptt/_core: the C kernels and the inline .pxd layers over them)
DEPENDS = ["src/cbptt/_blas.pxd"] + sorted(glob.glob("src/cbptt/_core/*.pxd") +
                                           glob.glob("src/cbptt/_core/*.h") +
                                           glob.glob("src/cbptt/*.pxi"))

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "nonecheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}
# -fno-trapping-math lets the compiler vectorise the selects of vmath.h (no FP traps are used)
compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-trapping-math", "-fno-math-errno"]
if sys.platform != "win32":
    compile_args.append("-pthread")   # team.h
    if not DEBUG_INFO:
        compile_args.append("-g0")    # after Python's -g, so it wins

extensions = [
    Extension(
        f"cbptt.{name}",
        [f"src/cbptt/{name}.pyx"],
        include_dirs=[np.get_include(), "src/cbptt"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        + ([("CBPTT_PORTABLE", "1")] if PORTABLE else []),
        extra_compile_args=compile_args,
        extra_link_args=[] if sys.platform == "win32" else ["-pthread"],
        depends=DEPENDS,
    )
    for name in MODULES
]

setup(
    # the debug build's C goes to a folder of its own: Cython regenerates a .c only when it is
    # older than its sources, not when the directives change, so sharing one would give the
    # debug build the optimised C (no bounds checks), and the next optimised build the debug C
    ext_modules=cythonize(extensions, compiler_directives=directives, include_path=["src"],
                          build_dir="build/cython-debug" if DEBUG else None),
    zip_safe=False,
)
