/* A team of threads for one training step: the calling thread plus parts - 1 helpers.
 *
 * cbptt_team_run(parts, task, ctx) runs task(ctx, part, parts) for part = 0 .. parts - 1 at
 * once (part 0 in the caller) and returns when all have finished; inside the task the parts
 * meet at cbptt_team_barrier(parts). Tasks split their work statically by part, so a result
 * depends on the number of parts only, never on timing.
 *
 * One team serves the process: a second caller that finds it busy (another Python thread in
 * another trainer) runs its task alone, as part 0 of 1 (its results then agree with a team
 * run's to rounding: see docs/DEVELOPMENT.md, "The team of threads"). Helpers are started on
 * first use and live until the process ends.
 *
 * Waits spin, then sleep (docs/DEVELOPMENT.md, "How the team waits"). Between jobs a helper
 * spins for the job spin (CBPTT_TEAM_JOB_SPIN_NS: the gap between two training steps is
 * shorter; an eighth of it after a wait that outlasted it) and then sleeps on a condition
 * variable. A part at a barrier spins for the barrier
 * spin (CBPTT_TEAM_BARRIER_SPIN_NS: a quiet machine's barrier waits are shorter; an eighth of
 * it after a wait that outlasted it) and then sleeps
 * on the barrier's generation word (a futex on Linux, a condition variable elsewhere), so
 * that a part whose partner lost its core to another process gives its own core up instead
 * of spinning through its time slice. In both, the sleepers counter and the word waited on
 * are sequentially consistent atomics, so a wake-up is never missed. Both spins can be set
 * (cbptt_team_set_spin; 0: sleep at once) and every sleep is counted (cbptt_team_sleeps):
 * they change timing only, never a result. After fork() the
 * child starts a fresh team. Helpers block every signal (Python handles them in the main
 * thread) and ask for one BLAS thread at the start of each task (blas_threads.h; the caller
 * holds BLAS at one thread for the whole job). Without pthreads (Windows builds) every run is
 * part 0 of 1. */
#ifndef CBPTT_TEAM_H
#define CBPTT_TEAM_H

#include "blas_threads.h"

typedef void (*cbptt_team_task)(void *ctx, int part, int parts);

#define CBPTT_TEAM_MAX 16

#if defined(_WIN32)

static void cbptt_team_barrier(int parts) { (void)parts; }
static int cbptt_team_run(int parts, cbptt_team_task task, void *ctx)
{
    (void)parts;
    task(ctx, 0, 1);
    return 1;
}
static double cbptt_team_round_trip_ns(long rounds)
{
    (void)rounds;
    return -1;
}
static int cbptt_team_late_barrier(int parts, long delay_ns, int until_sleep)
{
    (void)parts;
    (void)delay_ns;
    (void)until_sleep;
    return 1;
}
static void cbptt_team_set_spin(long barrier_ns, long job_ns) { (void)barrier_ns; (void)job_ns; }
static void cbptt_team_get_spin(long *barrier_ns, long *job_ns) { *barrier_ns = *job_ns = 0; }
static void cbptt_team_sleeps(unsigned long long *barrier, unsigned long long *job)
{
    *barrier = *job = 0;
}

#else

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* Linked against glibc >= 2.34, these five functions bind to versions that older glibc lacks,
 * which would make a wheel need glibc 2.34. glibc exports each of them under its original
 * version too (the same code), so bind to that: the wheel stays manylinux2014 (glibc 2.17). */
#if defined(__GLIBC__) && (defined(__x86_64__) || defined(__aarch64__))
#if defined(__x86_64__)
#define CBPTT_GLIBC_BASE "GLIBC_2.2.5"
#else
#define CBPTT_GLIBC_BASE "GLIBC_2.17"
#endif
__asm__(".symver pthread_create,pthread_create@" CBPTT_GLIBC_BASE);
__asm__(".symver pthread_once,pthread_once@" CBPTT_GLIBC_BASE);
__asm__(".symver pthread_mutex_trylock,pthread_mutex_trylock@" CBPTT_GLIBC_BASE);
__asm__(".symver pthread_attr_setstacksize,pthread_attr_setstacksize@" CBPTT_GLIBC_BASE);
__asm__(".symver pthread_sigmask,pthread_sigmask@" CBPTT_GLIBC_BASE);
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CBPTT_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define CBPTT_PAUSE() __asm__ __volatile__("yield")
#else
#define CBPTT_PAUSE() ((void)0)
#endif

