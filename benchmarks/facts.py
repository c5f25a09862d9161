"""Machine facts saved with every result, the BLAS thread limit, and the OPENBLAS_* environment check.

Import cbptt (and so SciPy's BLAS) before calling blas_threads: threadpoolctl limits only the libraries
already loaded."""
import contextlib
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import scipy

import cbptt

try:
    import threadpoolctl
except ImportError:  # optional (pip install -e ".[bench]"): needed for --threads and to name the BLAS libraries
    threadpoolctl = None

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
FORCED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")   # change OpenBLAS's kernels: unset them to benchmark


def warn_forced_env(script):
    """Warn (never change them) when OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set."""
    env = {k: os.environ[k] for k in FORCED_ENV if k in os.environ}
    if env:
        print("warning: " + ", ".join(f"{k}={v}" for k, v in env.items()) + " set in the environment; benchmarks "
              f"are meant to run as `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python {script}`", file=sys.stderr)
    return env


@contextlib.contextmanager
def blas_threads(n):
    """Limit every loaded BLAS (SciPy's OpenBLAS for cbptt, NumPy's for the reference) to n threads.
    Yields whether the limit is applied (False without threadpoolctl)."""
    if threadpoolctl is None:
        yield False
        return
    with threadpoolctl.threadpool_limits(limits=n, user_api="blas"):
        yield True


@contextlib.contextmanager
def cores(n):
    """Pin every thread of this process, and any it starts meanwhile, to n of the CPUs it may use, when n
    is fewer (Linux: sched_setaffinity per thread); restore them all afterwards. Yields the CPUs pinned
    to, or None when nothing was pinned. Thread-count settings alone do not hold every contender to n
    cores (XLA's pool, for one, ignores XLA_FLAGS in jax 0.10.2): the affinity does."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not allowed or n >= len(allowed) or not os.path.isdir("/proc/self/task"):
        yield None
        return

    def pin(cpus):
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:          # a thread that ended since the listing
                pass
    chosen = allowed[:n]
    pin(set(chosen))
    try:
        yield chosen
    finally:
        pin(set(allowed))


def blas_libraries():
    if threadpoolctl is None:
        return "unknown (threadpoolctl not installed)"
    return [{k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                      "threading_layer", "filepath")}
            for info in threadpoolctl.threadpool_info() if info.get("user_api") == "blas"]


def blas_summary(blas):
    if isinstance(blas, str):
        return blas
    return "; ".join(f"{Path(b['filepath']).name} {b['version']} {b['architecture']}" for b in blas)


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.rstrip("\n")
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(distribution):
    """A package's version without importing it (importing torch would cost 150 MB of RSS)."""
    from importlib import metadata
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def machine_facts():
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "cbptt": cbptt.__version__, "torch": _version("torch"), "jax": _version("jax"),
        "cbptt_local_thread_control": getattr(cbptt, "local_thread_control", lambda: None)(),
        "threadpoolctl": getattr(threadpoolctl, "__version__", None),
        "git_commit": _git("rev-parse", "--short", "HEAD").strip(),
        "git_dirty_files": [l[3:] for l in _git("status", "--porcelain", "--", "src", "tests").splitlines()],
        "platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "blas": blas_libraries(),
        "loadavg_start": loadavg(),   # other processes on the machine make every figure noisier: see README
        "openblas_env": {k: os.environ[k] for k in FORCED_ENV + ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                                 "MKL_NUM_THREADS") if k in os.environ},
    }


def machine_line(facts):
    """One Markdown paragraph naming the machine and software."""
    line = (f"Machine: {facts['cpu']}, {facts['cpu_count']} CPUs; Python {facts['python']}, NumPy {facts['numpy']}, "
            f"SciPy {facts['scipy']}, torch {facts['torch'] or 'not installed'}, cbptt {facts['cbptt']} "
            f"(git {facts['git_commit']}"
            + (", modified: " + ", ".join(facts["git_dirty_files"]) if facts["git_dirty_files"] else "") + "); "
            f"BLAS: {blas_summary(facts['blas'])}; {facts['date']}; load average (1, 5, 15 min) "
            f"{facts['loadavg_start']} at the start, {facts.get('loadavg_end')} at the end.")
    if any(k in facts["openblas_env"] for k in FORCED_ENV):
        line += "\nWARNING: run with " + ", ".join(f"{k}={v}" for k, v in facts["openblas_env"].items()) \
                + " set (see benchmarks/README.md)."
    return line


def result_stem(kind, dtype_name, suffix=""):
    return "{}_{}_{}{}".format(kind, datetime.datetime.now().strftime("%Y%m%d-%H%M%S"), dtype_name, suffix)


def rss_status():
    """Current and peak resident set size of this process, in bytes, from /proc/self/status (Linux):
    VmRSS, VmHWM (the peak; resettable, see reset_peak_rss), RssAnon, RssFile. Empty elsewhere."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs). True if done."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def ru_maxrss_bytes():
    import resource
    scale = 1 if sys.platform == "darwin" else 1024       # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def cpu_sample():
    """(wall seconds, CPU seconds the whole machine was busy, CPU seconds this process used), for others_cpu.
    Machine time from /proc/stat (Linux; None elsewhere): user + nice + system + irq + softirq + steal, steal
    being time the hypervisor gave to other machines."""
    import time
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = sum(fields) - fields[3] - fields[4]           # all but idle and iowait
    own = os.times()
    return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def core_round_trip_ns():
    """Round trip in ns of a cache line between cbptt's two team threads (cbptt's
    _engine.core_round_trip_ns), or None where it cannot be measured. Near 100 ns here when the
    host runs the two vCPUs close together; 3-10 times that when it places them far apart, and
    then 2-thread steps slow down by up to 2x (benchmarks/README.md, "The team of threads")."""
    measure = getattr(getattr(cbptt, "_engine", None), "core_round_trip_ns", None)
    # on one CPU the two threads would pass the line by context switches (ms a trip)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if measure is None or (usable or 1) < 2:
        return None
    ns = measure(20000)
    return None if ns is None else round(ns, 1)


def others_cpu(start, end):
    """CPUs kept busy on average by anything but this process between two cpu_sample()s (0.0: a quiet machine;
    1.0: another process took a whole core). None when unknown."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]))
