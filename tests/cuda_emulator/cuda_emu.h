// CUDA execution model on the CPU, for running kernels/*.cu unchanged in the test suite.
//
// build.py compiles one shared object per kernel source: this header, then the exact text
// NVRTC would compile, then one generated launcher per extern "C" __global__ entry point.
// Header-only on purpose: every .so carries its own scheduler, fiber pool and shared memory.
//
// Model: the blocks of a grid run one after another on the calling OS thread; the threads of
// a block are fibers scheduled cooperatively. Barriers (__syncthreads, __syncwarp) and
// shuffles are the only scheduling points. A launch is therefore deterministic for a given
// resume order, and the order (forward, reverse, seeded shuffle) is the knob that exposes
// missing barriers. Misuse (divergent barriers or shuffles, bad masks, early exit past a
// barrier) is reported as an error naming the call site, never as a hang.
#ifndef GL_CUDA_EMU_H
#define GL_CUDA_EMU_H

#define GRADLAB_CUDA_EMULATOR 1

// Qualifiers are the same in both modes; only __global__ differs so that build.py can find
// entry points in `g++ -E` output without a C++ parser.
#define __device__
#define __host__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __constant__
#define __managed__

#ifdef GL_EMU_DISCOVER
#define __global__ GL_EMU_GLOBAL_MARKER
#define __shared__
#else
#define __global__

#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// One static copy per block in flight suffices because blocks run one at a time. The named
// section lets the scheduler poison all of a module's shared memory at every block start
// through the linker-provided __start_/__stop_ symbols.
#define __shared__ static __attribute__((section("gl_emu_shared"), used))

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
        : x(x_), y(y_), z(z_) {}
};

extern "C" {
extern char __start_gl_emu_shared[] __attribute__((weak, visibility("hidden")));
extern char __stop_gl_emu_shared[] __attribute__((weak, visibility("hidden")));
}

