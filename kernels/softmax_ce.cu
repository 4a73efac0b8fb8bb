// Softmax cross-entropy, forward and backward in one pass pair per row.
//
// Per row i with target y, weights w (1 when absent), W = sum_c w_c, s = label_smoothing:
//   row_loss = (1-s) w_y (lse - x_y) + s/C sum_c w_c (lse - x_c)
//   grad_c   = (1-s) w_y (p_c - [c == y]) + s/C (W p_c - w_c),   p = softmax(x)
// Pass 1 computes (max m, S = sum exp(x - m)) online; pass 2 writes grad and, when s > 0,
// sums w_c (m - x_c). Losses are formed as (m - x_y) + log S, never lse - x_y, so logits of
// 1e8 lose nothing to cancellation. Acc is float for float32 and double for float64.
// Rows whose target is ignore_index get loss 0 and grad 0. A target outside [0, C) gets the
// same and the row index is atomicMin-ed into *bad_row (initialised to N by the host), which
// the host reads to raise IndexError: no device assert, the context stays usable.
// Two layouts of the same body: a warp per row (small C) and a block per row (large C).
#include "common.cuh"

template <typename Acc>
__device__ __forceinline__ void gl_merge_max_sum(Acc& m, Acc& s, Acc m2, Acc s2) {
    const Acc mn = gl_max(m, m2);
    // Comparing with the new max, not subtracting, keeps -inf - -inf (NaN) out.
    const Acc a = (m == mn) ? s : s * gl_exp(m - mn);
    const Acc b = (m2 == mn) ? s2 : s2 * gl_exp(m2 - mn);
    m = mn;
    s = a + b;
}

template <typename Acc>
__device__ __forceinline__ void gl_warp_max_sum(Acc& m, Acc& s) {
#pragma unroll
    for (int delta = 16; delta > 0; delta >>= 1) {
        const Acc m2 = __shfl_xor_sync(GL_FULL_MASK, m, delta);
        const Acc s2 = __shfl_xor_sync(GL_FULL_MASK, s, delta);
        gl_merge_max_sum(m, s, m2, s2);
    }
}

// Block-wide all-reduce; ends with a barrier so the scratch can be reused at once.
template <typename Acc>
__device__ __forceinline__ void gl_block_max_sum(Acc& m, Acc& s, Acc* sm_m, Acc* sm_s) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    gl_warp_max_sum(m, s);
    if (lane == 0) {
        sm_m[warp] = m;
        sm_s[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < nwarps ? sm_m[lane] : gl_neg_inf<Acc>();
        s = lane < nwarps ? sm_s[lane] : Acc(0);
        gl_warp_max_sum(m, s);
        if (lane == 0) {
            sm_m[0] = m;
            sm_s[0] = s;
        }
    }
    __syncthreads();
    m = sm_m[0];
    s = sm_s[0];
    __syncthreads();
}

template <typename Acc> __device__ __forceinline__ Acc gl_block_sum(Acc v, Acc* sm) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = gl_warp_sum(v);
    if (lane == 0) sm[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? sm[lane] : Acc(0);
        v = gl_warp_sum(v);
        if (lane == 0) sm[0] = v;
    }
    __syncthreads();
    v = sm[0];
    __syncthreads();
    return v;
}

