// Multi-tensor optimizer steps: one launch updates every tensor of a parameter group.
//
// Host side (gradlab/backend/fused/optim/cuda.py) builds one int64 device table per group:
//   ptrs[ntensors][K]   data pointers, column 0 = param, 1 = grad, 2.. = optimizer state
//                       (0 where that state is unused, e.g. no momentum buffer)
//   sizes[ntensors]     elements per tensor
//   chunk_tensor[nchunks], chunk_start[nchunks]
//                       each chunk is <= chunk_size elements of one tensor
// Blocks walk the chunks (grid-stride), threads walk a chunk's elements. Every column but
// the grad is written back. Formulas are PyTorch's (torch.optim docs); the NumPy reference
// in gradlab/backend/fused/optim/reference.py follows the same operation order, and every
// derived scalar (bias corrections, complements 1 - beta, AdamW's decay) comes from the
// host, computed once in double by gradlab/backend/fused/optim/scalars.py and rounded to T:
// a complement formed here in float32 from a rounded beta would differ
// (1 - 0.999f = 0.0009999871f, not 0.001f).
// Compiled with --fmad=false, the updates then equal the reference bit for bit.
#include "common.cuh"

#define GL_ILP 4

template <typename T, int K, class Op>
__device__ __forceinline__ void multi_tensor_apply(const i64* __restrict__ table, int ntensors,
                                                   i64 nchunks, i64 chunk_size, const Op& op) {
    const i64* sizes = table + (i64)ntensors * K;
    const i64* chunk_tensor = sizes + ntensors;
    const i64* chunk_start = chunk_tensor + nchunks;
    for (i64 c = blockIdx.x; c < nchunks; c += gridDim.x) {
        const i64 t = chunk_tensor[c];
        const i64 start = chunk_start[c];
        const i64 end = min(start + chunk_size, sizes[t]);
        T* a[K];
#pragma unroll
        for (int k = 0; k < K; ++k) a[k] = reinterpret_cast<T*>(table[t * K + k]);
        // GL_ILP independent elements per thread and iteration: all loads are issued before
        // any store so several memory requests are in flight per thread.
        for (i64 base = start + threadIdx.x; base < end; base += (i64)GL_ILP * blockDim.x) {
            T r[GL_ILP][K];
#pragma unroll
            for (int j = 0; j < GL_ILP; ++j) {
                const i64 i = base + (i64)j * blockDim.x;
#pragma unroll
                for (int k = 0; k < K; ++k) r[j][k] = (i < end && a[k]) ? a[k][i] : T(0);
            }
#pragma unroll
            for (int j = 0; j < GL_ILP; ++j) op(r[j]);
#pragma unroll
            for (int j = 0; j < GL_ILP; ++j) {
                const i64 i = base + (i64)j * blockDim.x;
                if (i < end) {
#pragma unroll
                    for (int k = 0; k < K; ++k) {
                        if (k != 1 && a[k]) a[k][i] = r[j][k];
                    }
                }
            }
        }
    }
}

// Columns: param, grad, momentum_buffer.
template <typename T> struct SgdOp {
    T lr, momentum, undamped, weight_decay;
    int nesterov, maximize, first_step, use_momentum;
    __device__ __forceinline__ void operator()(T* r) const {
        T g = maximize ? -r[1] : r[1];
        if (weight_decay != T(0)) g = g + weight_decay * r[0];
        if (use_momentum) {
            const T b = first_step ? g : momentum * r[2] + undamped * g;
            r[2] = b;
            g = nesterov ? g + momentum * b : b;
        }
        r[0] = r[0] - lr * g;
    }
};

// Columns: param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq.
// step_size = lr / (1 - beta1^step), bc2_sqrt = sqrt(1 - beta2^step); weight_decay is Adam's
// L2 term (0 for AdamW) and decay AdamW's factor 1 - lr * weight_decay (1 for Adam).
template <typename T> struct AdamOp {
    T step_size, bc2_sqrt, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay,
        decay;
    int amsgrad, maximize;
    __device__ __forceinline__ void operator()(T* r) const {
        T g = maximize ? -r[1] : r[1];
        if (weight_decay != T(0)) g = g + weight_decay * r[0];
        const T p = r[0] * decay;  // exact when decay == 1
        const T m = beta1 * r[2] + one_minus_beta1 * g;
        const T v = beta2 * r[3] + one_minus_beta2 * (g * g);
        r[2] = m;
        r[3] = v;
        T vhat = v;
        if (amsgrad) {
            vhat = gl_max(r[4], v);
            r[4] = vhat;
        }
        const T denom = gl_sqrt(vhat) / bc2_sqrt + eps;
        r[0] = p - step_size * (m / denom);
    }
};