namespace gl_emu {

// Shared with runtime.py (ctypes mirror there); keep the layout in step.
struct LaunchCfg {
    unsigned int grid[3];
    unsigned int block[3];
    int order;  // 0 forward, 1 reverse, 2 seeded shuffle
    int allow_early_exit;
    unsigned long long seed;
    char* err;
    unsigned long long errlen;
};

enum Order { FORWARD = 0, REVERSE = 1, SHUFFLE = 2 };
enum Rc { OK = 0, MISUSE = 1, BAD_CONFIG = 2, NO_MEMORY = 3 };
enum State : unsigned char { RUNNABLE, AT_BARRIER, AT_SHFL, AT_SYNCWARP, DONE };
enum ShflKind { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR, VOTE_BALLOT, VOTE_ANY, VOTE_ALL };
enum BarKind { BAR_PLAIN, BAR_COUNT, BAR_AND, BAR_OR };

constexpr unsigned kMaxThreads = 1024;
constexpr size_t kStackSize = 64 * 1024;
// Large enough that a big frame (a local array) cannot step over it into another mapping.
constexpr size_t kGuardSize = 64 * 1024;
constexpr size_t kAltStackSize = 64 * 1024;

struct Fiber {
    jmp_buf ctx;
    uint3 tid;
    unsigned linear, lane, warp;
    State state;
    bool booted;   // parked at the top of its loop (or in a resumable wait)
    bool in_body;  // inside the kernel body; abandoned bodies need a fresh stack
    // The site it waits at (or last passed), for matching and for messages.
    const char* op;
    const char* file;
    int line;
    // Shuffle request and answer.
    unsigned mask;
    int kind, arg, width;
    unsigned long long val, result;
    char* stack;  // usable region; a PROT_NONE guard page sits just below it
};

struct Emu {
    Fiber* fibers = nullptr;
    unsigned nfibers = 0;  // booted-or-allocated pool size
    Fiber* cur = nullptr;
    jmp_buf sched;
    ucontext_t boot_sched, boot_fiber;
    unsigned order[kMaxThreads];
    int pos = 0, norder = 0;
    // Current block.
    uint3 block_idx;
    dim3 block_dim, grid_dim;
    unsigned nthreads = 0;
    // Current launch.
    const char* kernel = "";
    void (*body)(void*) = nullptr;
    void* body_ctx = nullptr;
    bool allow_early_exit = false;
    bool failed = false;
    volatile sig_atomic_t in_fiber = 0;  // a fiber (not the scheduler) is running
    struct sigaction old_segv, old_bus;
    stack_t old_alt;
    char* alt_stack = nullptr;
    char msg[4096];
    unsigned long long rng = 0;
};

inline Emu g;

inline unsigned long long next_rand() {
    // splitmix64: cheap, good enough to permute resume orders reproducibly from a seed.
    unsigned long long z = (g.rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__attribute__((format(printf, 1, 2))) inline void fail(const char* fmt, ...) {
    if (g.failed) return;  // keep the first error: later ones are usually its consequences
    g.failed = true;
    int n = snprintf(g.msg, sizeof g.msg, "kernel '%s', block (%u,%u,%u): ", g.kernel,
                     g.block_idx.x, g.block_idx.y, g.block_idx.z);
    if (n < 0 || (size_t)n >= sizeof g.msg) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g.msg + n, sizeof g.msg - n, fmt, ap);
    va_end(ap);
}

inline const uint3& thread_idx() { return g.cur->tid; }

// -- fiber switching -------------------------------------------------------------------------
// ucontext creates each fiber once; later switches use _setjmp/_longjmp, which skip the
// signal-mask system call that makes swapcontext cost ~250 ns per switch here (~15 ns
// instead). Shuffle-heavy kernels switch on every lane at every shuffle, so this dominates.

[[noreturn]] inline void resume(Fiber* f) {
    g.cur = f;
    g.in_fiber = 1;
    _longjmp(f->ctx, 1);
}

// Leaves the running fiber (state already set) and resumes the next runnable fiber of the
// current sweep, or the scheduler when the sweep is over.
__attribute__((noinline)) inline void yield() {
    Fiber* me = g.cur;
    if (_setjmp(me->ctx)) return;
    while (++g.pos < g.norder) {
        Fiber* n = &g.fibers[g.order[g.pos]];
        if (n->state == RUNNABLE) resume(n);
    }
    g.in_fiber = 0;
    _longjmp(g.sched, 1);
}

[[noreturn]] inline void fiber_main() {
    Fiber* f = g.cur;
    if (!_setjmp(f->ctx)) swapcontext(&g.boot_fiber, &g.boot_sched);
    for (;;) {
        f = g.cur;
        f->in_body = true;
        g.body(g.body_ctx);
        f = g.cur;
        f->in_body = false;
        f->state = DONE;
        yield();
    }
}

inline bool alloc_fibers(unsigned n) {
    if (!g.fibers) {
        g.fibers = static_cast<Fiber*>(calloc(kMaxThreads, sizeof(Fiber)));
        if (!g.fibers) return false;
    }
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (; g.nfibers < n; ++g.nfibers) {
        const size_t guard = (kGuardSize + page - 1) / page * page;
        char* base = static_cast<char*>(mmap(nullptr, kStackSize + guard, PROT_READ | PROT_WRITE,
                                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
        if (base == MAP_FAILED) return false;
        // Guard zone below the stack (stacks grow down): an overflow faults at once instead
        // of corrupting the neighbouring fiber's stack; the fault handler reports it.
        mprotect(base, guard, PROT_NONE);
        g.fibers[g.nfibers].stack = base + guard;
        g.fibers[g.nfibers].booted = false;
    }
    return true;
}

inline void boot(Fiber* f) {
    getcontext(&g.boot_fiber);
    g.boot_fiber.uc_stack.ss_sp = f->stack;
    g.boot_fiber.uc_stack.ss_size = kStackSize;
    g.boot_fiber.uc_link = nullptr;
    makecontext(&g.boot_fiber, fiber_main, 0);
    g.cur = f;
    swapcontext(&g.boot_sched, &g.boot_fiber);
    f->booted = true;
    f->in_body = false;
}

// Abandons the launch from inside a fiber (the error is already recorded).
[[noreturn]] inline void bail_out() {
    g.in_fiber = 0;
    _longjmp(g.sched, 1);
}

inline void trap(const char* file, int line) {
    const uint3 t = g.cur->tid;
    fail("thread (%u,%u,%u) called __trap() at %s:%d", t.x, t.y, t.z, file, line);
    bail_out();
}

// A fault inside a fiber is the kernel's own access (kernels call nothing that allocates), so
// it is reported as an error and the launch abandoned. Anything else goes to the handler
// that was installed before the launch, by re-raising with it restored.
inline void on_fault(int sig, siginfo_t* info, void* uctx) {
    if (g.in_fiber && g.cur) {
        const char* a = static_cast<const char*>(info->si_addr);
        const Fiber& f = *g.cur;
        const bool overflow = a < f.stack && a >= f.stack - kGuardSize;
        char last[256] = "";
        if (f.file) snprintf(last, sizeof last, "; its last scheduling point: %s at %s:%d",
                             f.op, f.file, f.line);
        if (overflow) {
            fail("thread (%u,%u,%u) overflowed its %zu KiB fiber stack%s", f.tid.x, f.tid.y,
                 f.tid.z, kStackSize / 1024, last);
        } else {
            fail("thread (%u,%u,%u) made an invalid memory access (%s at address %p)%s",
                 f.tid.x, f.tid.y, f.tid.z, sig == SIGBUS ? "SIGBUS" : "SIGSEGV", info->si_addr,
                 last);
        }
        bail_out();
    }
    (void)uctx;
    sigaction(SIGSEGV, &g.old_segv, nullptr);
    sigaction(SIGBUS, &g.old_bus, nullptr);
    // Returning re-executes the faulting instruction under the previous handler.
}

inline void install_fault_handler() {
    if (!g.alt_stack) g.alt_stack = static_cast<char*>(malloc(kAltStackSize));
    stack_t alt{};
    alt.ss_sp = g.alt_stack;
    alt.ss_size = kAltStackSize;
    sigaltstack(&alt, &g.old_alt);
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;  // NODEFER: we leave by longjmp
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g.old_segv);
    sigaction(SIGBUS, &sa, &g.old_bus);
}

inline void remove_fault_handler() {
    sigaction(SIGSEGV, &g.old_segv, nullptr);
    sigaction(SIGBUS, &g.old_bus, nullptr);
    sigaltstack(&g.old_alt, nullptr);
}

// -- scheduling points -----------------------------------------------------------------------

inline void wait_here(State s, const char* op, const char* file, int line) {
    Fiber* f = g.cur;
    f->state = s;
    f->op = op;
    f->file = file;
    f->line = line;
    yield();
}

inline int syncthreads(const char* file, int line, const char* op = "__syncthreads",
                       int kind = BAR_PLAIN, int pred = 0) {
    Fiber* f = g.cur;
    f->kind = kind;
    f->arg = pred != 0;
    asm volatile("" ::: "memory");
    wait_here(AT_BARRIER, op, file, line);
    asm volatile("" ::: "memory");
    return (int)g.cur->result;
}

inline void syncwarp(const char* file, int line, unsigned mask = 0xffffffffu) {
    g.cur->mask = mask;
    asm volatile("" ::: "memory");
    wait_here(AT_SYNCWARP, "__syncwarp", file, line);
    asm volatile("" ::: "memory");
}

inline unsigned vote(const char* op, const char* file, int line, int kind, unsigned mask,
                     int pred) {
    Fiber* f = g.cur;
    f->mask = mask;
    f->kind = kind;
    f->arg = pred != 0;
    f->width = 32;
    wait_here(AT_SHFL, op, file, line);
    return (unsigned)g.cur->result;
}

struct SyncwarpAt {
    const char* file;
    int line;
    void operator()(unsigned mask = 0xffffffffu) const { syncwarp(file, line, mask); }
};

template <class T>
inline T shfl(const char* op, const char* file, int line, int kind, unsigned mask, T var, int arg,
              int width) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "shuffles move 4- or 8-byte values");
    Fiber* f = g.cur;
    f->mask = mask;
    f->kind = kind;
    f->arg = arg;
    f->width = width;
    f->val = 0;
    memcpy(&f->val, &var, sizeof(T));
    wait_here(AT_SHFL, op, file, line);
    T r;
    memcpy(&r, &g.cur->result, sizeof(T));
    return r;
}

// Non-template overloads, like CUDA's, so arguments convert the way they do under NVRTC.
#define GL_EMU_SHFL_OVERLOADS(T)                                                              \
    inline T shfl_idx(const char* file, int line, unsigned mask, T var, int src,              \
                      int width = 32) {                                                       \
        return shfl<T>("__shfl_sync", file, line, SHFL_IDX, mask, var, src, width);           \
    }                                                                                         \
    inline T shfl_up(const char* file, int line, unsigned mask, T var, unsigned delta,        \
                     int width = 32) {                                                        \
        return shfl<T>("__shfl_up_sync", file, line, SHFL_UP, mask, var, (int)delta, width);  \
    }                                                                                         \
    inline T shfl_down(const char* file, int line, unsigned mask, T var, unsigned delta,      \
                       int width = 32) {                                                      \
        return shfl<T>("__shfl_down_sync", file, line, SHFL_DOWN, mask, var, (int)delta,      \
                       width);                                                                \
    }                                                                                         \
    inline T shfl_xor(const char* file, int line, unsigned mask, T var, int lane_mask,        \
                      int width = 32) {                                                       \
        return shfl<T>("__shfl_xor_sync", file, line, SHFL_XOR, mask, var, lane_mask, width); \
    }
GL_EMU_SHFL_OVERLOADS(int)
GL_EMU_SHFL_OVERLOADS(unsigned int)
GL_EMU_SHFL_OVERLOADS(long)
GL_EMU_SHFL_OVERLOADS(unsigned long)
GL_EMU_SHFL_OVERLOADS(long long)
GL_EMU_SHFL_OVERLOADS(unsigned long long)
GL_EMU_SHFL_OVERLOADS(float)
GL_EMU_SHFL_OVERLOADS(double)
#undef GL_EMU_SHFL_OVERLOADS

// -- resolution (scheduler side) -------------------------------------------------------------

inline const char* state_name(const Fiber& f) {
    switch (f.state) {
        case RUNNABLE: return "runnable";
        case DONE: return "exited";
        default: return f.op;
    }
}

inline void describe_lanes(char* out, size_t n, unsigned bits) {
    // "3" or "16-31" or "1,4-7" for a message.
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < 32 && len < n;) {
        if (!(bits >> i & 1u)) {
            ++i;
            continue;
        }
        int j = i;
        while (j + 1 < 32 && (bits >> (j + 1) & 1u)) ++j;
        int w = i == j ? snprintf(out + len, n - len, "%s%d", len ? "," : "", i)
                       : snprintf(out + len, n - len, "%s%d-%d", len ? "," : "", i, j);
        if (w < 0) break;
        len += (size_t)w;
        i = j + 1;
    }
}

