"""`python -m benchmarks`: the step benchmark grid (or --memory). See benchmarks/README.md."""
from .cli import main

if __name__ == "__main__":
    main()