#define CBPTT_TEAM_JOB_SPIN_NS 200000L    /* a helper's busy wait for the next job */
#define CBPTT_TEAM_BARRIER_SPIN_NS 200000L /* a part's busy wait at a barrier, at most */
#define CBPTT_TEAM_SPIN_SHORTER 8           /* after a wait longer than its spin: spin / 8 */

static struct {
    pthread_mutex_t run_lock;             /* held by the caller of a running job */
    pthread_mutex_t sleep_lock;
    pthread_cond_t wake;
    atomic_ullong job;                    /* generation << 8 | parts of the latest job */
    atomic_int sleepers;                  /* helpers asleep or about to sleep */
    atomic_uint barrier_count;
    atomic_uint barrier_generation;       /* the word a barrier's sleepers wait on */
    atomic_int barrier_sleepers;          /* parts asleep at a barrier, or about to sleep */
    atomic_long barrier_spin_ns;          /* the spins: cbptt_team_set_spin */
    atomic_long job_spin_ns;
    atomic_ullong barrier_sleeps;         /* sleeps since the process started (or forked) */
    atomic_ullong job_sleeps;
    cbptt_team_task task;                 /* the job's task and context: written before */
    void *ctx;                            /* the job word, read after it */
    int helpers;                          /* helpers started in this process */
} cbptt_team = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
               .barrier_spin_ns = CBPTT_TEAM_BARRIER_SPIN_NS, .job_spin_ns = CBPTT_TEAM_JOB_SPIN_NS};

static long cbptt_team_elapsed_ns(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000000000L + (now.tv_nsec - start->tv_nsec);
}

/* Sleep while *word == value, and wake every such sleeper: a futex on Linux (private to the
 * process), a mutex and condition variable elsewhere. The waker changes the word before it
 * wakes, the sleeper checks it under the futex (or the mutex), so no wake-up is lost. */
#if defined(__linux__)
static void cbptt_word_sleep(atomic_uint *word, unsigned value)
{
    while (atomic_load(word) == value)
        syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}

static void cbptt_word_wake(atomic_uint *word)
{
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}
#else
static pthread_mutex_t cbptt_word_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cbptt_word_changed = PTHREAD_COND_INITIALIZER;

static void cbptt_word_sleep(atomic_uint *word, unsigned value)
{
    pthread_mutex_lock(&cbptt_word_lock);
    while (atomic_load(word) == value)
        pthread_cond_wait(&cbptt_word_changed, &cbptt_word_lock);
    pthread_mutex_unlock(&cbptt_word_lock);
}

static void cbptt_word_wake(atomic_uint *word)
{
    (void)word;
    pthread_mutex_lock(&cbptt_word_lock);
    pthread_cond_broadcast(&cbptt_word_changed);
    pthread_mutex_unlock(&cbptt_word_lock);
}
#endif

/* Whether this thread's last wait at a barrier outlasted the whole barrier spin. */
static _Thread_local int cbptt_barrier_long;

/* All parts meet: the last to arrive opens the next generation and wakes any sleeper; the
 * others spin (the clock read every 64 pauses), then sleep. The spin is the barrier spin, or
 * an eighth of it after a wait that lasted longer than the whole spin, until a wait is shorter
 * again: on a quiet machine the parts meet within the spin (a wait that slept but would have
 * ended within the whole spin keeps it whole), and where the partners lose their cores to
 * other work most waits last a time slice and each costs only the short spin. */