inline bool same_site(const Fiber& a, const Fiber& b) {
    // Literals may or may not be merged; compare text when the pointers differ.
    return a.state == b.state && a.line == b.line &&
           (a.op == b.op || strcmp(a.op, b.op) == 0) &&
           (a.file == b.file || strcmp(a.file, b.file) == 0);
}

inline void where(char* out, size_t n, const Fiber& f) {
    if (f.state == DONE) {
        if (f.file) snprintf(out, n, "exited (its last scheduling point: %s at %s:%d)", f.op,
                             f.file, f.line);
        else snprintf(out, n, "exited");
    } else {
        snprintf(out, n, "waits at %s at %s:%d", f.op, f.file, f.line);
    }
}

// Returns true when the warp's shuffle or __syncwarp completed (its lanes can run again).
inline bool resolve_warp(unsigned w) {
    const unsigned first = w * 32, last = first + 32 < g.nthreads ? first + 32 : g.nthreads;
    const unsigned nlanes = last - first;
    const unsigned exists = nlanes == 32 ? 0xffffffffu : ((1u << nlanes) - 1u);
    Fiber* lead = nullptr;
    unsigned live = 0;
    for (unsigned i = first; i < last; ++i) {
        Fiber& f = g.fibers[i];
        if (f.state != DONE) live |= 1u << (i - first);
        if (!lead && (f.state == AT_SHFL || f.state == AT_SYNCWARP)) lead = &f;
    }
    if (!lead) return false;
    char a[512], b[512], lanes[160];
    for (unsigned i = first; i < last; ++i) {
        Fiber& f = g.fibers[i];
        if (f.state == DONE || same_site(f, *lead)) continue;
        where(b, sizeof b, f);
        fail("warp %u: lane %u waits at %s at %s:%d but lane %u %s; not all lanes of the warp "
             "reach the same %s", w, lead->lane, lead->op, lead->file, lead->line, f.lane, b,
             lead->op);
        return false;
    }
    for (unsigned i = first; i < last; ++i) {
        Fiber& f = g.fibers[i];
        if (f.state == DONE) continue;
        if (f.mask & ~exists) {
            describe_lanes(lanes, sizeof lanes, f.mask & ~exists);
            fail("%s at %s:%d: lane %u passes mask 0x%08x naming lanes %s, which do not exist "
                 "(the warp has %u lanes)", f.op, f.file, f.line, f.lane, f.mask, lanes, nlanes);
            return false;
        }
        if (f.mask & ~live) {
            const unsigned gone = f.mask & ~live;
            describe_lanes(lanes, sizeof lanes, gone);
            where(a, sizeof a, g.fibers[first + __builtin_ctz(gone)]);
            fail("%s at %s:%d: lane %u passes mask 0x%08x naming lanes %s, which exited "
                 "before reaching it (lane %d %s)", f.op, f.file, f.line, f.lane, f.mask, lanes,
                 __builtin_ctz(gone), a);
            return false;
        }
        if (live & ~f.mask) {
            describe_lanes(lanes, sizeof lanes, live & ~f.mask);
            fail("%s at %s:%d: lane %u passes mask 0x%08x, which leaves out active lanes %s "
                 "(the emulator requires the mask to name exactly the warp's active lanes)",
                 f.op, f.file, f.line, f.lane, f.mask, lanes);
            return false;
        }
        if (f.state == AT_SHFL && (f.width < 1 || f.width > 32 || (f.width & (f.width - 1)))) {
            fail("%s at %s:%d: lane %u passes width %d; it must be a power of two in [1, 32]",
                 f.op, f.file, f.line, f.lane, f.width);
            return false;
        }
    }
    if (lead->state == AT_SHFL && lead->kind >= VOTE_BALLOT) {
        unsigned ballot = 0;
        for (unsigned i = first; i < last; ++i) {
            if (g.fibers[i].state != DONE && g.fibers[i].arg) ballot |= 1u << (i - first);
        }
        for (unsigned i = first; i < last; ++i) {
            Fiber& f = g.fibers[i];
            if (f.state == DONE) continue;
            f.result = f.kind == VOTE_BALLOT ? ballot
                       : f.kind == VOTE_ANY  ? (ballot != 0)
                                             : (ballot == live);
        }
    } else if (lead->state == AT_SHFL) {
        for (unsigned i = first; i < last; ++i) {
            Fiber& f = g.fibers[i];
            if (f.state == DONE) continue;
            const int lane = (int)f.lane, wd = f.width;
            const int seg = lane & ~(wd - 1), max_lane = seg + wd - 1;
            int src = lane;
            switch (f.kind) {
                case SHFL_IDX: src = seg + (f.arg & (wd - 1)); break;
                case SHFL_UP: src = lane - f.arg < seg ? lane : lane - f.arg; break;
                case SHFL_DOWN: src = lane + f.arg > max_lane ? lane : lane + f.arg; break;
                case SHFL_XOR: src = lane ^ f.arg; src = src > max_lane ? lane : src; break;
            }
            if (src < 0 || src >= (int)nlanes) {
                fail("%s at %s:%d: lane %d reads lane %d, which does not exist (the warp has %u "
                     "lanes)", f.op, f.file, f.line, lane, src, nlanes);
                return false;
            }
            f.result = g.fibers[first + src].val;
        }
    }
    for (unsigned i = first; i < last; ++i) {
        if (g.fibers[i].state != DONE) g.fibers[i].state = RUNNABLE;
    }
    return true;
}

