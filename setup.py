"""Builds qsharp_ext._C: the C++ (CPU) kernels always, the CUDA kernels too when torch can build them.

Build against the torch that is already installed: `pip install --no-build-isolation .` (build isolation
would fetch another torch, possibly a multi-GB CUDA build, into a throwaway environment).
QSHARP_EXT_CUDA=1 forces the CUDA kernels in, QSHARP_EXT_CUDA=0 leaves them out; by default they are
built when torch itself was built with CUDA.
"""

import glob
import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension


def want_cuda() -> bool:
    flag = os.environ.get("QSHARP_EXT_CUDA", "").strip().lower()
    if flag in ("1", "true", "yes", "on"):
        return True
    if flag in ("0", "false", "no", "off"):
        return False
    return torch.version.cuda is not None


def extension():
    cpp_sources = ["csrc/bindings.cpp", *sorted(glob.glob("csrc/cpu/*.cpp"))]
    cxx_flags = ["-O3", "-std=c++17"]
    if not want_cuda():
        return CppExtension("qsharp_ext._C", cpp_sources, extra_compile_args={"cxx": cxx_flags})
    return CUDAExtension(
        "qsharp_ext._C",
        cpp_sources + sorted(glob.glob("csrc/cuda/*.cu")),
        define_macros=[("WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17"]},
    )


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtension})
