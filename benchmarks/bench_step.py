"""Alias kept for old command lines: `python benchmarks/bench_step.py ARGS` is `python -m benchmarks ARGS`.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_step.py [--quick] ...
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the repository root, for `import benchmarks`

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
