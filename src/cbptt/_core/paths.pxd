# The record of what a call ran (paths.h): which kernel path each product took, for tests
# and for Engine.last_paths.

cdef extern from "_core/paths.h" nogil:
    enum:
        CBPTT_RAN_STEP_PANELS
        CBPTT_RAN_STEP_BLAS
        CBPTT_RAN_INPUT_PANELS
        CBPTT_RAN_INPUT_BLAS
        CBPTT_RAN_WGRAD_KERNEL
        CBPTT_RAN_WGRAD_BLAS
        CBPTT_RAN_WGRAD_TRANSPOSED
        CBPTT_RAN_CHUNK_GRADS
        CBPTT_RAN_INPUT_IDS
    void cbptt_ran(unsigned flags)
    unsigned cbptt_paths_take()
