// Inverted dropout with a counter-based RNG and a 1-bit-per-element mask.
//
// Stream: element i draws 32-bit word (i % 4) of Philox4x32-10 applied to the 128-bit
// counter (offset + i / 4, 0) with the 64-bit key split into two 32-bit words (low first).
// A draw is thus a pure function of (key, offset, i), whatever the launch configuration,
// and gradlab/backend/fused/dropout/reference.py computes the same words on the CPU.
// Element i is kept when word >= threshold, threshold = ceil(p * 2^32) (host-computed, so
// p = 0 keeps all and p = 1, threshold = 2^32, keeps none).
// Mask: bit (i % 32) of uint32 word (i / 32); bits past n in the last word are zero.
#include "common.cuh"
#include "philox.cuh"

// Each warp handles tiles of 128 elements: lane l computes one Philox block (4 words) for
// elements 128 t + 4 l .. + 3, i.e. one nibble of mask word 4 t + l / 8; eight lanes OR
// their nibbles together with shuffles, so every mask word is written once, whole.
// The tile loop bound is the same for all lanes of a warp, so the shuffles are convergent.
template <typename T>
__device__ __forceinline__ void dropout_forward_impl(const T* __restrict__ x, T* __restrict__ y,
                                                     u32* __restrict__ mask, i64 n, u64 key,
                                                     u64 offset, u64 threshold, T scale) {
    const int lane = threadIdx.x & 31;
    const i64 warp = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const i64 nwarps = ((i64)gridDim.x * blockDim.x) >> 5;
    const i64 ntiles = (n + 127) >> 7;
    for (i64 tile = warp; tile < ntiles; tile += nwarps) {
        const i64 block = (tile << 5) + lane;
        const GlU32x4 r = gl_philox_block(key, offset, block);
        const u32 words[4] = {r.x, r.y, r.z, r.w};
        u32 nibble = 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const i64 i = (block << 2) + j;
            if (i < n) {
                const bool keep = (u64)words[j] >= threshold;
                nibble |= (u32)keep << j;
                y[i] = keep ? x[i] * scale : T(0);
            }
        }
        u32 word = nibble << (4 * (lane & 7));
        word |= __shfl_xor_sync(GL_FULL_MASK, word, 1);
        word |= __shfl_xor_sync(GL_FULL_MASK, word, 2);
        word |= __shfl_xor_sync(GL_FULL_MASK, word, 4);
        const i64 widx = (tile << 2) + (lane >> 3);
        if ((lane & 7) == 0 && (widx << 5) < n) mask[widx] = word;
    }
}

template <typename T>
__device__ __forceinline__ void dropout_backward_impl(const T* __restrict__ grad,
                                                      const u32* __restrict__ mask,
                                                      T* __restrict__ out, i64 n, T scale) {
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const bool keep = (mask[i >> 5] >> (i & 31)) & 1u;
        out[i] = keep ? grad[i] * scale : T(0);
    }
}

// dropout_forward_graphed: the same draws with the key and a base offset read from device
// memory (state[0], state[1]; offset = state[1] + delta). Inside a CUDA graph, scalar
// arguments are frozen at capture; a state in memory, advanced by the graph itself after its
// draws, gives every launch the next masks (gradlab/backend/cupy_backend.py: CudaGraph).
#define GL_DEFINE_DROPOUT_KERNELS(T, SUFFIX)                                                   \
    extern "C" __global__ void dropout_forward_##SUFFIX(const T* x, T* y, u32* mask, i64 n,    \
                                                        u64 key, u64 offset, u64 threshold,    \
                                                        T scale) {                             \
        dropout_forward_impl<T>(x, y, mask, n, key, offset, threshold, scale);                 \
    }                                                                                          \
    extern "C" __global__ void dropout_forward_graphed_##SUFFIX(                               \
        const T* x, T* y, u32* mask, i64 n, const u64* state, u64 delta, u64 threshold,        \
        T scale) {                                                                             \
        dropout_forward_impl<T>(x, y, mask, n, state[0], state[1] + delta, threshold, scale);  \
    }                                                                                          \
    extern "C" __global__ void dropout_backward_##SUFFIX(const T* grad, const u32* mask,       \
                                                         T* out, i64 n, T scale) {             \
        dropout_backward_impl<T>(grad, mask, out, n, scale);                                   \
    }

GL_DEFINE_DROPOUT_KERNELS(float, f32)
GL_DEFINE_DROPOUT_KERNELS(double, f64)
