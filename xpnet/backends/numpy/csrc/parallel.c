/* The compiled kernels' worker threads: a fork-safe pthread pool with a cheap hand-off.
 *
 * Why not the Python ThreadPoolExecutor the NumPy kernels use for large jobs: handing a part to it
 * (submit, wake a sleeping thread, collect the future) costs 20-150 us on a 2-core VM, more than a
 * small convolution takes. Here a job's parts are claimed from one counter by whoever comes first:
 * the caller, which starts claiming at once, and the workers, which spin on a generation counter
 * for `spin` microseconds after their last job (xp_threads_configure) before sleeping on a condition
 * variable. So a running worker takes a part within a microsecond, and a worker that is asleep or
 * not scheduled (another process on the core) costs nothing: the caller runs that part itself. The
 * caller waits only for parts a worker has already started.
 *
 * The claim word holds the job's sequence number (high 32 bits) and the next part (low 32 bits); a
 * closed word (no job) has next = CLOSED. A job's fields are written only while the word is closed,
 * and a part is taken by a compare-and-swap on an open word, so a worker that wakes late finds the
 * word changed and takes nothing from a job that is over.
 *
 * One job at a time: a second caller (another Python thread, or a part calling a parallel kernel)
 * runs its parts itself, serially. A forked child starts with no workers and makes them on its first
 * job (pthread_atfork). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>

#include "xpnet_kernels.h"
#include "xpnet_parallel.h"

#define XP_MAX_THREADS 64
#define CLOSED 0xFFFFFFFFu

#if defined(__x86_64__) || defined(__i386__)
#define XP_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define XP_RELAX() __asm__ __volatile__("yield")
#else
#define XP_RELAX() ((void)0)
#endif

static struct {
    xp_part_fn fn;
    void *ctx;
    ptrdiff_t n;
    int parts;
} job;
static uint64_t claim = CLOSED;        /* (sequence << 32) | next part, or | CLOSED */
static int done;                       /* parts finished in the open job */
static unsigned long generation;       /* bumped at every job: wakes the workers */
static int sleeping;                   /* workers asleep on `wake` */
static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int wanted = 1;   /* threads a job may use, the caller's included */
static int started = 0;  /* workers running */
static long spin_ns = 50000;
static int atfork_set = 0;

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Claims and runs parts of the open job until none is left; returns how many it ran. */
static int run_claimed_parts(void) {
    int ran = 0;
    for (;;) {
        uint64_t c = __atomic_load_n(&claim, __ATOMIC_ACQUIRE);
        uint32_t next = (uint32_t)c;
        if (next == CLOSED || (int)next >= __atomic_load_n(&job.parts, __ATOMIC_RELAXED))
            return ran;
        if (!__atomic_compare_exchange_n(&claim, &c, c + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            continue;
        /* part `next` is ours: the job cannot close (or change) before it is done */
        ptrdiff_t n0 = job.n * next / job.parts, n1 = job.n * (next + 1) / job.parts;
        if (n1 > n0)
            job.fn(job.ctx, n0, n1, (int)next);
        __atomic_add_fetch(&done, 1, __ATOMIC_RELEASE);
        ran++;
    }
}

static void *worker(void *arg) {
    unsigned long seen = (unsigned long)(uintptr_t)arg;
    for (;;) {
        unsigned long g = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
        if (g == seen) {
            long deadline = now_ns() + __atomic_load_n(&spin_ns, __ATOMIC_RELAXED);
            for (int tries = 1; (g = __atomic_load_n(&generation, __ATOMIC_ACQUIRE)) == seen; tries++) {
                XP_RELAX();
                if ((tries & 63) == 0 && now_ns() > deadline)
                    break;
            }
        }
        if (g == seen) {
            pthread_mutex_lock(&sleep_lock);
            __atomic_add_fetch(&sleeping, 1, __ATOMIC_SEQ_CST);
            while ((g = __atomic_load_n(&generation, __ATOMIC_SEQ_CST)) == seen)
                pthread_cond_wait(&wake, &sleep_lock);
            __atomic_sub_fetch(&sleeping, 1, __ATOMIC_SEQ_CST);
            pthread_mutex_unlock(&sleep_lock);
        }
        seen = g;
        run_claimed_parts();
    }
    return NULL;
}

static void after_fork_child(void) {
    /* the child has only the forking thread: no workers, fresh locks, no job */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t fresh_cond = PTHREAD_COND_INITIALIZER;
    run_lock = fresh;
    sleep_lock = fresh;
    wake = fresh_cond;
    started = 0;
    sleeping = 0;
    claim = CLOSED;
}

/* Called with run_lock held: start workers up to wanted - 1 (fewer if the system refuses). */
static void start_workers(void) {
    if (!atfork_set) {
        pthread_atfork(NULL, NULL, after_fork_child);
        atfork_set = 1;
    }
    while (started < wanted - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        /* the worker starts from the current generation: the next job is the first it sees */
        int failed = pthread_create(&thread, &attr, worker, (void *)(uintptr_t)generation);
        pthread_attr_destroy(&attr);
        if (failed)
            break;
        started++;
    }
}

void xp_threads_configure(int threads, int spin_us) {
    pthread_mutex_lock(&run_lock);
    wanted = threads < 1 ? 1 : threads > XP_MAX_THREADS ? XP_MAX_THREADS : threads;
    __atomic_store_n(&spin_ns, spin_us < 0 ? 0L : (long)spin_us * 1000L, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&run_lock);
}

void xp_run_parts(xp_part_fn fn, void *ctx, ptrdiff_t n, int parts) {
    if (parts < 1)
        parts = 1;
    if (parts == 1 || pthread_mutex_trylock(&run_lock) != 0) {
        for (int p = 0; p < parts; p++) {
            ptrdiff_t n0 = n * p / parts, n1 = n * (p + 1) / parts;
            if (n1 > n0)
                fn(ctx, n0, n1, p);
        }
        return;
    }
    if (started < wanted - 1)
        start_workers();
    /* the word is closed: write the job, then open it under the next sequence number */
    job.fn = fn;
    job.ctx = ctx;
    job.n = n;
    __atomic_store_n(&job.parts, parts, __ATOMIC_RELAXED);
    __atomic_store_n(&done, 0, __ATOMIC_RELAXED);
    uint64_t sequence = (__atomic_load_n(&claim, __ATOMIC_RELAXED) >> 32) + 1;
    __atomic_store_n(&claim, sequence << 32, __ATOMIC_RELEASE);
    __atomic_add_fetch(&generation, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&sleeping, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&sleep_lock);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&sleep_lock);
    }
    run_claimed_parts();
    /* every part is claimed: wait for the ones that workers are running */
    for (long tries = 1; __atomic_load_n(&done, __ATOMIC_ACQUIRE) < parts; tries++) {
        XP_RELAX();
        if ((tries & 1023) == 0)
            sched_yield();
    }
    __atomic_store_n(&claim, (sequence << 32) | CLOSED, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&run_lock);
}
