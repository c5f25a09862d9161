"""The engine's layers, compiled into the one extension module ``cbptt._engine`` (each layer is
a ``.pxd`` of inline functions, so no call crosses a module boundary). Read them bottom-up:

- ``shape.pxd``: the problem (sizes, cell, loss), the flat parameter layout, the workspaces.
- ``team.pxd``: the team of threads and BLAS's thread count (``team.h``, ``blas_threads.h``).
- ``paths.pxd``: the record of which kernel path each product took (``paths.h``).
- ``products.pxd``: every matrix product, on BLAS or on the AVX-512 panel kernels (``panels.h``).
- ``plan.pxd``: every strategy decision of an engine, in one struct, filled from the settings.
- ``norms.pxd``: norms in double.
- ``forward.pxd``: the forward pass (the cell steps of ``cells.pxd`` / ``cell_steps.h``).
- ``head.pxd``: the loss (``losses.pxd``) and the head's backward.
- ``gradients.pxd``: the backward's hoisted products (weight gradients, the layer below's input).
- ``backward.pxd``: BPTT.
- ``jobs.pxd``: a call as a job the parts of a team run together.
- ``split.pxd``: a call as sub-engines, one per part, on blocks of the batch rows.

``_engine.pyx`` holds the Python-facing ``Engine`` on top of them.
"""
