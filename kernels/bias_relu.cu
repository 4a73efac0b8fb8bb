// A Linear layer's bias and the ReLU after it (gradlab/backend/fused/bias_relu): the
// forward epilogue of the layer's GEMM, in place, and the backward prologue of its gradient
// GEMMs. The reference's bits: one addition and one comparison per element forward, one
// product per element backward.
#include "common.cuh"

// y[i, j] = max(y[i, j] + bias[j], 0) as np.maximum(., 0): NaN stays NaN, -0.0 becomes +0.0.
template <typename T>
__device__ __forceinline__ void bias_relu_forward_impl(T* __restrict__ y,
                                                       const T* __restrict__ bias, i64 n,
                                                       i64 cols) {
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const T v = y[i] + bias[i % cols];
        y[i] = (v > T(0) || v != v) ? v : T(0);
    }
}

// grad * (out > 0) as grad times a 1 or a 0 of its dtype (grad * 0 keeps grad's sign and
// makes inf a NaN, as the reference's product does). The column sums of the result are left
// to CuPy's own reduction, the one an eager step's bias gradient uses.
template <typename T>
__device__ __forceinline__ void bias_relu_backward_impl(const T* __restrict__ grad,
                                                        const T* __restrict__ out,
                                                        T* __restrict__ grad_pre, i64 n) {
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        grad_pre[i] = grad[i] * (out[i] > T(0) ? T(1) : T(0));
    }
}

#define GL_DEFINE_BIAS_RELU_KERNELS(T, SUFFIX)                                                 \
    extern "C" __global__ void bias_relu_forward_##SUFFIX(T* y, const T* bias, i64 n,          \
                                                          i64 cols) {                          \
        bias_relu_forward_impl<T>(y, bias, n, cols);                                           \
    }                                                                                          \
    extern "C" __global__ void bias_relu_backward_##SUFFIX(const T* grad, const T* out,        \
                                                           T* grad_pre, i64 n) {               \
        bias_relu_backward_impl<T>(grad, out, grad_pre, n);                                    \
    }

GL_DEFINE_BIAS_RELU_KERNELS(float, f32)
GL_DEFINE_BIAS_RELU_KERNELS(double, f64)
