"""Thin SDK adapters, one per file. Importing this package first makes the SDK importable on a
host without a GPU driver: holoscan links against libcudart.so.13, which the
``nvidia-cuda-runtime`` wheel provides but does not put on the loader path."""

import ctypes
import glob
import os
import sys


def _preload_cudart() -> None:
    for base in sys.path:
        for lib in sorted(
            glob.glob(os.path.join(base, "nvidia", "cu13", "lib", "libcudart.so.13*"))
        ):
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            return


_preload_cudart()
