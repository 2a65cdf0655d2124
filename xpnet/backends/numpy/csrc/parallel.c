/* The compiled kernels' worker threads: a fork-safe pthread pool with a cheap hand-off.
 *
 * Why not the Python ThreadPoolExecutor the NumPy kernels use for large jobs: handing a part to it
 * (submit, wake a sleeping thread, collect the future) costs 20-150 us on a 2-core VM, more than a
 * small convolution takes. Here each worker has its own mailbox (a generation counter and a job
 * pointer on its own cache line); after a part it spins on that counter for `spin` microseconds
 * (xp_threads_configure) before sleeping on a condition variable, so the parts of a training step's
 * back-to-back kernels reach a running thread in well under a microsecond, and an idle process stops
 * costing CPU within that time. The caller runs part 0 itself and spins until the others are done.
 *
 * One job at a time: a second caller (another Python thread, or a part calling a parallel kernel)
 * runs its parts itself, serially. A forked child starts with no workers and makes them on its first
 * job (pthread_atfork). */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <sched.h>
#include <time.h>

#include "xpnet_kernels.h"
#include "xpnet_parallel.h"

#define XP_MAX_THREADS 64

#if defined(__x86_64__) || defined(__i386__)
#define XP_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define XP_RELAX() __asm__ __volatile__("yield")
#else
#define XP_RELAX() ((void)0)
#endif

struct job {
    xp_part_fn fn;
    void *ctx;
    ptrdiff_t n;
    int parts;
    int pending; /* parts given to workers and not yet done */
};

struct mailbox {
    unsigned long generation; /* bumped by the caller when `job` holds a new part for this worker */
    struct job *job;
    unsigned long first; /* the generation when the worker was made: a part given before it ran is still seen */
    int part;
    int sleeping;
    char pad[64];
} __attribute__((aligned(64)));

static struct mailbox boxes[XP_MAX_THREADS];
static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int wanted = 1;   /* threads a job may use, the caller's included */
static int started = 0;  /* workers running: boxes[1 .. started] */
static long spin_ns = 50000;
static int atfork_set = 0;

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void run_part(struct job *job, int part) {
    ptrdiff_t n0 = job->n * part / job->parts, n1 = job->n * (part + 1) / job->parts;
    if (n1 > n0)
        job->fn(job->ctx, n0, n1, part);
}

static void *worker(void *arg) {
    struct mailbox *box = arg;
    unsigned long seen = box->first;
    for (;;) {
        unsigned long g = __atomic_load_n(&box->generation, __ATOMIC_ACQUIRE);
        if (g == seen) {
            long deadline = now_ns() + __atomic_load_n(&spin_ns, __ATOMIC_RELAXED);
            for (int tries = 1; (g = __atomic_load_n(&box->generation, __ATOMIC_ACQUIRE)) == seen; tries++) {
                XP_RELAX();
                if ((tries & 63) == 0 && now_ns() > deadline)
                    break;
            }
        }
        if (g == seen) {
            pthread_mutex_lock(&sleep_lock);
            __atomic_store_n(&box->sleeping, 1, __ATOMIC_SEQ_CST);
            while ((g = __atomic_load_n(&box->generation, __ATOMIC_SEQ_CST)) == seen)
                pthread_cond_wait(&wake, &sleep_lock);
            __atomic_store_n(&box->sleeping, 0, __ATOMIC_SEQ_CST);
            pthread_mutex_unlock(&sleep_lock);
        }
        seen = g;
        struct job *job = box->job;
        run_part(job, box->part);
        __atomic_sub_fetch(&job->pending, 1, __ATOMIC_ACQ_REL);
    }
    return NULL;
}

static void after_fork_child(void) {
    /* the child has only the forking thread: no workers, fresh locks */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t fresh_cond = PTHREAD_COND_INITIALIZER;
    run_lock = fresh;
    sleep_lock = fresh;
    wake = fresh_cond;
    started = 0;
    for (int i = 0; i < XP_MAX_THREADS; i++) {
        boxes[i].generation = 0;
        boxes[i].sleeping = 0;
        boxes[i].job = NULL;
    }
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
        boxes[started + 1].first = boxes[started + 1].generation;
        int failed = pthread_create(&thread, &attr, worker, &boxes[started + 1]);
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
    struct job job = {fn, ctx, n, parts < 1 ? 1 : parts, 0};
    if (job.parts == 1 || pthread_mutex_trylock(&run_lock) != 0) {
        for (int p = 0; p < job.parts; p++)
            run_part(&job, p);
        return;
    }
    if (started < wanted - 1)
        start_workers();
    int given = job.parts - 1 < started ? job.parts - 1 : started;
    job.pending = given;
    int asleep = 0;
    for (int w = 1; w <= given; w++) {
        boxes[w].job = &job;
        boxes[w].part = w;
        __atomic_add_fetch(&boxes[w].generation, 1, __ATOMIC_SEQ_CST);
        asleep |= __atomic_load_n(&boxes[w].sleeping, __ATOMIC_SEQ_CST);
    }
    if (asleep) {
        pthread_mutex_lock(&sleep_lock);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&sleep_lock);
    }
    run_part(&job, 0);
    for (int p = given + 1; p < job.parts; p++) /* parts beyond the workers the system gave */
        run_part(&job, p);
    for (long tries = 1; __atomic_load_n(&job.pending, __ATOMIC_ACQUIRE) > 0; tries++) {
        XP_RELAX();
        if ((tries & 1023) == 0)
            sched_yield();
    }
    pthread_mutex_unlock(&run_lock);
}
