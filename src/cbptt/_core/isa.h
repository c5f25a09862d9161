/* Which instruction set the kernels of vmath.h, cell_steps.h and panels.h run on.
 *
 * On x86-64 with GCC or Clang those kernels are compiled three times (baseline x86-64, AVX2 +
 * FMA, AVX-512) and the best one the processor supports is picked at run time (CBPTT_DISPATCH).
 * The environment variable CBPTT_ISA=baseline|avx2|avx512 caps that choice, so that the code
 * users without AVX-512 run can be run and tested on a machine that has it: below avx512 the
 * per-step products go to OpenBLAS instead of panels.h's kernels. Unset or empty: no cap; a
 * cap above what the processor supports: what it supports; an unknown value: no cap here
 * (cbptt/_isa.pyx refuses it at import with a ValueError).
 *
 * Every translation unit that includes this header has its own copy of the cached level, so
 * each reads CBPTT_ISA by the same rule when its module is loaded (a constructor), before any
 * kernel runs: modules loaded together see the same value.
 *
 * Built with CBPTT_PORTABLE defined (setup.py: CBPTT_PORTABLE=1), or by a compiler or for a
 * processor without the dispatch, only the plain C variants exist ("portable").
 */
#ifndef CBPTT_ISA_H
#define CBPTT_ISA_H

#include <stdlib.h>

enum {
    CBPTT_ISA_PORTABLE = 0,     /* plain C only: no variants compiled, nothing dispatched */
    CBPTT_ISA_BASELINE = 1,     /* the target's baseline (x86-64: SSE2) */
    CBPTT_ISA_AVX2 = 2,         /* AVX2 + FMA */
    CBPTT_ISA_AVX512 = 3        /* AVX-512 F + DQ (the panels: F) */
};

static const char *cbptt_isa_name(int level)
{
    switch (level) {
    case CBPTT_ISA_BASELINE: return "baseline";
    case CBPTT_ISA_AVX2: return "avx2";
    case CBPTT_ISA_AVX512: return "avx512";
    default: return "portable";
    }
}

/* text equals name, ASCII letters compared without case */
static int cbptt_isa_same(const char *text, const char *name)
{
    for (; *text != '\0' && *name != '\0'; text++, name++) {
        char c = *text >= 'A' && *text <= 'Z' ? (char)(*text - 'A' + 'a') : *text;
        if (c != *name)
            return 0;
    }
    return *text == *name;
}

/* CBPTT_ISA as a level: CBPTT_ISA_AVX512 (no cap) when unset or empty, -1 when unknown */
static int cbptt_isa_requested(void)
{
    const char *text = getenv("CBPTT_ISA");
    int level;
    if (text == NULL || text[0] == '\0')
        return CBPTT_ISA_AVX512;
    for (level = CBPTT_ISA_BASELINE; level <= CBPTT_ISA_AVX512; level++)
        if (cbptt_isa_same(text, cbptt_isa_name(level)))
            return level;
    return -1;
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(CBPTT_PORTABLE)
#define CBPTT_DISPATCH 1

/* the level in use and whether the panels may run, read once (-1: not yet) */
static int cbptt_isa_level_cached = -1, cbptt_isa_panels_cached = -1;

static void cbptt_isa_read(void)
{
    int cpu, cap = cbptt_isa_requested();
    __builtin_cpu_init();
    cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
              ? CBPTT_ISA_AVX512
              : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                    ? CBPTT_ISA_AVX2 : CBPTT_ISA_BASELINE;
    cap = cap < 0 ? CBPTT_ISA_AVX512 : cap;
    cbptt_isa_level_cached = cap < cpu ? cap : cpu;
    /* the panels need AVX-512F only */
    cbptt_isa_panels_cached = cap >= CBPTT_ISA_AVX512 && __builtin_cpu_supports("avx512f");
}

/* when the module is loaded (benign race if a kernel ever got here first: same values) */
__attribute__((constructor)) static void cbptt_isa_read_at_load(void)
{
    cbptt_isa_read();
}

/* the variant the kernels run: CBPTT_ISA's cap on the best this processor supports */
static int cbptt_isa_level(void)
{
    if (cbptt_isa_level_cached < 0)
        cbptt_isa_read();
    return cbptt_isa_level_cached;
}

/* whether panels.h's AVX-512F kernels may run: the cap allows AVX-512 and the processor has
 * AVX-512F */
static int cbptt_isa_allows_avx512f(void)
{
    if (cbptt_isa_panels_cached < 0)
        cbptt_isa_read();
    return cbptt_isa_panels_cached;
}

/* the best variant compiled in */
static int cbptt_isa_compiled(void) { return CBPTT_ISA_AVX512; }

#else
static int cbptt_isa_level(void) { return CBPTT_ISA_PORTABLE; }
static int cbptt_isa_allows_avx512f(void) { return 0; }
static int cbptt_isa_compiled(void) { return CBPTT_ISA_PORTABLE; }
#endif

#endif
