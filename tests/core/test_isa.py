"""CBPTT_ISA (_core/isa.h): the cap on the kernels' run-time dispatch, read when cbptt is imported,
so each case runs in a fresh interpreter; what the build compiled in (CBPTT_PORTABLE=1 at build
time: plain C only); and cbptt.show_config()'s record of it, of SciPy's BLAS and of the versions.

The code paths users without AVX-512 run are tested by running this file and a subset of the
suite under CBPTT_ISA=baseline, CBPTT_ISA=avx2 and on a CBPTT_PORTABLE=1 build (.ci/run).
"""
import json
import os
import platform
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy

import cbptt
from cbptt import _engine, _isa, sysinfo

LEVELS = ["baseline", "avx2", "avx512"]

# what a fresh interpreter reports: the ISA, the panels, and the paths an LSTM call ran
PROBE = """
import json
import numpy as np
import cbptt
from cbptt import _engine, _isa
model = cbptt.RNN(3, 40, 2, cell="lstm", seed=0)
engine = _engine.Engine("lstm", 1, 3, 40, 2, 8, 5, np.float64)
rng = np.random.default_rng(0)
X, Y = rng.standard_normal((8, 5, 3)), rng.standard_normal((8, 5, 2))
engine.loss_and_grad(X, Y, model.params, np.zeros_like(model.params))
print(json.dumps(dict(compiled=_isa.isa_compiled(), in_use=_isa.isa_in_use(),
                      requested=_isa.isa_requested(), panels=_engine.panels_supported(),
                      engine_panels=bool(engine.panels), paths=sorted(engine.last_paths))))
"""


def run_python(code, isa):
    """Run code in a fresh interpreter with CBPTT_ISA=isa (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "CBPTT_ISA"}
    if isa is not None:
        env["CBPTT_ISA"] = isa
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


def probe(isa):
    done = run_python(PROBE, isa)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def uncapped():
    """The report with CBPTT_ISA unset: the best this build and processor have."""
    return probe(None)


def test_the_build_compiled_what_was_asked():
    # CBPTT_PORTABLE=1 in the environment of the tests as of the build (as in .ci/run)
    portable = os.environ.get("CBPTT_PORTABLE", "0") not in ("", "0")
    x86 = platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32"
    assert _isa.isa_compiled() == ("avx512" if x86 and not portable else "portable")


def cpu_flags():
    """The processor's feature flags from /proc/cpuinfo, or None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next(line for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return None
    return set(line.split(":", 1)[1].split())


def test_unset_uses_the_best_the_processor_has(uncapped):
    assert uncapped["requested"] is None
    if uncapped["compiled"] == "portable":
        assert (uncapped["in_use"], uncapped["panels"]) == ("portable", False)
        return
    flags = cpu_flags()
    if flags is not None:
        best = ("avx512" if {"avx512f", "avx512dq"} <= flags else
                "avx2" if {"avx2", "fma"} <= flags else "baseline")
        assert uncapped["in_use"] == best
        assert uncapped["panels"] == ("avx512f" in flags)
    assert uncapped["in_use"] in LEVELS


@pytest.mark.parametrize("isa", LEVELS)
def test_a_cap_limits_the_kernels_and_the_panels(uncapped, isa):
    got = probe(isa)
    assert got["requested"] == isa
    if got["compiled"] == "portable":
        assert got["in_use"] == "portable"
        assert not got["panels"]
    else:
        best = LEVELS.index(uncapped["in_use"])
        assert got["in_use"] == LEVELS[min(LEVELS.index(isa), best)]
        assert got["panels"] == (isa == "avx512" and uncapped["panels"])
    assert got["engine_panels"] == got["panels"]
    # the engine's per-step products ran where the panels say (OpenBLAS below avx512)
    assert ("step_panels" in got["paths"]) == got["panels"]
    assert ("step_blas" in got["paths"]) != got["panels"]


def test_the_cap_ignores_case_and_empty_means_unset(uncapped):
    assert probe("AVX2")["in_use"] == probe("avx2")["in_use"]
    empty = probe("")
    assert empty["requested"] is None
    assert (empty["in_use"], empty["panels"]) == (uncapped["in_use"], uncapped["panels"])


