// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011):
// the counter-based generator of every gradlab kernel that draws (dropout.cu, random.cu).
// A block of four 32-bit words is a pure function of a 128-bit counter and a 64-bit key, so
// a draw depends on (key, offset, index) alone, whatever the launch configuration.
// gradlab/backend/fused/dropout/reference.py computes the same words on the CPU.
#ifndef GRADLAB_PHILOX_CUH
#define GRADLAB_PHILOX_CUH

#include "common.cuh"

#define GL_PHILOX_M0 0xD2511F53u
#define GL_PHILOX_M1 0xCD9E8D57u
#define GL_PHILOX_W0 0x9E3779B9u
#define GL_PHILOX_W1 0xBB67AE85u

struct GlU32x4 {
    u32 x, y, z, w;
};

__device__ __forceinline__ GlU32x4 gl_philox4x32_10(GlU32x4 c, u32 k0, u32 k1) {
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        const u32 hi0 = __umulhi(GL_PHILOX_M0, c.x);
        const u32 lo0 = GL_PHILOX_M0 * c.x;
        const u32 hi1 = __umulhi(GL_PHILOX_M1, c.z);
        const u32 lo1 = GL_PHILOX_M1 * c.z;
        c = GlU32x4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
        k0 += GL_PHILOX_W0;
        k1 += GL_PHILOX_W1;
    }
    return c;
}

// Block ``index`` of the stream (key, offset): Philox of counter (offset + index) mod 2^64,
// as (lo, hi, 0, 0), under key (lo, hi).
__device__ __forceinline__ GlU32x4 gl_philox_block(u64 key, u64 offset, i64 index) {
    const u64 ctr = offset + (u64)index;
    return gl_philox4x32_10(GlU32x4{(u32)ctr, (u32)(ctr >> 32), 0u, 0u}, (u32)key,
                            (u32)(key >> 32));
}

#endif  // GRADLAB_PHILOX_CUH
