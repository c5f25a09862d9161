"""What cbptt's built distributions hold (run by .ci/run on the wheel it ships and on the sdist).

    python .ci/check_dist.py WHEEL_OR_SDIST ...

A wheel (.whl) carries the Python modules, one compiled module and one .pyi stub per .pyx of
src/cbptt, and py.typed; no build input or build output other than the compiled modules: no .c
(Cython's generated C, 3.5 MB), .pyx, .pxd (cbptt's are internal kernels, not an API) or .h.
It must stay under MAX_WHEEL_BYTES (0.5 MB at 2026-12-04; 2.51 MB when it shipped the .c and
the modules' DWARF). An sdist (.tar.gz) carries every .pyx, .pxd and .h of src/cbptt and of
src/cbptt/_core (a build needs them all) and no .c (a build regenerates it). Prints one line per file checked; exits 1
with a line per problem.
"""
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

MAX_WHEEL_BYTES = 2_000_000
SOURCE = Path(__file__).resolve().parent.parent / "src" / "cbptt"
BUILD_ONLY = (".c", ".pyx", ".pxd", ".h")


def build_inputs():
    """Paths (below src/cbptt) of the files that a build of the compiled modules reads."""
    return sorted(p.relative_to(SOURCE).as_posix() for p in SOURCE.rglob("*")
                  if p.suffix in (".pyx", ".pxd", ".h"))


def extension_names():
    """The compiled modules' names: one per .pyx."""
    return sorted(p.stem for p in SOURCE.glob("*.pyx"))


def wheel_problems(path):
    """What is wrong with the wheel at path (empty list: nothing)."""
    with zipfile.ZipFile(path) as wheel:
        members = [PurePosixPath(name) for name in wheel.namelist()]
    package = {m.name for m in members if m.parent == PurePosixPath("cbptt")}
    problems = [f"ships {m}" for m in members if m.suffix in BUILD_ONLY]
    for name in extension_names():
        if not any(n.startswith(name + ".") and n.endswith((".so", ".pyd")) for n in package):
            problems.append(f"has no compiled module cbptt/{name}")
        if name + ".pyi" not in package:
            problems.append(f"has no stub cbptt/{name}.pyi")
    if "py.typed" not in package:
        problems.append("has no cbptt/py.typed")
    size = Path(path).stat().st_size
    if size >= MAX_WHEEL_BYTES:
        problems.append(f"is {size:,} bytes, the limit is {MAX_WHEEL_BYTES:,}")
    return problems


def sdist_problems(path):
    """What is wrong with the sdist at path (empty list: nothing)."""
    with tarfile.open(path) as sdist:
        members = [PurePosixPath(name) for name in sdist.getnames()]
    package = {"/".join(m.parts[3:]) for m in members if m.parts[1:3] == ("src", "cbptt")}
    problems = [f"lacks src/cbptt/{name}" for name in build_inputs() if name not in package]
    problems += [f"ships {m}" for m in members if m.suffix == ".c"]
    return problems


def main(paths):
    failed = False
    for path in paths:
        if path.endswith(".whl"):
            problems = wheel_problems(path)
        elif path.endswith(".tar.gz"):
            problems = sdist_problems(path)
        else:
            problems = ["is neither a .whl nor a .tar.gz"]
        size = Path(path).stat().st_size
        print(f"{path}: {size:,} bytes, " + ("; ".join(problems) if problems else "ok"))
        failed = failed or bool(problems)
    return 1 if failed or not paths else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
