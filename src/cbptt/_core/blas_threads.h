/* Holding SciPy's OpenBLAS at one thread while cbptt needs it, safely across threads.
 *
 * cbptt runs its per-step products, and every BLAS call of a team's parts, with BLAS on one
 * thread. OpenBLAS's openblas_set_num_threads_local does not set a per-thread count in the
 * pthreads builds SciPy ships: it calls openblas_set_num_threads, which sets the count of the
 * whole process (OpenBLAS 0.3.27-0.3.32, driver/others/openblas_set_num_threads.c; measured
 * here too: two trainers stepping in two Python threads, each saving and restoring the count
 * around its call, could leave it at 1 for good). So the count is changed under one lock with
 * a count of holders: the first hold saves the count it finds and sets 1, the last release
 * gives the saved count back, and cbptt_blas_threads reports the saved count while any hold
 * lasts. Meanwhile every caller of SciPy's BLAS in the process runs it on one thread. */
#ifndef CBPTT_BLAS_THREADS_H
#define CBPTT_BLAS_THREADS_H

typedef int (*cbptt_set_threads_fn)(int);
typedef int (*cbptt_get_threads_fn)(void);

#if defined(_WIN32)
#include <windows.h>
static SRWLOCK cbptt_blas_lock = SRWLOCK_INIT;
#define CBPTT_BLAS_LOCK() AcquireSRWLockExclusive(&cbptt_blas_lock)
#define CBPTT_BLAS_UNLOCK() ReleaseSRWLockExclusive(&cbptt_blas_lock)
#else
#include <pthread.h>
static pthread_mutex_t cbptt_blas_lock = PTHREAD_MUTEX_INITIALIZER;
#define CBPTT_BLAS_LOCK() pthread_mutex_lock(&cbptt_blas_lock)
#define CBPTT_BLAS_UNLOCK() pthread_mutex_unlock(&cbptt_blas_lock)
#endif

static struct {
    cbptt_set_threads_fn set;   /* openblas_set_num_threads_local, or NULL: no control */
    cbptt_get_threads_fn get;   /* openblas_get_num_threads, or NULL */
    int holders;
    int saved;                  /* the count found by the first of the current holders */
} cbptt_blas = {0, 0, 0, 0};

/* Install the setter and getter (NULL: none). Call while nothing holds. */
static void cbptt_blas_control(cbptt_set_threads_fn set, cbptt_get_threads_fn get)
{
    CBPTT_BLAS_LOCK();
    cbptt_blas.set = set;
    cbptt_blas.get = get;
    CBPTT_BLAS_UNLOCK();
}

/* Whether a setter is installed (BLAS can be held at one thread), and a getter too (the
 * team can size itself by BLAS's thread count). */
static int cbptt_blas_controlled(void) { return cbptt_blas.set != NULL; }
static int cbptt_blas_counted(void) { return cbptt_blas.set != NULL && cbptt_blas.get != NULL; }

/* BLAS on one thread until the matching cbptt_blas_release. */
static void cbptt_blas_hold(void)
{
    CBPTT_BLAS_LOCK();
    if (cbptt_blas.set != NULL && cbptt_blas.holders++ == 0)
        cbptt_blas.saved = cbptt_blas.set(1);
    CBPTT_BLAS_UNLOCK();
}

static void cbptt_blas_release(void)
{
    CBPTT_BLAS_LOCK();
    if (cbptt_blas.set != NULL && --cbptt_blas.holders == 0)
        cbptt_blas.set(cbptt_blas.saved);
    CBPTT_BLAS_UNLOCK();
}

/* BLAS's thread count apart from cbptt's holds (0 without a getter). */
static int cbptt_blas_threads(void)
{
    int threads;
    CBPTT_BLAS_LOCK();
    threads = cbptt_blas.get == NULL ? 0 : cbptt_blas.holders > 0 ? cbptt_blas.saved
                                                                   : cbptt_blas.get();
    CBPTT_BLAS_UNLOCK();
    return threads;
}

/* For the team's helpers, at the start of each task: where the setter is per-thread after all
 * (other builds), their own calls go to one thread too; where it is global, the caller's hold
 * has set 1 already and this changes nothing. */
static void cbptt_blas_one_here(void)
{
    if (cbptt_blas.set != NULL)
        cbptt_blas.set(1);
}

#endif