// Returns true when a block barrier was released; false when every thread has exited.
// Anything else that cannot progress is a misuse, reported through fail().
inline bool resolve_barrier() {
    Fiber* lead = nullptr;
    Fiber* exited = nullptr;
    for (unsigned i = 0; i < g.nthreads; ++i) {
        Fiber& f = g.fibers[i];
        if (f.state == DONE) {
            if (!exited) exited = &f;
        } else if (!lead) {
            lead = &f;
        }
    }
    if (!lead) return false;
    char a[512];
    for (unsigned i = 0; i < g.nthreads; ++i) {
        Fiber& f = g.fibers[i];
        if (f.state == DONE || same_site(f, *lead)) continue;
        where(a, sizeof a, f);
        fail("thread (%u,%u,%u) waits at %s at %s:%d but thread (%u,%u,%u) %s; no thread can "
             "proceed", lead->tid.x, lead->tid.y, lead->tid.z, lead->op, lead->file, lead->line,
             f.tid.x, f.tid.y, f.tid.z, a);
        return false;
    }
    if (lead->state != AT_BARRIER) {
        // Cannot happen: resolve_warp handles warp-level waits first. Kept as a net.
        fail("thread (%u,%u,%u) is stuck at %s at %s:%d", lead->tid.x, lead->tid.y, lead->tid.z,
             lead->op, lead->file, lead->line);
        return false;
    }
    if (exited && !g.allow_early_exit) {
        where(a, sizeof a, *exited);
        fail("thread (%u,%u,%u) returned while other threads of its block wait at %s at %s:%d "
             "(thread (%u,%u,%u) %s); hardware tolerates this but it is undefined behaviour "
             "(use allow_early_exit() to permit it)", exited->tid.x, exited->tid.y,
             exited->tid.z, lead->op, lead->file, lead->line, exited->tid.x, exited->tid.y,
             exited->tid.z, a);
        return false;
    }
    unsigned count = 0, waiting = 0;
    for (unsigned i = 0; i < g.nthreads; ++i) {
        if (g.fibers[i].state == AT_BARRIER) {
            ++waiting;
            count += g.fibers[i].arg ? 1u : 0u;
        }
    }
    const unsigned long long r = lead->kind == BAR_COUNT ? count
                                 : lead->kind == BAR_AND ? (count == waiting)
                                 : lead->kind == BAR_OR  ? (count != 0)
                                                         : 0;
    for (unsigned i = 0; i < g.nthreads; ++i) {
        if (g.fibers[i].state == AT_BARRIER) {
            g.fibers[i].state = RUNNABLE;
            g.fibers[i].result = r;
        }
    }
    return true;
}

