// The product of two small matrices (gradlab/backend/cupy_backend.py, matrix_product), in
// place of cuBLAS within CupyBackend.SMALL_GEMM_MAX multiply-adds and SMALL_GEMM_K_MAX terms
// a sum.
//
// Why a GEMM of our own: CuPy refuses every cuBLAS call while a stream captures ("calling
// cuBLAS API during stream capture is currently unsupported"), so without it no step with a
// Linear layer could be a CUDA graph; and at these sizes a GEMM's time is its launch, not its
// arithmetic. Eager steps use it too, so that a graphed step gives eager's bits.
//
// One thread per element of C, grid-stride: c[i, j] = sum over p in order of a[i, p] *
// b[p, j], each product and sum rounded in T (--fmad=false), from +0. A and B are read
// through their element strides, so the transposed operands of a Linear's three products
// (x W^T, g W, g^T x) need no copy; C is C-contiguous.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void matmul_impl(const T* __restrict__ a, i64 a_rs, i64 a_cs,
                                            const T* __restrict__ b, i64 b_rs, i64 b_cs,
                                            T* __restrict__ c, i64 m, i64 n, i64 k) {
    const i64 total = m * n;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += stride) {
        const i64 i = idx / n, j = idx - (idx / n) * n;
        const T* ar = a + i * a_rs;
        const T* bc = b + j * b_cs;
        T acc = T(0);
        for (i64 p = 0; p < k; ++p) acc += ar[p * a_cs] * bc[p * b_rs];
        c[idx] = acc;
    }
}

#define GL_DEFINE_MATMUL_KERNELS(T, SUFFIX)                                                    \
    extern "C" __global__ void matmul_##SUFFIX(const T* a, i64 a_rs, i64 a_cs, const T* b,     \
                                               i64 b_rs, i64 b_cs, T* c, i64 m, i64 n,         \
                                               i64 k) {                                        \
        matmul_impl<T>(a, a_rs, a_cs, b, b_rs, b_cs, c, m, n, k);                              \
    }

GL_DEFINE_MATMUL_KERNELS(float, f32)
GL_DEFINE_MATMUL_KERNELS(double, f64)
