"""cbptt's benchmark suite (run from the repository root; see benchmarks/README.md).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks [--quick | --memory] ...
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_stream.py [--steps N]

Modules: grid (shapes, cells, trainers, FLOP and memory models), contenders (cbptt, the NumPy reference,
torch), timing (alternating blocks), gemm (the recurrent GEMM limit), report (the Markdown table), memory
(--memory, one fresh process per measurement), facts (machine facts, thread limits, RSS), cli (options and
the main loop), seq2seq_* and classify_* (the encoder-decoder's rows and issue 19's: grid, contenders, report);
bench_step.py is an alias of `python -m benchmarks`, bench_stream.py the long-stream run;
identity and identity_grid the bit-identity harness (`python -m benchmarks.identity save/check FILE.npz`).
"""
