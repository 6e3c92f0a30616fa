"""Build of the C core and its Cython binding; all metadata is in pyproject.toml.

The C99 core in csrc/ is compiled as its own static library with its own
flags (C99, -O3, hidden visibility).  SIMD paths are enabled per function with
target attributes inside the sources, so nothing here is host-specific: no
-march=native, no -mavx2, no -ffast-math.  The wheel runs on any CPU of its
architecture and picks the best path at run time.
"""
import glob
import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc", "src")
C_SOURCES = sorted(glob.glob(os.path.join(CSRC, "*.c")))
# The extension links the static core: list its sources and headers as
# dependencies, so an edited kernel relinks _core (build_ext only compares
# the extension with its own sources otherwise, and an in-tree rebuild
# would keep the old kernels).
C_DEPENDS = C_SOURCES + sorted(glob.glob(os.path.join(CSRC, "*.h"))
                               + glob.glob(os.path.join("csrc", "include", "*.h"))
                               + glob.glob(os.path.join("deeprec_edge", "*.pxi"))
                               + glob.glob(os.path.join("deeprec_edge", "*.pxd")))

if sys.platform == "win32":
    core_cflags = ["/O2"]
    ext_cflags = ["/O2"]
else:
    # -fno-math-errno lets gcc vectorise sqrtf (optimisers); nothing reads errno.
    core_cflags = ["-std=c99", "-O3", "-fno-math-errno", "-fPIC", "-fvisibility=hidden",
                   "-Wall", "-Wextra", "-Wno-unused-parameter"]
    ext_cflags = ["-O3", "-fvisibility=hidden"]

extensions = [
    Extension(
        "deeprec_edge._core",
        sources=[os.path.join("deeprec_edge", "_core.pyx")],
        include_dirs=[os.path.join("csrc", "include"), np.get_include()],
        libraries=["dre_core"] + ([] if sys.platform == "win32" else ["m"]),
        depends=C_DEPENDS,
        extra_compile_args=ext_cflags,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    libraries=[
        ("dre_core", {
            "sources": C_SOURCES,
            "include_dirs": [os.path.join("csrc", "include"), CSRC],
            "cflags": core_cflags,
        })
    ],
    ext_modules=cythonize(extensions, language_level=3,
                          compiler_directives={"boundscheck": False, "wraparound": False,
                                               "embedsignature": True}),
)