// Columns: param, grad, square_avg, momentum_buffer, grad_avg.
template <typename T> struct RmspropOp {
    T lr, alpha, one_minus_alpha, eps, weight_decay, momentum;
    int centered, maximize;
    __device__ __forceinline__ void operator()(T* r) const {
        T g = maximize ? -r[1] : r[1];
        if (weight_decay != T(0)) g = g + weight_decay * r[0];
        const T v = alpha * r[2] + one_minus_alpha * (g * g);
        r[2] = v;
        T avg;
        if (centered) {
            const T a = alpha * r[4] + one_minus_alpha * g;
            r[4] = a;
            avg = gl_sqrt(v - a * a) + eps;
        } else {
            avg = gl_sqrt(v) + eps;
        }
        if (momentum != T(0)) {
            const T b = momentum * r[3] + g / avg;
            r[3] = b;
            r[0] = r[0] - lr * b;
        } else {
            r[0] = r[0] - lr * (g / avg);
        }
    }
};

// Columns: param, grad, state_sum. clr = lr / (1 + (step - 1) lr_decay) from the host.
template <typename T> struct AdagradOp {
    T clr, eps, weight_decay;
    int maximize;
    __device__ __forceinline__ void operator()(T* r) const {
        T g = maximize ? -r[1] : r[1];
        if (weight_decay != T(0)) g = g + weight_decay * r[0];
        const T s = r[2] + g * g;
        r[2] = s;
        r[0] = r[0] - clr * (g / (gl_sqrt(s) + eps));
    }
};

// Columns: param, grad, square_avg, acc_delta.
template <typename T> struct AdadeltaOp {
    T lr, rho, one_minus_rho, eps, weight_decay;
    int maximize;
    __device__ __forceinline__ void operator()(T* r) const {
        T g = maximize ? -r[1] : r[1];
        if (weight_decay != T(0)) g = g + weight_decay * r[0];
        const T v = rho * r[2] + one_minus_rho * (g * g);
        r[2] = v;
        const T d = gl_sqrt(r[3] + eps) / gl_sqrt(v + eps) * g;
        r[3] = rho * r[3] + one_minus_rho * (d * d);
        r[0] = r[0] - lr * d;
    }
};

// Columns: param, grad, exp_avg, exp_inf.
template <typename T> struct AdamaxOp {
    T step_size, beta1, one_minus_beta1, beta2, eps, weight_decay;
    int maximize;
    __device__ __forceinline__ void operator()(T* r) const {
        T g = maximize ? -r[1] : r[1];
        if (weight_decay != T(0)) g = g + weight_decay * r[0];
        const T m = beta1 * r[2] + one_minus_beta1 * g;
        const T u = gl_max(beta2 * r[3], gl_abs(g) + eps);
        r[2] = m;
        r[3] = u;
        r[0] = r[0] - step_size * m / u;
    }
};

// NAdam's and RAdam's start: decoupled decay of p, the gradient with its L2 term, and the
// moments m = b1 m + (1-b1) g, v = b2 v + ((1-b2) g) g (reference._adam_moments).
template <typename T> struct AdamMoments {
    T beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay;
    int maximize;
    __device__ __forceinline__ T operator()(T* r) const {
        T g = maximize ? -r[1] : r[1];
        if (weight_decay != T(0)) g = g + weight_decay * r[0];
        r[0] = r[0] * decay;  // exact when decay == 1
        r[2] = beta1 * r[2] + one_minus_beta1 * g;
        r[3] = beta2 * r[3] + (one_minus_beta2 * g) * g;
        return g;
    }
};

// Columns: param, grad, exp_avg, exp_avg_sq. grad_coef, avg_coef and bc2 from the host
// (they carry the mu_t schedule and the product of the mu_i).
template <typename T> struct NadamOp {
    T grad_coef, avg_coef, bc2;
    AdamMoments<T> moments;
    __device__ __forceinline__ void operator()(T* r) const {
        const T g = moments(r);
        const T denom = gl_sqrt(r[3] / bc2) + moments.eps;
        r[0] = (r[0] - grad_coef * g / denom) - avg_coef * r[2] / denom;
    }
};

// Columns: param, grad, exp_avg, exp_avg_sq. rectified (rho_t > 5) comes from the host.
template <typename T> struct RadamOp {
    T step_size, adaptive_coef;
    int rectified;
    AdamMoments<T> moments;
    __device__ __forceinline__ void operator()(T* r) const {
        moments(r);
        r[0] = rectified ? r[0] - adaptive_coef * r[2] / (gl_sqrt(r[3]) + moments.eps)
                         : r[0] - step_size * r[2];
    }
};