@pytest.mark.parametrize("value", ["sse2", "avx-512", "portable", "avx2 "])
def test_an_unknown_value_is_refused_at_import(value):
    done = run_python("import cbptt", value)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: CBPTT_ISA=")
    assert repr(value) in last
    for level in LEVELS:
        assert level in last


def test_this_process_reports_the_cap_it_was_started_with():
    requested = os.environ.get("CBPTT_ISA") or None
    assert _isa.isa_requested() == requested
    if requested in ("baseline", "avx2"):
        assert not _engine.panels_supported()
        if _isa.isa_compiled() != "portable":
            assert LEVELS.index(_isa.isa_in_use()) <= LEVELS.index(requested)


def test_show_config_records_the_isa_and_versions():
    record = cbptt.show_config(mode="dicts")
    assert set(record) == {"cbptt", "blas", "python", "threads"}
    assert set(record["threads"]) == {"threads", "policy", "reason", "blas_threads", "cores",
                                      "runnable", "mpi_local_ranks"}
    assert record["cbptt"] == {
        "version": cbptt.__version__, "isa_compiled": _isa.isa_compiled(),
        "isa_in_use": _isa.isa_in_use(), "CBPTT_ISA": os.environ.get("CBPTT_ISA") or None,
        "panels": _engine.panels_supported(), "team_available": _engine.team_available()}
    assert record["python"] == {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(), "machine": platform.machine(),
        "numpy": np.__version__, "scipy": scipy.__version__}
    assert set(record["blas"]) == {"library", "version", "core_type", "threads", "source"}


def scipy_openblas():
    """The paths of SciPy's bundled OpenBLAS (its wheels); skips where there is none."""
    from cbptt._threads import _scipy_blas_libraries

    paths = _scipy_blas_libraries()
    if not paths:
        pytest.skip("this SciPy brings no OpenBLAS of its own")
    return paths


def test_the_blas_record_from_openblas_itself(monkeypatch):
    scipy_openblas()
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)       # import fails
    blas = sysinfo.blas_info()
    assert blas["source"] == "openblas"
    assert blas["library"] == "openblas"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", blas["version"])
    assert isinstance(blas["core_type"], str) and blas["core_type"]
    assert isinstance(blas["threads"], int) and blas["threads"] >= 1
    if os.environ.get("OPENBLAS_CORETYPE"):                         # OpenBLAS honours it
        assert blas["core_type"].lower() == os.environ["OPENBLAS_CORETYPE"].lower()


def test_threadpoolctl_reads_the_same_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    paths = scipy_openblas()
    blas = sysinfo.blas_info()
    assert blas["source"] == "threadpoolctl"
    real = {os.path.realpath(path) for path in paths}
    info = next(i for i in threadpoolctl.threadpool_info()
                if os.path.realpath(i["filepath"]) in real)
    assert (blas["library"], blas["version"], blas["core_type"], blas["threads"]) == \
        (info["internal_api"], info["version"], info["architecture"], info["num_threads"])
    assert sysinfo._blas_from_openblas(paths) == dict(blas, source="openblas")


def test_the_blas_record_from_scipy_build_information(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    monkeypatch.setattr("cbptt._threads._scipy_blas_libraries", lambda: [])
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    blas = sysinfo.blas_info()
    built = scipy.show_config(mode="dicts")["Build Dependencies"]["blas"]
    assert blas == {"library": built["name"], "version": built["version"],
                    "core_type": "Haswell", "threads": None, "source": "scipy.show_config"}


def test_show_config_prints_each_entry(capsys):
    assert cbptt.show_config() is None
    out = capsys.readouterr().out
    record = cbptt.show_config(mode="dicts")
    for section, values in record.items():
        assert f"{section}:\n" in out
        for key, value in values.items():
            assert f"  {key}: {'-' if value is None else value}\n" in out
    assert f"  isa_in_use: {_isa.isa_in_use()}\n" in out


def test_show_config_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of stdout, dicts, got 'json'"):
        cbptt.show_config(mode="json")