static void cbptt_team_barrier(int parts)
{
    unsigned generation;
    unsigned long spins = 0;
    long limit, whole;
    struct timespec began;
    if (parts <= 1)
        return;
    generation = atomic_load(&cbptt_team.barrier_generation);
    if (atomic_fetch_add(&cbptt_team.barrier_count, 1) == (unsigned)parts - 1) {
        atomic_store(&cbptt_team.barrier_count, 0);
        atomic_fetch_add(&cbptt_team.barrier_generation, 1);
        if (atomic_load(&cbptt_team.barrier_sleepers) > 0)
            cbptt_word_wake(&cbptt_team.barrier_generation);
        return;
    }
    limit = atomic_load_explicit(&cbptt_team.barrier_spin_ns, memory_order_relaxed);
    whole = limit;
    if (cbptt_barrier_long)
        limit /= CBPTT_TEAM_SPIN_SHORTER;
    clock_gettime(CLOCK_MONOTONIC, &began);
    for (; atomic_load(&cbptt_team.barrier_generation) == generation; spins++) {
        if ((spins & 63) == 0 && cbptt_team_elapsed_ns(&began) >= limit) {
            atomic_fetch_add(&cbptt_team.barrier_sleepers, 1);
            if (atomic_load(&cbptt_team.barrier_generation) == generation) {
                atomic_fetch_add_explicit(&cbptt_team.barrier_sleeps, 1, memory_order_relaxed);
                cbptt_word_sleep(&cbptt_team.barrier_generation, generation);
            }
            atomic_fetch_sub(&cbptt_team.barrier_sleepers, 1);
            cbptt_barrier_long = cbptt_team_elapsed_ns(&began) >= whole;
            return;
        }
        CBPTT_PAUSE();
    }
    cbptt_barrier_long = 0;
}

/* Set the spins in ns (a negative value keeps one); 0 sleeps at once. */
static void cbptt_team_set_spin(long barrier_ns, long job_ns)
{
    if (barrier_ns >= 0)
        atomic_store(&cbptt_team.barrier_spin_ns, barrier_ns);
    if (job_ns >= 0)
        atomic_store(&cbptt_team.job_spin_ns, job_ns);
}

static void cbptt_team_get_spin(long *barrier_ns, long *job_ns)
{
    *barrier_ns = atomic_load(&cbptt_team.barrier_spin_ns);
    *job_ns = atomic_load(&cbptt_team.job_spin_ns);
}

/* How many times a part slept at a barrier, and a helper between jobs. */
static void cbptt_team_sleeps(unsigned long long *barrier, unsigned long long *job)
{
    *barrier = atomic_load(&cbptt_team.barrier_sleeps);
    *job = atomic_load(&cbptt_team.job_sleeps);
}

typedef struct {
    int part;
    unsigned long long seen;   /* the job word when the helper was started */
} cbptt_helper_start;

static cbptt_helper_start cbptt_helper_starts[CBPTT_TEAM_MAX];

static void *cbptt_team_helper(void *arg)
{
    const cbptt_helper_start *start = (const cbptt_helper_start *)arg;
    int part = start->part, parts;
    unsigned long long seen = start->seen, job;
    unsigned long spins;
    long limit, whole;
    int long_wait = 0;         /* the last wait outlasted the whole job spin: spin an eighth */
    struct timespec began;

    for (;;) {
        spins = 0;
        whole = limit = atomic_load_explicit(&cbptt_team.job_spin_ns, memory_order_relaxed);
        if (long_wait)
            limit /= CBPTT_TEAM_SPIN_SHORTER;
        long_wait = 0;
        clock_gettime(CLOCK_MONOTONIC, &began);
        for (; (job = atomic_load(&cbptt_team.job)) == seen; spins++) {
            if ((spins & 63) == 0 && cbptt_team_elapsed_ns(&began) >= limit) {
                pthread_mutex_lock(&cbptt_team.sleep_lock);
                atomic_fetch_add(&cbptt_team.sleepers, 1);
                if (atomic_load(&cbptt_team.job) == seen)
                    atomic_fetch_add_explicit(&cbptt_team.job_sleeps, 1, memory_order_relaxed);
                while ((job = atomic_load(&cbptt_team.job)) == seen)
                    pthread_cond_wait(&cbptt_team.wake, &cbptt_team.sleep_lock);
                atomic_fetch_sub(&cbptt_team.sleepers, 1);
                pthread_mutex_unlock(&cbptt_team.sleep_lock);
                long_wait = cbptt_team_elapsed_ns(&began) >= whole;
                break;
            }
            CBPTT_PAUSE();
        }
        seen = job;
        parts = (int)(job & 0xff);
        if (part < parts) {
            cbptt_blas_one_here();
            cbptt_team.task(cbptt_team.ctx, part, parts);
            cbptt_team_barrier(parts);   /* the caller returns after this */
        }
    }
    return NULL;
}