#define GL_TABLE_ARGS const i64 *table, int ntensors, i64 nchunks, i64 chunk_size
#define GL_TABLE table, ntensors, nchunks, chunk_size

// One extern "C" entry point per optimizer and dtype, all from the templates above.
#define GL_DEFINE_OPTIM_KERNELS(T, SUFFIX)                                                     \
    extern "C" __global__ void sgd_step_##SUFFIX(GL_TABLE_ARGS, T lr, T momentum, T undamped,  \
                                                 T weight_decay, int nesterov, int maximize,   \
                                                 int first_step, int use_momentum) {           \
        const SgdOp<T> op{lr, momentum, undamped, weight_decay,                                \
                          nesterov, maximize, first_step, use_momentum};                       \
        multi_tensor_apply<T, 3>(GL_TABLE, op);                                                \
    }                                                                                          \
    extern "C" __global__ void adam_step_##SUFFIX(                                             \
        GL_TABLE_ARGS, T step_size, T bc2_sqrt, T beta1, T one_minus_beta1, T beta2,           \
        T one_minus_beta2, T eps, T weight_decay, T decay, int amsgrad, int maximize) {        \
        const AdamOp<T> op{step_size, bc2_sqrt, beta1, one_minus_beta1, beta2,                 \
                           one_minus_beta2, eps, weight_decay, decay, amsgrad, maximize};      \
        multi_tensor_apply<T, 5>(GL_TABLE, op);                                                \
    }                                                                                          \
    extern "C" __global__ void rmsprop_step_##SUFFIX(                                          \
        GL_TABLE_ARGS, T lr, T alpha, T one_minus_alpha, T eps, T weight_decay, T momentum,    \
        int centered, int maximize) {                                                          \
        const RmspropOp<T> op{lr, alpha, one_minus_alpha, eps, weight_decay, momentum,         \
                              centered, maximize};                                             \
        multi_tensor_apply<T, 5>(GL_TABLE, op);                                                \
    }                                                                                          \
    extern "C" __global__ void adagrad_step_##SUFFIX(GL_TABLE_ARGS, T clr, T eps,              \
                                                     T weight_decay, int maximize) {           \
        const AdagradOp<T> op{clr, eps, weight_decay, maximize};                               \
        multi_tensor_apply<T, 3>(GL_TABLE, op);                                                \
    }                                                                                          \
    extern "C" __global__ void adadelta_step_##SUFFIX(GL_TABLE_ARGS, T lr, T rho,              \
                                                      T one_minus_rho, T eps, T weight_decay,  \
                                                      int maximize) {                          \
        const AdadeltaOp<T> op{lr, rho, one_minus_rho, eps, weight_decay, maximize};           \
        multi_tensor_apply<T, 4>(GL_TABLE, op);                                                \
    }                                                                                          \
    extern "C" __global__ void adamax_step_##SUFFIX(GL_TABLE_ARGS, T step_size, T beta1,       \
                                                    T one_minus_beta1, T beta2, T eps,         \
                                                    T weight_decay, int maximize) {            \
        const AdamaxOp<T> op{step_size, beta1, one_minus_beta1, beta2, eps, weight_decay,      \
                             maximize};                                                        \
        multi_tensor_apply<T, 4>(GL_TABLE, op);                                                \
    }                                                                                          \
    extern "C" __global__ void nadam_step_##SUFFIX(                                            \
        GL_TABLE_ARGS, T grad_coef, T avg_coef, T bc2, T beta1, T one_minus_beta1, T beta2,    \
        T one_minus_beta2, T eps, T weight_decay, T decay, int maximize) {                     \
        const NadamOp<T> op{grad_coef, avg_coef, bc2,                                          \
                            {beta1, one_minus_beta1, beta2, one_minus_beta2, eps,              \
                             weight_decay, decay, maximize}};                                  \
        multi_tensor_apply<T, 4>(GL_TABLE, op);                                                \
    }                                                                                          \
    extern "C" __global__ void radam_step_##SUFFIX(                                            \
        GL_TABLE_ARGS, T step_size, T adaptive_coef, T beta1, T one_minus_beta1, T beta2,      \
        T one_minus_beta2, T eps, T weight_decay, T decay, int rectified, int maximize) {      \
        const RadamOp<T> op{step_size, adaptive_coef, rectified,                               \
                            {beta1, one_minus_beta1, beta2, one_minus_beta2, eps,              \
                             weight_decay, decay, maximize}};                                  \
        multi_tensor_apply<T, 4>(GL_TABLE, op);                                                \
    }

GL_DEFINE_OPTIM_KERNELS(float, f32)
GL_DEFINE_OPTIM_KERNELS(double, f64)
