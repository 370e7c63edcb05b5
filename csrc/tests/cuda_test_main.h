// The shared entry point of the CUDA tests: run the checks when a device exists, else report "skipped"
// with exit code 77 (ctest's SKIP_RETURN_CODE), so the tests build and pass on machines without a GPU.
#pragma once

#include <cstdio>

#include <cuda_runtime.h>

namespace qsharp::testing {

constexpr int kSkip = 77;

inline int run_if_gpu(int (*run)()) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: skipped\n");
    return kSkip;
  }
  return run();
}

}  // namespace qsharp::testing