inline void make_order(int order) {
    const unsigned n = g.nthreads;
    g.norder = (int)n;
    for (unsigned i = 0; i < n; ++i) g.order[i] = order == REVERSE ? n - 1 - i : i;
    if (order == SHUFFLE) {
        for (unsigned i = n - 1; i > 0 && n > 1; --i) {
            const unsigned j = (unsigned)(next_rand() % (i + 1));
            const unsigned t = g.order[i];
            g.order[i] = g.order[j];
            g.order[j] = t;
        }
    }
}

__attribute__((noinline)) inline void sweep() {
    g.pos = -1;
    if (_setjmp(g.sched)) {
        g.in_fiber = 0;
        return;
    }
    while (++g.pos < g.norder) {
        Fiber* n = &g.fibers[g.order[g.pos]];
        if (n->state == RUNNABLE) resume(n);
    }
}

inline void abandon() {
    // Fibers stopped inside the body cannot be unwound (no exceptions across contexts); their
    // stacks are simply rebuilt on next use. Kernels hold no resources that need releasing.
    for (unsigned i = 0; i < g.nthreads; ++i) {
        if (g.fibers[i].in_body) g.fibers[i].booted = false;
    }
}

inline void run_block(int order) {
    char* lo = __start_gl_emu_shared;
    char* hi = __stop_gl_emu_shared;
    if (lo && hi > lo) {
        // 0xFF bytes: NaN as float or double, -1 as an integer; reads of unwritten shared
        // memory then show up in results instead of passing as zeros.
        memset(lo, 0xFF, (size_t)(hi - lo));
    }
    const unsigned bx = g.block_dim.x, bxy = g.block_dim.x * g.block_dim.y;
    for (unsigned i = 0; i < g.nthreads; ++i) {
        Fiber& f = g.fibers[i];
        if (!f.booted) boot(&f);
        f.tid = uint3{i % bx, (i / bx) % g.block_dim.y, i / bxy};
        f.linear = i;
        f.lane = i & 31u;
        f.warp = i >> 5;
        f.state = RUNNABLE;
        f.op = nullptr;
        f.file = nullptr;
        f.line = 0;
    }
    const unsigned nwarps = (g.nthreads + 31) / 32;
    for (;;) {
        make_order(order);
        sweep();
        if (g.failed) return abandon();
        bool progress = false;
        for (unsigned w = 0; w < nwarps; ++w) {
            progress |= resolve_warp(w);
            if (g.failed) return abandon();
        }
        if (progress) continue;
        if (!resolve_barrier()) {
            if (g.failed) abandon();
            return;
        }
    }
}

