"""Which instruction set cbptt's kernels were compiled for and run on (see _core/isa.h).

CBPTT_ISA=baseline|avx2|avx512 caps the variant of the elementwise and gate kernels picked at
run time and, below avx512, turns _core/panels.h's AVX-512 products off (OpenBLAS runs them). Each
compiled module reads it once, when it is loaded; this one, imported first by the package,
refuses an unknown value.
"""
import os

cdef extern from "_core/isa.h" nogil:
    int cbptt_isa_requested()
    int cbptt_isa_level()
    int cbptt_isa_compiled()
    const char* cbptt_isa_name(int level)

ALLOWED = ("baseline", "avx2", "avx512")

# CBPTT_ISA as found when the compiled modules were loaded (None: unset or empty)
requested = os.environ.get("CBPTT_ISA") or None
if cbptt_isa_requested() < 0:
    raise ValueError(f"CBPTT_ISA={requested!r} is not one of {', '.join(ALLOWED)} "
                     "(unset: the best this processor supports)")


def isa_compiled():
    """The best kernel variant compiled in: "avx512" (baseline, AVX2 and AVX-512 variants,
    picked at run time) or "portable" (plain C only: CBPTT_PORTABLE=1 builds, other
    processors and compilers)."""
    return cbptt_isa_name(cbptt_isa_compiled()).decode()


def isa_in_use():
    """The variant the kernels run: "avx512", "avx2", "baseline" (the best of CBPTT_ISA's cap
    and the processor's support) or "portable"."""
    return cbptt_isa_name(cbptt_isa_level()).decode()


def isa_requested():
    """CBPTT_ISA as read at import, or None when it was unset or empty."""
    return requested