/* Start helpers up to parts - 1; returns how many parts can run. Holds run_lock. */
static int cbptt_team_grow(int parts)
{
    pthread_attr_t attributes;
    pthread_t thread;
    sigset_t all, previous;
    int ok = 1;
    if (cbptt_team.helpers >= parts - 1)
        return parts;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);   /* inherited by the helpers */
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attributes, 4 * 1024 * 1024);
    while (ok && cbptt_team.helpers < parts - 1) {
        cbptt_helper_start *start = &cbptt_helper_starts[cbptt_team.helpers + 1];
        start->part = cbptt_team.helpers + 1;
        start->seen = atomic_load(&cbptt_team.job);
        ok = pthread_create(&thread, &attributes, cbptt_team_helper, start) == 0;
        if (ok)
            cbptt_team.helpers++;
    }
    pthread_attr_destroy(&attributes);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    return cbptt_team.helpers + 1 < parts ? cbptt_team.helpers + 1 : parts;
}

/* In a child after fork() the parent's helpers do not exist, and a lock may have been held by
 * a thread that is gone: start afresh. */
static void cbptt_team_after_fork(void)
{
    pthread_mutex_init(&cbptt_team.run_lock, NULL);
    pthread_mutex_init(&cbptt_team.sleep_lock, NULL);
    pthread_cond_init(&cbptt_team.wake, NULL);
    atomic_store(&cbptt_team.sleepers, 0);
    atomic_store(&cbptt_team.barrier_count, 0);
    atomic_store(&cbptt_team.barrier_sleepers, 0);
    atomic_store(&cbptt_team.barrier_sleeps, 0);
    atomic_store(&cbptt_team.job_sleeps, 0);
    cbptt_team.helpers = 0;
}

static pthread_once_t cbptt_team_once = PTHREAD_ONCE_INIT;

static void cbptt_team_register_fork(void)
{
    pthread_atfork(NULL, NULL, cbptt_team_after_fork);
}

static int cbptt_team_run(int parts, cbptt_team_task task, void *ctx)
{
    unsigned long long job;
    if (parts > CBPTT_TEAM_MAX)
        parts = CBPTT_TEAM_MAX;
    pthread_once(&cbptt_team_once, cbptt_team_register_fork);
    if (parts <= 1 || pthread_mutex_trylock(&cbptt_team.run_lock) != 0) {
        task(ctx, 0, 1);
        return 1;
    }
    parts = cbptt_team_grow(parts);
    if (parts <= 1) {
        pthread_mutex_unlock(&cbptt_team.run_lock);
        task(ctx, 0, 1);
        return 1;
    }
    cbptt_team.task = task;
    cbptt_team.ctx = ctx;
    job = atomic_load(&cbptt_team.job);
    atomic_store(&cbptt_team.job, (((job >> 8) + 1) << 8) | (unsigned long long)parts);
    if (atomic_load(&cbptt_team.sleepers) > 0) {
        pthread_mutex_lock(&cbptt_team.sleep_lock);
        pthread_cond_broadcast(&cbptt_team.wake);
        pthread_mutex_unlock(&cbptt_team.sleep_lock);
    }
    task(ctx, 0, parts);
    cbptt_team_barrier(parts);
    pthread_mutex_unlock(&cbptt_team.run_lock);
    return parts;
}