inline int check_config(const LaunchCfg* c) {
    const unsigned long long gmax[3] = {2147483647ull, 65535ull, 65535ull};
    const unsigned bmax[3] = {1024u, 1024u, 64u};
    const char* axis = "xyz";
    for (int i = 0; i < 3; ++i) {
        if (c->grid[i] == 0 || c->block[i] == 0 || c->grid[i] > gmax[i] || c->block[i] > bmax[i]) {
            snprintf(g.msg, sizeof g.msg,
                     "kernel '%s': launch grid (%u,%u,%u) block (%u,%u,%u) is out of range on "
                     "axis %c (grid <= (2^31-1, 65535, 65535), block <= (1024, 1024, 64), "
                     "none zero)", g.kernel, c->grid[0], c->grid[1], c->grid[2], c->block[0],
                     c->block[1], c->block[2], axis[i]);
            return BAD_CONFIG;
        }
    }
    const unsigned long long n = (unsigned long long)c->block[0] * c->block[1] * c->block[2];
    if (n > kMaxThreads) {
        snprintf(g.msg, sizeof g.msg,
                 "kernel '%s': block (%u,%u,%u) has %llu threads; at most 1024 per block",
                 g.kernel, c->block[0], c->block[1], c->block[2], n);
        return BAD_CONFIG;
    }
    return OK;
}

inline void copy_msg(const LaunchCfg* cfg) {
    if (cfg->err && cfg->errlen) {
        strncpy(cfg->err, g.msg, cfg->errlen - 1);
        cfg->err[cfg->errlen - 1] = 0;
    }
}

// Block visiting order for the shuffle order: Fisher-Yates when the grid is small enough to
// hold a permutation, else a full-period LCG over the next power of two (cycle walking).
struct BlockOrder {
    unsigned long long n, i = 0, x = 0, mod = 1, mul = 0, inc = 0;
    int order;
    unsigned long long* perm = nullptr;
    BlockOrder(unsigned long long n_, int order_) : n(n_), order(order_) {
        if (order != SHUFFLE) return;
        if (n <= (1ull << 22)) {
            perm = static_cast<unsigned long long*>(malloc(n * sizeof *perm));
        }
        if (perm) {
            for (unsigned long long k = 0; k < n; ++k) perm[k] = k;
            for (unsigned long long k = n - 1; k > 0; --k) {
                const unsigned long long j = next_rand() % (k + 1), t = perm[k];
                perm[k] = perm[j];
                perm[j] = t;
            }
        } else {
            while (mod < n) mod <<= 1;
            mul = (next_rand() & ~3ull) | 1ull;  // a = 1 mod 4 and c odd: full period mod 2^k
            mul = ((mul - 1) & ~3ull) + 1;
            inc = next_rand() | 1ull;
            x = next_rand() & (mod - 1);
        }
    }
    ~BlockOrder() { free(perm); }
    unsigned long long next() {
        const unsigned long long k = i++;
        if (order == FORWARD) return k;
        if (order == REVERSE) return n - 1 - k;
        if (perm) return perm[k];
        do x = (mul * x + inc) & (mod - 1);
        while (x >= n);
        return x;
    }
};

inline int launch(const char* kernel, const LaunchCfg* cfg, void (*body)(void*), void* ctx) {
    g.kernel = kernel;
    g.failed = false;
    g.msg[0] = 0;
    int rc = check_config(cfg);
    if (rc != OK) {
        copy_msg(cfg);
        return rc;
    }
    g.block_dim = dim3(cfg->block[0], cfg->block[1], cfg->block[2]);
    g.grid_dim = dim3(cfg->grid[0], cfg->grid[1], cfg->grid[2]);
    g.nthreads = cfg->block[0] * cfg->block[1] * cfg->block[2];
    g.body = body;
    g.body_ctx = ctx;
    g.allow_early_exit = cfg->allow_early_exit != 0;
    g.rng = cfg->seed * 0x2545F4914F6CDD1Dull + 0x1234567ull;
    g.block_idx = uint3{0, 0, 0};
    if (!alloc_fibers(g.nthreads)) {
        snprintf(g.msg, sizeof g.msg, "kernel '%s': cannot allocate fiber stacks", kernel);
        copy_msg(cfg);
        return NO_MEMORY;
    }
    const unsigned long long gx = cfg->grid[0], gxy = gx * cfg->grid[1];
    const unsigned long long nblocks = gxy * cfg->grid[2];
    BlockOrder blocks(nblocks, cfg->order);
    install_fault_handler();
    for (unsigned long long k = 0; k < nblocks && !g.failed; ++k) {
        const unsigned long long b = blocks.next();
        g.block_idx = uint3{(unsigned)(b % gx), (unsigned)((b / gx) % cfg->grid[1]),
                            (unsigned)(b / gxy)};
        run_block(cfg->order);
    }
    remove_fault_handler();
    if (g.failed) {
        copy_msg(cfg);
        return MISUSE;
    }
    return OK;
}

// -- launchers and signatures, instantiated per entry point by build.py ---------------------

