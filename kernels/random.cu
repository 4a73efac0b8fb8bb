// The random factories' draws on the GPU (gl.rand, gl.randn and their _like forms, RReLU's
// slopes) from the Philox stream that dropout uses, so that a CUDA graph can replay them
// with fresh draws (the *_graphed entry points, as dropout_forward_graphed). gl.randint
// scales these float64 units with CuPy's elementwise ops (fused/random/cuda.py).
//
// Streams (gradlab/backend/fused/random/reference.py computes the same values on the CPU):
//   float32: element i takes Philox block i / 4 of (key, offset) and, of its four words,
//            word i % 4; a unit u = (word >> 8) 2^-24, in [0, 1).
//   float64: element i takes block i / 2 and of it words 2 (i % 2) and 2 (i % 2) + 1 (a, b);
//            u = ((a >> 5) 2^26 + (b >> 6)) 2^-53, in [0, 1).
//   uniform: low + (high - low) u, in the element's dtype.
//   normal:  Box-Muller on consecutive pairs of units (u1, u2) (elements 2 k and 2 k + 1,
//            which share a block): with u1' = u1 + 2^-24 (float32) or 2^-53 (float64), in
//            (0, 1], so that the log is finite, r = sqrt(-2 log u1'), and the pair is
//            r cos(2 pi u2), r sin(2 pi u2).
// A call of n elements uses ceil(n / 4) blocks in float32, ceil(n / 2) in float64.
#include "common.cuh"
#include "philox.cuh"

template <typename T> struct GlUnits;

template <> struct GlUnits<float> {
    static constexpr int per_block = 4;  // elements per Philox block
    static constexpr int words = 1;      // words per unit
    static __device__ __forceinline__ float unit(const u32* w) {
        return (float)(w[0] >> 8) * 0x1p-24f;
    }
    static __device__ __forceinline__ float unit_above_zero(const u32* w) {
        return (float)((w[0] >> 8) + 1u) * 0x1p-24f;
    }
};

template <> struct GlUnits<double> {
    static constexpr int per_block = 2;
    static constexpr int words = 2;
    static __device__ __forceinline__ u64 bits53(const u32* w) {
        return ((u64)(w[0] >> 5) << 26) | (u64)(w[1] >> 6);
    }
    static __device__ __forceinline__ double unit(const u32* w) {
        return (double)bits53(w) * 0x1p-53;
    }
    static __device__ __forceinline__ double unit_above_zero(const u32* w) {
        return (double)(bits53(w) + 1u) * 0x1p-53;
    }
};

// Calls body(first, w) for each Philox block of the draw that this thread owns (one thread a
// block, grid-stride): w its four words, first the index of its first element.
template <typename T, typename Body>
__device__ __forceinline__ void gl_for_each_block(i64 n, u64 key, u64 offset, Body body) {
    typedef GlUnits<T> U;
    const i64 nblocks = (n + U::per_block - 1) / U::per_block;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    for (i64 b = (i64)blockIdx.x * blockDim.x + threadIdx.x; b < nblocks; b += stride) {
        const GlU32x4 r = gl_philox_block(key, offset, b);
        const u32 w[4] = {r.x, r.y, r.z, r.w};
        body(b * U::per_block, w);
    }
}

template <typename T>
__device__ __forceinline__ void random_uniform_impl(T* __restrict__ out, i64 n, u64 key,
                                                    u64 offset, T low, T high) {
    typedef GlUnits<T> U;
    const T span = high - low;
    gl_for_each_block<T>(n, key, offset, [&](i64 first, const u32* w) {
#pragma unroll
        for (int j = 0; j < U::per_block; ++j) {
            if (first + j < n) out[first + j] = low + span * U::unit(w + j * U::words);
        }
    });
}

template <typename T>
__device__ __forceinline__ void random_normal_impl(T* __restrict__ out, i64 n, u64 key,
                                                   u64 offset) {
    typedef GlUnits<T> U;
    const T two_pi = (T)6.283185307179586;  // 2 pi rounded to double, then to T
    gl_for_each_block<T>(n, key, offset, [&](i64 first, const u32* w) {
#pragma unroll
        for (int j = 0; j < U::per_block; j += 2) {
            const i64 i = first + j;
            if (i >= n) break;
            const T radius = gl_sqrt((T)-2 * gl_log(U::unit_above_zero(w + j * U::words)));
            const T angle = two_pi * U::unit(w + (j + 1) * U::words);
            out[i] = radius * gl_cos(angle);
            if (i + 1 < n) out[i + 1] = radius * gl_sin(angle);
        }
    });
}

// The *_graphed forms read the key and a base offset from device memory (state[0],
// state[1]; offset = state[1] + delta), as dropout_forward_graphed does.
#define GL_DEFINE_RANDOM_KERNELS(T, SUFFIX)                                                    \
    extern "C" __global__ void random_uniform_##SUFFIX(T* out, i64 n, u64 key, u64 offset,    \
                                                       T low, T high) {                        \
        random_uniform_impl<T>(out, n, key, offset, low, high);                                \
    }                                                                                          \
    extern "C" __global__ void random_uniform_graphed_##SUFFIX(T* out, i64 n, const u64* state,\
                                                               u64 delta, T low, T high) {     \
        random_uniform_impl<T>(out, n, state[0], state[1] + delta, low, high);                 \
    }                                                                                          \
    extern "C" __global__ void random_normal_##SUFFIX(T* out, i64 n, u64 key, u64 offset) {   \
        random_normal_impl<T>(out, n, key, offset);                                            \
    }                                                                                          \
    extern "C" __global__ void random_normal_graphed_##SUFFIX(T* out, i64 n, const u64* state, \
                                                              u64 delta) {                     \
        random_normal_impl<T>(out, n, state[0], state[1] + delta);                             \
    }

GL_DEFINE_RANDOM_KERNELS(float, f32)
GL_DEFINE_RANDOM_KERNELS(double, f64)