/* For tests: a job of `parts` parts in which part 0 arrives at a barrier at once and the
 * others after delay_ns, or, if until_sleep, as soon as a part sleeps there (delay_ns then
 * bounds the wait): part 0 waits delay_ns whatever its spin, or past any spin shorter than
 * delay_ns. Returns the parts it ran on. */
static long cbptt_late_barrier_delay_ns;
static int cbptt_late_barrier_until_sleep;

static void cbptt_late_barrier_task(void *ctx, int part, int parts)
{
    struct timespec began;
    (void)ctx;
    if (part > 0) {
        clock_gettime(CLOCK_MONOTONIC, &began);
        while (!(cbptt_late_barrier_until_sleep && atomic_load(&cbptt_team.barrier_sleepers) > 0)
               && cbptt_team_elapsed_ns(&began) < cbptt_late_barrier_delay_ns)
            CBPTT_PAUSE();
    }
    cbptt_team_barrier(parts);
}

static int cbptt_team_late_barrier(int parts, long delay_ns, int until_sleep)
{
    cbptt_late_barrier_delay_ns = delay_ns;
    cbptt_late_barrier_until_sleep = until_sleep;
    return cbptt_team_run(parts, cbptt_late_barrier_task, NULL);
}

/* How far apart the team's first two threads run: the round trip, in ns, of one cache line
 * passed between the caller and the first helper (the median over 16 batches of rounds / 16
 * round trips, so that a timer interrupt in one batch does not count), or -1 when the team is
 * busy or has no helper. A host may place two vCPUs on cores far apart (another core complex):
 * there the round trip is 3-10 times longer and every cross-core exchange (a barrier, data a
 * part reads from another) slows down; benchmarks report it beside their 2-thread rows. The
 * loops spin without PAUSE: they measure the line's trip, not the pause. */
#define CBPTT_TRIP_BATCHES 16
typedef struct {
    long rounds;                       /* per batch */
    double batch_ns[CBPTT_TRIP_BATCHES];
    atomic_long ball;
} cbptt_round_trip;

static void cbptt_round_trip_task(void *ctx, int part, int parts)
{
    cbptt_round_trip *trip = (cbptt_round_trip *)ctx;
    struct timespec began;
    long i, total = CBPTT_TRIP_BATCHES * trip->rounds;
    int batch;
    if (parts < 2 || part > 1)
        return;
    if (part == 1) {
        for (i = 0; i < total; i++) {
            while (atomic_load(&trip->ball) != 2 * i + 1)
                __asm__ __volatile__("" ::: "memory");
            atomic_store(&trip->ball, 2 * i + 2);
        }
        return;
    }
    for (batch = 0, i = 0; batch < CBPTT_TRIP_BATCHES; batch++) {
        long end = i + trip->rounds;
        clock_gettime(CLOCK_MONOTONIC, &began);
        for (; i < end; i++) {
            atomic_store(&trip->ball, 2 * i + 1);
            while (atomic_load(&trip->ball) != 2 * i + 2)
                __asm__ __volatile__("" ::: "memory");
        }
        trip->batch_ns[batch] = (double)cbptt_team_elapsed_ns(&began) / (double)trip->rounds;
    }
}

static double cbptt_team_round_trip_ns(long rounds)
{
    cbptt_round_trip trip;
    int i, j;
    trip.rounds = rounds / CBPTT_TRIP_BATCHES > 0 ? rounds / CBPTT_TRIP_BATCHES : 1;
    atomic_init(&trip.ball, 0);
    if (cbptt_team_run(2, cbptt_round_trip_task, &trip) < 2)
        return -1;
    for (i = 1; i < CBPTT_TRIP_BATCHES; i++)          /* insertion sort: 16 values */
        for (j = i; j > 0 && trip.batch_ns[j - 1] > trip.batch_ns[j]; j--) {
            double swap = trip.batch_ns[j];
            trip.batch_ns[j] = trip.batch_ns[j - 1];
            trip.batch_ns[j - 1] = swap;
        }
    return 0.5 * (trip.batch_ns[CBPTT_TRIP_BATCHES / 2 - 1] +
                  trip.batch_ns[CBPTT_TRIP_BATCHES / 2]);
}

#endif
#endif