template <class T> struct CName { static std::string get() { return ""; } };
#define GL_EMU_CNAME(T)                                  \
    template <> struct CName<T> {                        \
        static std::string get() { return #T; }          \
    };
GL_EMU_CNAME(void)
GL_EMU_CNAME(bool)
GL_EMU_CNAME(char)
GL_EMU_CNAME(signed char)
GL_EMU_CNAME(unsigned char)
GL_EMU_CNAME(short)
GL_EMU_CNAME(unsigned short)
GL_EMU_CNAME(int)
GL_EMU_CNAME(unsigned int)
GL_EMU_CNAME(long)
GL_EMU_CNAME(unsigned long)
GL_EMU_CNAME(long long)
GL_EMU_CNAME(unsigned long long)
GL_EMU_CNAME(float)
GL_EMU_CNAME(double)
#undef GL_EMU_CNAME
template <class T> struct CName<const T> {
    static std::string get() { return "const " + CName<T>::get(); }
};
template <class T> struct CName<volatile T> {
    static std::string get() { return "volatile " + CName<T>::get(); }
};
template <class T> struct CName<const volatile T> {
    static std::string get() { return "const volatile " + CName<T>::get(); }
};
template <class T> struct CName<T*> {
    static std::string get() {
        const std::string p = CName<T>::get();
        return p.empty() ? "" : p + " *";
    }
};

template <class T> std::string param_name() {
    const std::string n = CName<T>::get();
    // Unknown types (structs by value, references) are spelled with their size so that
    // runtime.py can refuse them with a clear message.
    return n.empty() ? "?" + std::to_string(sizeof(T)) : n;
}

template <class... A> const char* signature(void (*)(A...)) {
    static const std::string s = [] {
        std::string out;
        ((out += (out.empty() ? "" : ";") + param_name<A>()), ...);
        return out;
    }();
    return s.c_str();
}

template <class... A, size_t... I>
int launch_with(const char* name, void (*fn)(A...), const LaunchCfg* cfg, void** args,
                std::index_sequence<I...>) {
    using Vals = std::tuple<std::decay_t<A>...>;
    Vals vals{*static_cast<std::decay_t<A>*>(args[I])...};
    struct Ctx {
        void (*fn)(A...);
        Vals* vals;
    } ctx{fn, &vals};
    auto body = [](void* p) {
        Ctx* c = static_cast<Ctx*>(p);
        std::apply(c->fn, *c->vals);
    };
    return launch(name, cfg, body, &ctx);
}

template <class... A>
int launch_kernel(const char* name, void (*fn)(A...), const LaunchCfg* cfg, void** args) {
    return launch_with(name, fn, cfg, args, std::index_sequence_for<A...>{});
}

}  // namespace gl_emu

#define GL_EMU_ENTRY(NAME)                                                                 \
    extern "C" __attribute__((visibility("default"))) int gl_emu_launch_##NAME(           \
        const ::gl_emu::LaunchCfg* cfg, void** args) {                                     \
        return ::gl_emu::launch_kernel(#NAME, &NAME, cfg, args);                           \
    }                                                                                      \
    extern "C" __attribute__((visibility("default"))) const char* gl_emu_signature_##NAME() { \
        return ::gl_emu::signature(&NAME);                                                 \
    }

// -- CUDA built-ins --------------------------------------------------------------------------

#define threadIdx (::gl_emu::thread_idx())
#define blockIdx (static_cast<const uint3&>(::gl_emu::g.block_idx))
#define blockDim (static_cast<const dim3&>(::gl_emu::g.block_dim))
#define gridDim (static_cast<const dim3&>(::gl_emu::g.grid_dim))
#define warpSize 32

#define __syncthreads() ((void)::gl_emu::syncthreads(__FILE__, __LINE__))
#define __syncthreads_count(p) \
    ::gl_emu::syncthreads(__FILE__, __LINE__, "__syncthreads_count", ::gl_emu::BAR_COUNT, (p))
#define __syncthreads_and(p) \
    ::gl_emu::syncthreads(__FILE__, __LINE__, "__syncthreads_and", ::gl_emu::BAR_AND, (p))
#define __syncthreads_or(p) \
    ::gl_emu::syncthreads(__FILE__, __LINE__, "__syncthreads_or", ::gl_emu::BAR_OR, (p))
#define __ballot_sync(mask, p) \
    ::gl_emu::vote("__ballot_sync", __FILE__, __LINE__, ::gl_emu::VOTE_BALLOT, (mask), (p))
#define __any_sync(mask, p) \
    ((int)::gl_emu::vote("__any_sync", __FILE__, __LINE__, ::gl_emu::VOTE_ANY, (mask), (p)))
#define __all_sync(mask, p) \
    ((int)::gl_emu::vote("__all_sync", __FILE__, __LINE__, ::gl_emu::VOTE_ALL, (mask), (p)))
#define __trap() ::gl_emu::trap(__FILE__, __LINE__)
// A call site object so that both __syncwarp() and __syncwarp(mask) work in ISO C++17.
#define __syncwarp(...) ::gl_emu::SyncwarpAt{__FILE__, __LINE__}(__VA_ARGS__)
#define __shfl_sync(...) ::gl_emu::shfl_idx(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::gl_emu::shfl_up(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::gl_emu::shfl_down(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::gl_emu::shfl_xor(__FILE__, __LINE__, __VA_ARGS__)
// No fiber ever sees another mid-instruction, so fences only need to stop the compiler.
#define __threadfence() asm volatile("" ::: "memory")
#define __threadfence_block() asm volatile("" ::: "memory")

