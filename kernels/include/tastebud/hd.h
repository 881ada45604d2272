// Marks math that both backends share: compiled for host and device under nvcc, plain inline
// functions in a host-only build.
#pragma once

#if defined(__CUDACC__)
#define TASTEBUD_HD __host__ __device__ __forceinline__
#else
#define TASTEBUD_HD inline
#endif
