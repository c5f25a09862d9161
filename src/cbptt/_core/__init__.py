"""The engine's layers, compiled into the one extension module ``cbptt._engine`` (each layer is
a ``.pxd`` of inline functions, so no call crosses a module boundary), over C kernels. Read
them bottom-up (docs/DEVELOPMENT.md has the table):

- C kernels: ``isa.h`` (the instruction set in use; ``CBPTT_ISA``), ``vmath.h`` (vectorised
  exp, sigmoid, tanh), ``cell_steps.h`` with ``cells.pxd`` (each cell's step forward and
  backward), ``losses.pxd`` (value and gradient), ``panels.h`` (AVX-512 products on packed
  weights), ``team.h`` and ``blas_threads.h`` (cbptt's threads, BLAS's thread count),
  ``paths.h`` (what ran).
- ``dropout.pxd``: dropout masks, drawn from a counter-based hash where they are used.
- ``shape.pxd``: the problem (sizes, cell, loss), the flat parameter layout, the workspaces.
- ``team.pxd``: the team of threads and BLAS's thread count, and how parts split work.
- ``paths.pxd``: the record of which kernel path each product took.
- ``products.pxd``: every matrix product, on BLAS or on the panel kernels.
- ``plan.pxd``: every strategy decision of an engine, in one struct, filled from the settings.
- ``norms.pxd``: norms in double.
- ``forward.pxd``: the forward pass.
- ``head.pxd``: the loss and the head's backward.
- ``gradients.pxd``: the backward's hoisted products (weight gradients, the layer below's input).
- ``backward.pxd``: BPTT.
- ``jobs.pxd``: a call as a job the parts of a team run together (an encoder's in two phases).
- ``split.pxd``: a call as sub-engines, one per part, on blocks of the batch rows.
- ``arrays.pxd``: the engine face's checks of the arrays it is handed.

``_engine.pyx`` holds the Python-facing ``Engine`` on top of them.
"""
