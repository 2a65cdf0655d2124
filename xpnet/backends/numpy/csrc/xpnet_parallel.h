/* The compiled kernels' own worker threads (parallel.c), for use inside the library only: nothing here
 * is exported to Python (the loader reads xpnet_kernels.h alone; xp_threads_configure there sets the
 * pool up). */
#ifndef XPNET_PARALLEL_H
#define XPNET_PARALLEL_H

#include <stddef.h>

/* One part of a job: items [n0, n1) of n, `part` in [0, parts) (which scratch slice to use). */
typedef void (*xp_part_fn)(void *ctx, ptrdiff_t n0, ptrdiff_t n1, int part);

/* Runs fn over [0, n) cut into `parts` contiguous parts, part p covering [n p / parts, n (p + 1) / parts):
 * part 0 on the calling thread, the others on the pool's threads (all on the caller when the pool is
 * busy with another caller's job, or is called from inside a part). Returns when every part is done. */
__attribute__((visibility("hidden"))) void xp_run_parts(xp_part_fn fn, void *ctx, ptrdiff_t n, int parts);

#endif /* XPNET_PARALLEL_H */
