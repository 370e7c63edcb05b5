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
    # -fopenmp: at::parallel_for in the CPU kernels splits rows over torch's OpenMP threads only when the
    # extension itself is compiled with OpenMP; without it every kernel runs on one thread.
    cxx_flags = ["-O3", "-std=c++17", "-fopenmp"]
    link_flags = ["-fopenmp"]
    if not want_cuda():
        return CppExtension(
            "qsharp_ext._C", cpp_sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags
        )
    return CUDAExtension(
        "qsharp_ext._C",
        cpp_sources + sorted(glob.glob("csrc/cuda/*.cu")),
        define_macros=[("WITH_CUDA", None)],
        extra_link_args=link_flags,
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17"]},
    )


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtension})