// Atomics: fibers never interleave inside a function call, so plain read-modify-write is
// atomic here. They are not scheduling points (a switch would only cost time).
#define GL_EMU_ATOMIC(NAME, T, EXPR)                  \
    inline T NAME(T* address, T val) {                \
        const T old = *address;                       \
        *address = (EXPR);                            \
        return old;                                   \
    }
#define GL_EMU_ATOMIC_INTS(NAME, EXPR)                \
    GL_EMU_ATOMIC(NAME, int, EXPR)                    \
    GL_EMU_ATOMIC(NAME, unsigned int, EXPR)           \
    GL_EMU_ATOMIC(NAME, long long, EXPR)              \
    GL_EMU_ATOMIC(NAME, unsigned long long, EXPR)
GL_EMU_ATOMIC_INTS(atomicAdd, old + val)
GL_EMU_ATOMIC(atomicAdd, float, old + val)
GL_EMU_ATOMIC(atomicAdd, double, old + val)
GL_EMU_ATOMIC_INTS(atomicSub, old - val)
GL_EMU_ATOMIC_INTS(atomicMin, val < old ? val : old)
GL_EMU_ATOMIC_INTS(atomicMax, val > old ? val : old)
GL_EMU_ATOMIC_INTS(atomicAnd, old & val)
GL_EMU_ATOMIC_INTS(atomicOr, old | val)
GL_EMU_ATOMIC_INTS(atomicXor, old ^ val)
GL_EMU_ATOMIC_INTS(atomicExch, val)
GL_EMU_ATOMIC(atomicExch, float, val)
#undef GL_EMU_ATOMIC_INTS
#undef GL_EMU_ATOMIC
inline unsigned int atomicInc(unsigned int* address, unsigned int val) {
    const unsigned int old = *address;
    *address = old >= val ? 0u : old + 1u;
    return old;
}
inline unsigned int atomicDec(unsigned int* address, unsigned int val) {
    const unsigned int old = *address;
    *address = (old == 0u || old > val) ? val : old - 1u;
    return old;
}
#define GL_EMU_CAS(T)                                                  \
    inline T atomicCAS(T* address, T compare, T val) {                 \
        const T old = *address;                                        \
        if (old == compare) *address = val;                            \
        return old;                                                    \
    }
GL_EMU_CAS(int)
GL_EMU_CAS(unsigned int)
GL_EMU_CAS(unsigned long long)
GL_EMU_CAS(unsigned short)
#undef GL_EMU_CAS

// Integer intrinsics.
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline long long __mul64hi(long long a, long long b) {
    return (long long)(((__int128)a * b) >> 64);
}
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned int __brev(unsigned int x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
    x = ((x >> 8) & 0x00FF00FFu) | ((x & 0x00FF00FFu) << 8);
    return (x >> 16) | (x << 16);
}

// Bit casts.
#define GL_EMU_BITCAST(NAME, FROM, TO)       \
    inline TO NAME(FROM x) {                 \
        TO y;                                \
        static_assert(sizeof x == sizeof y); \
        memcpy(&y, &x, sizeof y);            \
        return y;                            \
    }
GL_EMU_BITCAST(__int_as_float, int, float)
GL_EMU_BITCAST(__uint_as_float, unsigned int, float)
GL_EMU_BITCAST(__float_as_int, float, int)
GL_EMU_BITCAST(__float_as_uint, float, unsigned int)
GL_EMU_BITCAST(__longlong_as_double, long long, double)
GL_EMU_BITCAST(__double_as_longlong, double, long long)
#undef GL_EMU_BITCAST

// min/max as CUDA's math headers declare them (same-type and the mixed signed/unsigned and
// float/double pairs), in the global namespace where NVRTC has them.
#define GL_EMU_MINMAX(R, A, B)                                        \
    inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; }      \
    inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
GL_EMU_MINMAX(int, int, int)
GL_EMU_MINMAX(unsigned int, unsigned int, unsigned int)
GL_EMU_MINMAX(unsigned int, int, unsigned int)
GL_EMU_MINMAX(unsigned int, unsigned int, int)
GL_EMU_MINMAX(long, long, long)
GL_EMU_MINMAX(unsigned long, unsigned long, unsigned long)
GL_EMU_MINMAX(long long, long long, long long)
GL_EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
GL_EMU_MINMAX(unsigned long long, long long, unsigned long long)
GL_EMU_MINMAX(unsigned long long, unsigned long long, long long)
#undef GL_EMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin((double)a, b); }
inline double max(float a, double b) { return fmax((double)a, b); }
inline double min(double a, float b) { return fmin(a, (double)b); }
inline double max(double a, float b) { return fmax(a, (double)b); }

// Single-precision helpers NVRTC provides; exact here (CUDA's fast ones are approximate, so
// kernels that must match NumPy bit for bit should not use them anyway).
inline float __fdividef(float a, float b) { return a / b; }
// glibc declares its own __expf/__logf, so these are macros rather than overloads.
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __powf(x, y) powf(x, y)
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

#endif  // GL_EMU_DISCOVER
#endif  // GL_CUDA_EMU_H