template <typename T, typename Acc, bool BLOCK>
__device__ __forceinline__ void softmax_ce_impl(const T* __restrict__ logits,
                                                const i64* __restrict__ target,
                                                const T* __restrict__ weight,
                                                const T* __restrict__ weight_sum, i64 n_rows,
                                                i64 n_classes, i64 ignore_index, Acc smoothing,
                                                T* __restrict__ loss, T* __restrict__ grad,
                                                u64* __restrict__ bad_row) {
    __shared__ Acc sm_m[32];
    __shared__ Acc sm_s[32];
    int lane, group;
    i64 row0, row_stride;
    if (BLOCK) {
        lane = threadIdx.x;
        group = blockDim.x;
        row0 = blockIdx.x;
        row_stride = gridDim.x;
    } else {
        lane = threadIdx.x & 31;
        group = 32;
        row0 = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
        row_stride = ((i64)gridDim.x * blockDim.x) >> 5;
    }
    const Acc C = (Acc)n_classes;
    const Acc W = weight ? (Acc)weight_sum[0] : C;
    const Acc b = smoothing / C;
    // Rows are uniform across a group (warp or block), so every branch below on row data is
    // taken by the whole group, as the shuffles and barriers require.
    for (i64 row = row0; row < n_rows; row += row_stride) {
        const T* x = logits + row * n_classes;
        T* g = grad + row * n_classes;
        const i64 y = target[row];
        if (y == ignore_index || y < 0 || y >= n_classes) {
            if (y != ignore_index && lane == 0) atomicMin(bad_row, (u64)row);
            for (i64 c = lane; c < n_classes; c += group) g[c] = T(0);
            if (lane == 0) loss[row] = T(0);
            continue;
        }
        Acc m = gl_neg_inf<Acc>(), s = Acc(0);
        for (i64 c = lane; c < n_classes; c += group) gl_merge_max_sum(m, s, (Acc)x[c], Acc(1));
        if (BLOCK) gl_block_max_sum(m, s, sm_m, sm_s);
        else gl_warp_max_sum(m, s);
        const Acc inv_s = Acc(1) / s;
        const Acc log_s = gl_log(s);
        const Acc a = (Acc(1) - smoothing) * (weight ? (Acc)weight[y] : Acc(1));
        Acc smooth = Acc(0);
        for (i64 c = lane; c < n_classes; c += group) {
            const Acc xc = (Acc)x[c];
            const Acc p = gl_exp(xc - m) * inv_s;
            const Acc wc = weight ? (Acc)weight[c] : Acc(1);
            const Acc onehot = c == y ? Acc(1) : Acc(0);
            g[c] = (T)(a * (p - onehot) + b * (W * p - wc));
            smooth += wc * (m - xc);
        }
        if (b != Acc(0)) smooth = BLOCK ? gl_block_sum(smooth, sm_m) : gl_warp_sum(smooth);
        if (lane == 0) {
            const Acc nll = (m - (Acc)x[y]) + log_s;
            loss[row] = (T)(a * nll + b * (smooth + W * log_s));
        }
    }
}

// The block kernel runs with up to 512 threads (fused/softmax_ce/cuda.py): its bound caps
// the registers a thread may take at what 512 of them can have, so the launch cannot fail
// for lack of them.
#define GL_DEFINE_SOFTMAX_CE_KERNELS(T, ACC, SUFFIX)                                           \
    extern "C" __global__ void softmax_ce_warp_##SUFFIX(                                       \
        const T* logits, const i64* target, const T* weight, const T* weight_sum, i64 n_rows,  \
        i64 n_classes, i64 ignore_index, ACC smoothing, T* loss, T* grad, u64* bad_row) {      \
        softmax_ce_impl<T, ACC, false>(logits, target, weight, weight_sum, n_rows, n_classes,  \
                                       ignore_index, smoothing, loss, grad, bad_row);          \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(512) softmax_ce_block_##SUFFIX(               \
        const T* logits, const i64* target, const T* weight, const T* weight_sum, i64 n_rows,  \
        i64 n_classes, i64 ignore_index, ACC smoothing, T* loss, T* grad, u64* bad_row) {      \
        softmax_ce_impl<T, ACC, true>(logits, target, weight, weight_sum, n_rows, n_classes,   \
                                      ignore_index, smoothing, loss, grad, bad_row);           \
    }

GL_DEFINE_SOFTMAX_CE_KERNELS(float, float, f32)
GL_DEFINE_SOFTMAX_CE_KERNELS(double, double, f64)
