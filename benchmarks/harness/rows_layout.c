/* Two threads stepping through time-major (T+1, B, H) states, each on its own batch rows, as
 * a row split of one engine's buffers did: h_t[rows] = f(h_{t-1}[rows] @ W^T) with the panel
 * kernel (4 rows x 64 x 64 per step) and a cheap elementwise pass. Modes: 0 interleaved (the
 * parts' rows of a step next to each other, `pad` floats between the two blocks), 1 separate
 * buffers per part, 2 interleaved with a barrier per pass. Prints each thread's time per
 * 1000-step pass. Measured here (docs/DEVELOPMENT.md): ~145 us in every mode with the two
 * vCPUs near (core round trip ~80 ns); far apart (~400 ns) interleaved 265-280 us, pad 16 or
 * 32 floats the same, pad 256 (1 KiB) or separate buffers 138-148 us.
 *
 *   gcc -O3 -o /tmp/rows_layout benchmarks/harness/rows_layout.c -lpthread -lm
 *   for pad in 0 32 256; do /tmp/rows_layout 0 $pad; done; /tmp/rows_layout 1
 *   python -c "from cbptt import _engine; print(_engine.core_round_trip_ns())"   # the phase
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <time.h>
#include "../../src/cbptt/_core/panels.h"
enum { T = 1000, H = 64, B = 8 };
static float *panels;
static float *shared_h;        // (T+1, B, H)
static float *own_h[2];        // (T+1, B/2, H) each
static int mode, reps = 200, pad = 0;
static pthread_barrier_t bar;
static double elapsed[2];
static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + 1e-9 * ts.tv_nsec; }
static void *run(void *arg) {
    int part = (int)(long)arg, rows = B / 2, r, j, t, rep;
    cpu_set_t set; CPU_ZERO(&set); CPU_SET(part, &set); pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    float *base; long step_stride;
    if (mode == 0) { base = shared_h + part * (rows * H + pad); step_stride = B * H + 2 * pad; }
    else if (mode == 1) { base = own_h[part]; step_stride = rows * H; }
    else { base = shared_h + part * rows * H; step_stride = B * H; }
    pthread_barrier_wait(&bar);
    double t0 = now();
    for (rep = 0; rep < reps; rep++) {
        for (t = 1; t <= T; t++) {
            float *prev = base + (t - 1) * step_stride, *cur = base + t * step_stride;
            cbptt_panel_gemm_f32(rows, H, prev, H, panels, 0, H, 0, cur, H);
            for (r = 0; r < rows; r++) for (j = 0; j < H; j++) cur[r * H + j] = cur[r * H + j] * 0.5f + 0.01f;
        }
        if (mode == 2) pthread_barrier_wait(&bar);
    }
    elapsed[part] = now() - t0;
    return NULL;
}
int main(int argc, char **argv) {
    mode = atoi(argv[1]); if (argc > 2) pad = atoi(argv[2]);
    panels = aligned_alloc(64, sizeof(float) * H * 64);
    float *w = malloc(sizeof(float) * H * H);
    for (int i = 0; i < H * H; i++) w[i] = (rand() / (float)RAND_MAX - 0.5f) * 0.2f;
    cbptt_pack_f32(w, H, 1, H, 0, H, panels);
    shared_h = aligned_alloc(64, sizeof(float) * (T + 1) * (B * H + 2 * 4096));
    for (int p = 0; p < 2; p++) own_h[p] = aligned_alloc(64, sizeof(float) * (T + 1) * (B / 2) * H);
    for (long i = 0; i < (long)(T + 1) * (B * H + 2 * 4096); i++) shared_h[i] = 0.1f;
    for (int p = 0; p < 2; p++) for (long i = 0; i < (long)(T + 1) * (B / 2) * H; i++) own_h[p][i] = 0.1f;
    pthread_barrier_init(&bar, NULL, 2);
    pthread_t th[2];
    for (long p = 0; p < 2; p++) pthread_create(&th[p], NULL, run, (void *)p);
    for (int p = 0; p < 2; p++) pthread_join(th[p], NULL);
    printf("pad %d mode %d (%s): %.1f / %.1f us per pass\n", pad, mode, mode == 0 ? "interleaved" : mode == 1 ? "separate" : "interleaved+barrier", elapsed[0] / reps * 1e6, elapsed[1] / reps * 1e6);
    return 0;
}
