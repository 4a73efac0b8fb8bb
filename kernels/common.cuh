// Shared device helpers for every gradlab kernel module.
//
// The loader (gradlab/backend/cuda_kernels.py) pastes this header into each .cu in place
// of its #include line before compiling, so CuPy's on-disk cache (keyed by source text and
// options) sees header edits. Keep it free of host code and of anything dtype-specific.
#ifndef GRADLAB_COMMON_CUH
#define GRADLAB_COMMON_CUH

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;

#define GL_FULL_MASK 0xffffffffu

// Overloads so templated bodies pick the float or double libm entry without casts.
__device__ __forceinline__ float gl_exp(float x) { return expf(x); }
__device__ __forceinline__ double gl_exp(double x) { return exp(x); }
__device__ __forceinline__ float gl_log(float x) { return logf(x); }
__device__ __forceinline__ double gl_log(double x) { return log(x); }
__device__ __forceinline__ float gl_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double gl_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float gl_cos(float x) { return cosf(x); }
__device__ __forceinline__ double gl_cos(double x) { return cos(x); }
__device__ __forceinline__ float gl_sin(float x) { return sinf(x); }
__device__ __forceinline__ double gl_sin(double x) { return sin(x); }
__device__ __forceinline__ float gl_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double gl_abs(double x) { return fabs(x); }
__device__ __forceinline__ float gl_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double gl_max(double a, double b) { return fmax(a, b); }

// NVRTC has no <math.h>, hence no INFINITY macro.
template <typename T> __device__ __forceinline__ T gl_neg_inf();
template <> __device__ __forceinline__ float gl_neg_inf<float>() {
    return __int_as_float(0xff800000);
}
template <> __device__ __forceinline__ double gl_neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000LL);
}

template <typename T> __device__ __forceinline__ T gl_warp_sum(T v) {
#pragma unroll
    for (int delta = 16; delta > 0; delta >>= 1) v += __shfl_xor_sync(GL_FULL_MASK, v, delta);
    return v;
}

#endif  // GRADLAB_COMMON_CUH
