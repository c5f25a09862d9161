/* What a call ran: each thread of a call ORs a flag into its own record at every kernel path
 * it takes (the per-step products on packed panels or on BLAS, the input projection, the
 * weight gradients on the panel kernel, transposed, or on BLAS, GRU's per-chunk gradients), so
 * that tests can assert which path ran instead of guessing it from rounding differences.
 * The record is thread-local: a part of a team writes only its own; the job that the part runs
 * takes it (cbptt_paths_take) when the part's work is done. Setting a flag is one OR into a
 * thread-local word, done where a path is chosen (once a layer or a chunk), never per step. */
#ifndef CBPTT_PATHS_H
#define CBPTT_PATHS_H

enum {
    CBPTT_RAN_STEP_PANELS = 1 << 0,        /* per-step products on W_hh packed into panels */
    CBPTT_RAN_STEP_BLAS = 1 << 1,          /* per-step products through BLAS */
    CBPTT_RAN_INPUT_PANELS = 1 << 2,       /* input projection on W_ih^T packed into panels */
    CBPTT_RAN_INPUT_BLAS = 1 << 3,         /* input projection through BLAS */
    CBPTT_RAN_WGRAD_KERNEL = 1 << 4,       /* a weight gradient on the panel kernel */
    CBPTT_RAN_WGRAD_BLAS = 1 << 5,         /* a weight gradient through BLAS */
    CBPTT_RAN_WGRAD_TRANSPOSED = 1 << 6,   /* narrow dW_ih as (inputs^T dA), added transposed */
    CBPTT_RAN_CHUNK_GRADS = 1 << 7,        /* GRU's weight gradients chunk by chunk */
    CBPTT_RAN_INPUT_IDS = 1 << 8,          /* token ids: the input projection a gather, its
                                              weight gradient a scatter-add */
};

static __thread unsigned cbptt_paths_record = 0;

static inline void cbptt_ran(unsigned flags) { cbptt_paths_record |= flags; }

/* The flags this thread set since the last take, and a fresh record. */
static inline unsigned cbptt_paths_take(void) {
    unsigned flags = cbptt_paths_record;
    cbptt_paths_record = 0;
    return flags;
}

#endif
