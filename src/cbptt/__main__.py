"""``python -m cbptt``: the cbptt command (see cbptt.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
