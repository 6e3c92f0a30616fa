"""Build of the C core and its Cython binding; all other metadata is in pyproject.toml.

The C99 core in csrc/ is compiled as its own static library with its own
flags (C99, -O3, hidden visibility).  SIMD paths are enabled per function with
target attributes inside the sources, so nothing here is host-specific: no
-march=native, no -mavx2, no -ffast-math.  The wheel runs on any CPU of its
architecture and picks the best path at run time.

The version is written once, in the C library's public header
(DRE_VERSION_MAJOR/MINOR/PATCH in csrc/include/deeprec_edge.h): it is the
distribution's version (pyproject.toml declares it dynamic) and, through the
compiled extension, ``deeprec_edge.__version__``.

A wheel is a release build: its extension is linked without debug info or a
symbol table (about 2.6 MB -> 0.4 MB on x86-64 and aarch64).  Development
builds (``pip install -e .``, ``setup.py build_ext --inplace``) and the C
library's own builds (csrc/Makefile, csrc/CMakeLists.txt) keep what the
compiler flags ask for; DEEPREC_EDGE_DEBUG_SYMBOLS=1 keeps it in a wheel too.
"""
import glob
import os
import re
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:  # setuptools >= 70.1 ships bdist_wheel; older ones take it from 'wheel'
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc", "src")
C_HEADER = os.path.join("csrc", "include", "deeprec_edge.h")
C_SOURCES = sorted(glob.glob(os.path.join(CSRC, "*.c")))
# The extension links the static core: list its sources and headers as
# dependencies, so an edited kernel relinks _core (build_ext only compares
# the extension with its own sources otherwise, and an in-tree rebuild
# would keep the old kernels).
C_DEPENDS = C_SOURCES + sorted(glob.glob(os.path.join(CSRC, "*.h"))
                               + glob.glob(os.path.join("csrc", "include", "*.h"))
                               + glob.glob(os.path.join("deeprec_edge", "*.pxi"))
                               + glob.glob(os.path.join("deeprec_edge", "*.pxd")))


def c_library_version(header=os.path.join(HERE, C_HEADER)):
    """'MAJOR.MINOR.PATCH' from the DRE_VERSION_* macros of the public header."""
    with open(header, encoding="utf-8") as f:
        text = f.read()
    parts = []
    for name in ("MAJOR", "MINOR", "PATCH"):
        m = re.search(rf"^#define DRE_VERSION_{name} +(\d+)\s*$", text, re.MULTILINE)
        if m is None:
            raise RuntimeError(f"{header}: no '#define DRE_VERSION_{name} <number>' line")
        parts.append(m.group(1))
    return ".".join(parts)


if sys.platform == "win32":
    core_cflags = ["/O2"]
    ext_cflags = ["/O2"]
else:
    # -fno-math-errno lets gcc vectorise sqrtf (optimisers); nothing reads errno.
    # -ffp-contract=off: no a*b+c contracted into an FMA behind the scalar
    # path's back (gcc's default under -std=c99, not clang's).
    core_cflags = ["-std=c99", "-O3", "-fno-math-errno", "-ffp-contract=off", "-fPIC",
                   "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    ext_cflags = ["-Os", "-fvisibility=hidden"]


def release_link_args(platform=sys.platform):
    """Linker flags that drop debug info and the symbol table (nothing for MSVC,
    whose release builds carry no debug info in the .pyd)."""
    if platform == "win32":
        return []
    if platform == "darwin":
        return ["-Wl,-S", "-Wl,-x"]        # ld64: no debug info, no local symbols
    return ["-Wl,--strip-all"]             # GNU ld, gold, lld (Linux, Android)


class ReleaseWheel(bdist_wheel):
    """bdist_wheel, marking the build it runs as a release build."""

    def run(self):
        self.distribution.dre_release_build = os.environ.get("DEEPREC_EDGE_DEBUG_SYMBOLS") != "1"
        super().run()


class BuildExt(build_ext):
    """build_ext that strips the extension in release (wheel) builds."""

    def build_extension(self, ext):
        if getattr(self.distribution, "dre_release_build", False):
            ext.extra_link_args = list(ext.extra_link_args or []) + release_link_args()
            # relink even if an unstripped development build looks up to date
            self.force = True
        super().build_extension(ext)


extensions = [
    Extension(
        "deeprec_edge._core",
        sources=[os.path.join("deeprec_edge", "_core.pyx")],
        include_dirs=[os.path.join("csrc", "include"), np.get_include()],
        libraries=["dre_core"] + ([] if sys.platform == "win32" else ["m"]),
        depends=C_DEPENDS,
        extra_compile_args=ext_cflags,
        define_macros=[
            ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
            # The oldest numpy the wheel runs with, whatever numpy builds it
            # (numpy 2.x defaults to this today, but moves it up over time);
            # pyproject.toml's dependency says numpy>=1.24, and CI runs the
            # suite with numpy 1.24 on a wheel built against its headers.
            ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION"),
        ],
    )
]

setup(
    version=c_library_version(),
    cmdclass={"bdist_wheel": ReleaseWheel, "build_ext": BuildExt},
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
