"""The thread policy (cbptt/thread_policy.py), each engine's adaptive choice of its split's
threads (cbptt/thread_choice.py) and cbptt.settings(threads=N): decided from fake /proc files,
fake environments and injected call times, never from the clock; results bit-identical
whichever threads run a call."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import cbptt
from cbptt import _engine, _threads, thread_choice, thread_policy
from cbptt.thread_choice import ONE, TEAM, ThreadChoice
from cbptt.thread_policy import Facts

from helpers import find_mpiexec, needs_mpi, run_main


def facts(**changes):
    quiet = Facts(blas_threads=2, cores=2, online=2, runnable=1, local_ranks=None,
                  user_variable=None)
    return quiet._replace(**changes)


# -- the process's policy ---------------------------------------------------------------------

@pytest.mark.parametrize("changes, threads, policy", [
    (dict(), None, "adaptive"),                                  # alone: probe the team
    (dict(runnable=2), None, "adaptive"),                        # one other thread: room
    (dict(runnable=3), 1, "oversubscribed"),                     # 3 runnable on 2 cores
    (dict(runnable=5, cores=2, online=8), None, "adaptive"),     # 4 others over 8 cores
    (dict(runnable=9, cores=2, online=8), 1, "oversubscribed"),  # 8 others: 2 on ours
    (dict(runnable=None), None, "adaptive"),                     # no /proc: not known
    (dict(local_ranks=2), 1, "MPI local ranks"),                 # 2 ranks x 2 threads > 2
    (dict(local_ranks=2, cores=4), None, "adaptive"),            # they fit
    (dict(local_ranks=2, runnable=9, user_variable="OPENBLAS_NUM_THREADS=2"), None,
     "environment"),                                             # the user's count wins
    (dict(blas_threads=1, runnable=9), None, "default"),         # one thread anyway
])
def test_the_policy_follows_the_load_the_launcher_and_the_user(changes, threads, policy):
    decided = thread_policy.decide(facts(**changes))
    assert (decided.threads, decided.policy) == (threads, policy), decided.reason


def test_runnable_threads_read_loadavg_else_stat_else_none(tmp_path):
    (tmp_path / "loadavg").write_text("0.52 0.58 0.59 3/467 12345\n")
    (tmp_path / "stat").write_text("cpu 1 2 3\nprocs_running 7\nprocs_blocked 0\n")
    assert thread_policy.runnable_threads(str(tmp_path)) == 3
    (tmp_path / "loadavg").write_text("garbage\n")
    assert thread_policy.runnable_threads(str(tmp_path)) == 7
    (tmp_path / "loadavg").unlink()
    assert thread_policy.runnable_threads(str(tmp_path)) == 7
    (tmp_path / "stat").unlink()
    assert thread_policy.runnable_threads(str(tmp_path)) is None


@pytest.mark.parametrize("environ, ranks", [
    ({}, None),
    ({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, 4),
    ({"MPI_LOCALNRANKS": "2"}, 2),
    ({"PMI_LOCAL_SIZE": "3"}, 3),
    ({"SLURM_NTASKS_PER_NODE": "8"}, None),            # a batch script alone is no rank
    ({"SLURM_NTASKS_PER_NODE": "8", "SLURM_LOCALID": "0"}, 8),
    ({"SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_LOCALID": "1"}, 2),
    ({"MPI_LOCALNRANKS": "many"}, None),
])
def test_local_ranks_come_from_the_launchers_variables(environ, ranks):
    assert thread_policy.local_ranks(environ) == ranks


def test_the_facts_name_the_users_variable(tmp_path):
    (tmp_path / "loadavg").write_text("1.0 1.0 1.0 4/100 1\n")
    read = thread_policy.read_facts({"OMP_NUM_THREADS": "3", "MPI_LOCALNRANKS": "2"},
                                    str(tmp_path))
    assert read.user_variable == "OMP_NUM_THREADS=3" and read.runnable == 4
    assert read.local_ranks == 2 and read.cores >= 1


# -- the adaptive choice, from injected call times --------------------------------------------

def feed(choice, times, team=2, calls=12):
    """Run calls whose time is times[path] (a number, or a list taken in order: as many calls
    as the lists hold); returns the threads each call ran on."""
    ran = []
    for _ in range(sum(len(t) if isinstance(t, list) else 0 for t in times.values()) or calls):
        threads = choice.threads(team)
        path = TEAM if threads > 1 else ONE
        seconds = times[path].pop(0) if isinstance(times[path], list) else times[path]
        choice.record(threads, threads, seconds)
        ran.append(threads)
    return ran


def test_alone_the_team_is_kept_after_a_warm_up_and_two_probes_each():
    choice = ThreadChoice()
    ran = feed(choice, {TEAM: 0.005, ONE: 0.010})
    assert ran[:5] == [2, 2, 1, 2, 1] and set(ran[5:]) == {2}
    summary = choice.summary()
    assert summary["choice"] == TEAM and "5 ms a call on the team" in summary["reason"]
    assert (summary["team_calls"], summary["one_thread_calls"], summary["probings"]) == (10, 2, 1)


def test_beside_another_process_one_thread_is_kept():
    choice = ThreadChoice()
    ran = feed(choice, {TEAM: 0.027, ONE: 0.020})
    assert set(ran[5:]) == {1} and choice.choice == ONE
    assert "27 ms a call on the team, 20 ms on one thread" in choice.reason


def test_a_jump_in_the_call_time_probes_again_and_switches():
    choice = ThreadChoice()
    feed(choice, {TEAM: [0.9] + [0.005] * 4, ONE: [0.010] * 2})       # settled on the team
    assert choice.choice == TEAM
    choice.record(2, 2, 0.009)          # one slow call (> 1.5 x 5 ms) is not a jump
    assert choice.jumps == 0
    choice.record(2, 2, 0.005)
    for _ in range(2):                  # another process started: two in a row
        choice.record(2, 2, 0.012)
    assert choice.jumps == 1 and choice.choice == TEAM and choice.threads(2) == 1
    feed(choice, {TEAM: [0.012, 0.012], ONE: [0.010, 0.010]})
    assert choice.choice == ONE and choice.probings == 2 and choice.threads(2) == 1


def test_one_thread_probes_the_team_again_later_less_often_while_it_loses():
    choice = ThreadChoice(start=ONE, recheck_first=4, recheck=16)
    assert choice.threads(2) == 1 and choice.choice == ONE and choice.probings == 0
    ran = feed(choice, {TEAM: 0.03, ONE: 0.02}, calls=62)
    # warm-up, 4 calls, probe (2 team, 2 one), 8 calls, probe, 16, probe, 16 (the most), ...
    assert [i for i, threads in enumerate(ran) if threads == 2] == [5, 7, 17, 19, 37, 39, 57, 59]
    choice = ThreadChoice(start=ONE, recheck_first=4)
    ran = feed(choice, {TEAM: 0.01, ONE: 0.02})
    assert ran[-1] == 2 and choice.choice == TEAM       # the other process is gone


def test_calls_a_busy_team_ran_alone_are_not_timed():
    choice = ThreadChoice()
    for _ in range(5):
        choice.record(choice.threads(2), 1, 0.001)     # planned on 2, ran on 1
    assert choice.choice is None and choice.busy == 5 and choice.threads(2) == 2


# -- engines: the setting, the choice and the bits --------------------------------------------

@pytest.fixture
def two_blas_threads():
    """SciPy's BLAS at 2 threads for the test (the team's size under threads=None)."""
    if not _engine.team_available():
        pytest.skip("no BLAS thread control: no team")
    before = _threads.blas_threads()
    _threads.set_blas_threads(2)
    yield
    _threads.set_blas_threads(before)


@pytest.fixture
def fake_clock(monkeypatch):
    """Engines' calls timed by a fake clock: call i takes durations[path][i]; returns the
    durations dict to fill (path -> list)."""
    durations = {TEAM: [], ONE: []}
    state = {"now": 0.0, "pending": 0.0, "reads": 0}

    def clock():                # a call's second read (its end) adds the call's duration
        state["reads"] += 1
        if state["reads"] % 2 == 0:
            state["now"] += state["pending"]
        return state["now"]

    class Timed(ThreadChoice):
        def threads(self, team):
            threads = super().threads(team)
            queue = durations[TEAM if threads > 1 else ONE]
            state["pending"] = queue.pop(0) if queue else None     # None: not a call
            return threads

    monkeypatch.setattr(thread_policy, "ThreadChoice", Timed)
    monkeypatch.setattr(thread_choice, "CLOCK", clock)
    return durations


def lstm_call(threads=None, adaptive=True, calls=1, training=True, seed=0):
    """The outputs of `calls` calls of one engine (B=6, T=5, H=12, float64) on fixed data."""
    rng = np.random.default_rng(seed)
    B, T, I, H, O = 6, 5, 3, 12, 2
    model = cbptt.RNN(I, H, O, cell="lstm", seed=seed, dtype=np.float64)
    X, Y = rng.standard_normal((B, T, I)), rng.standard_normal((B, T, O))
    cbptt.set_settings(threads=threads, adaptive=adaptive, team_min_flops=0)
    engine = _engine.Engine("lstm", 1, I, H, O, B, T, np.float64, training=training)
    grads = np.zeros_like(model.params)
    out = np.zeros((B, T, O))
    for _ in range(calls):
        if training:
            loss = engine.loss_and_grad(X, Y, model.params, grads)
        else:
            engine.predict(X, model.params, out)
            loss = 0.0
    return engine, loss, grads.copy(), out.copy()


@pytest.mark.parametrize("knobs, words", [
    (dict(threads=0), "threads: expected None or an integer >= 1, got 0"),
    (dict(threads=2.0), "threads"),
    (dict(threads=True), "threads"),
    (dict(adaptive="yes"), "adaptive: expected True or False"),
])
def test_bad_thread_settings_are_refused(knobs, words):
    with pytest.raises(ValueError, match=words):
        cbptt.set_settings(**knobs)
    assert cbptt.get_settings()["threads"] is None


def test_threads_fixes_the_parts_and_says_so(two_blas_threads):
    for threads in (1, 2, 3):
        engine = lstm_call(threads=threads)[0]
        assert engine.last_parts == threads
        assert engine.thread_choice == {"threads": threads, "policy": "user setting",
                                        "reason": f"cbptt.settings(threads={threads})"}
    assert lstm_call(threads=1)[0].plan["one_blas_thread"]


@pytest.mark.parametrize("training", [True, False])
def test_the_adaptive_choice_keeps_the_bits_of_the_thread_count(two_blas_threads, fake_clock,
                                                                 training):
    fixed = {t: lstm_call(threads=t, training=training) for t in (1, 2)}
    # the team slower than one thread (another process on the other core): one thread kept
    fake_clock[TEAM] += [0.001, 0.030, 0.030]
    fake_clock[ONE] += [0.020, 0.020, 0.020]
    engine, loss, grads, out = lstm_call(calls=6, training=training)
    choice = engine.thread_choice
    assert choice["policy"] == "adaptive" and choice["choice"] == ONE
    assert engine.last_parts == 1 and choice["threads"] == 1
    assert choice["one_thread_calls"] == 3 and choice["team_calls"] == 3
    _, loss2, grads2, out2 = fixed[2]
    assert loss == loss2 and np.array_equal(grads, grads2) and np.array_equal(out, out2)
    # one thread as a thread count is another split: equal to rounding only
    np.testing.assert_allclose(grads, fixed[1][2], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out, fixed[1][3], rtol=1e-12, atol=1e-15)


@pytest.fixture
def machine(monkeypatch):
    """Decide the process's policy anew from fake facts (restored after the test)."""
    monkeypatch.setattr(thread_policy, "_facts", None)
    monkeypatch.setattr(thread_policy, "_decided", None)
    return lambda **changes: monkeypatch.setattr(thread_policy, "read_facts",
                                                 lambda: facts(**changes))


def test_an_oversubscribed_process_starts_on_one_thread(two_blas_threads, machine):
    machine(runnable=4)
    team = lstm_call(threads=2)
    engine, loss, grads, _ = lstm_call(calls=3)
    choice = engine.thread_choice
    assert choice["policy"] == "oversubscribed" and choice["choice"] == ONE
    assert "4 threads runnable" in choice["reason"] and engine.last_parts == 1
    assert choice["probings"] == 0 and choice["one_thread_calls"] == 3
    assert loss == team[1] and np.array_equal(grads, team[2])


def test_info_says_the_policy_and_why(capsys, machine):
    machine(local_ranks=4, runnable=2)
    out = run_main(capsys, "info")[1]
    section = out[out.index("threads:\n"):]
    assert "  policy: MPI local ranks\n" in section and "  threads: 1\n" in section
    assert "4 MPI ranks on this node x 2 threads > 2 cores" in section
    assert "  mpi_local_ranks: 4\n" in section and "  runnable: 2\n" in section
    with cbptt.settings(threads=3):
        record = cbptt.show_config(mode="dicts")["threads"]
    assert (record["threads"], record["policy"]) == (3, "user setting")


# -- MPI ranks: one BLAS thread each, said once -----------------------------------------------

@pytest.fixture
def blas_setter(monkeypatch):
    """A fake BLAS thread count (2) that one_thread_per_rank may set; returns it."""
    count = {"threads": 2}
    monkeypatch.setattr(_threads, "blas_threads", lambda: count["threads"])
    monkeypatch.setattr(_threads, "set_blas_threads",
                        lambda n: count.update(threads=n) or True)
    monkeypatch.setattr(thread_policy, "affinity_cores", lambda: 2)
    monkeypatch.setattr(thread_policy, "_ranks_said", False)
    monkeypatch.setattr(thread_policy, "_decided", thread_policy._decided)
    monkeypatch.setattr(thread_policy, "_facts", thread_policy._facts)
    return count


@pytest.mark.parametrize("environ, threads, ranks, said", [
    ({"MPI_LOCALNRANKS": "2"}, None, 2, True),         # 2 ranks x 2 threads on 2 cores
    ({}, None, 2, True),                               # the launcher does not say: one each
    ({"MPI_LOCALNRANKS": "1"}, None, 2, False),        # one rank a node: room for both
    ({"OPENBLAS_NUM_THREADS": "2"}, None, 2, False),   # the user's count wins
    ({}, 2, 2, False),                                 # and so does threads=N
    ({}, None, 1, False),                              # one process: nothing to do
])
def test_mpi_ranks_get_one_blas_thread_unless_told(blas_setter, environ, threads, ranks,
                                                    said):
    lines = []
    with cbptt.settings(threads=threads):
        line = thread_policy.one_thread_per_rank(ranks, say=lines.append, environ=environ)
    assert (line is not None, blas_setter["threads"]) == (said, 1 if said else 2)
    assert lines == ([line] if said else [])
    if said:
        assert line.startswith(f"cbptt: {ranks} MPI ranks: BLAS and cbptt's calls at one "
                               "thread per rank (was 2)")
        assert thread_policy.policy().policy == "MPI local ranks"
        assert thread_policy.one_thread_per_rank(ranks, say=lines.append,
                                                 environ=environ) is None
        assert len(lines) == 1                          # said once


RANK_SCRIPT = """
import json, os, warnings
warnings.simplefilter("always")
import cbptt
from cbptt import _threads, thread_policy
before = _threads.blas_threads()
with warnings.catch_warnings(record=True) as caught:
    parallel = cbptt.DataParallel(cbptt.ManyToMany(cbptt.RNN(2, 4, 1, seed=0)))
with open(f"rank{parallel.rank}.json", "w") as out:
    json.dump({"before": before, "after": _threads.blas_threads(),
               "cores": thread_policy.affinity_cores(),
               "on_node": thread_policy.local_ranks(os.environ),
               "said": [str(w.message) for w in caught]}, out)
"""


@needs_mpi
def test_data_parallel_under_mpiexec_runs_one_blas_thread_per_rank(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in thread_policy.USER_THREAD_VARIABLES}
    proc = subprocess.run([find_mpiexec(), "-n", "2", sys.executable, "-c", RANK_SCRIPT],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for rank in ranks:
        crowded = rank["before"] > 1 and (rank["on_node"] or 2) * rank["before"] > rank["cores"]
        assert rank["after"] == (1 if crowded else rank["before"])
    said = [line for rank in ranks for line in rank["said"]]
    assert said == ([f"cbptt: 2 MPI ranks: BLAS and cbptt's calls at one thread per rank (was "
                     f"{ranks[0]['before']}); set OPENBLAS_NUM_THREADS or "
                     "cbptt.settings(threads=N) to choose"] if crowded else [])


@needs_mpi
def test_cbptt_train_under_mpiexec_says_it_once_on_stderr(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in thread_policy.USER_THREAD_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    (tmp_path / "wave.csv").write_text("a\n" + "".join(f"{np.sin(i / 5):.4f}\n"
                                                       for i in range(80)))
    command = [find_mpiexec(), "-n", "2", sys.executable, "-m", "cbptt", "train", "wave.csv",
               "--hidden", "4", "--epochs", "1", "--batch", "4", "--window", "6",
               "--no-progress", "--out", "run"]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    # OpenBLAS's own count is every core: two ranks of it crowd any machine of two or more,
    # where cbptt can set BLAS's threads (CBPTT_NO_THREAD_CONTROL=1 or another BLAS: it cannot,
    # and says nothing)
    crowded = (os.cpu_count() or 1) > 1 and _engine.local_thread_control()
    assert len(lines) == (1 if crowded else 0), lines
    assert all(line.startswith("cbptt: 2 MPI ranks: BLAS and cbptt's calls at one thread")
               for line in lines)


def test_a_bounded_plan_counts_and_caps_the_users_threads():
    from cbptt import bounded

    with cbptt.settings(threads=3, team=1):
        assert bounded.team_parts(8) == 3 and bounded.team_parts(2) == 2
        with bounded.capped_team(2):
            assert (cbptt.get_settings()["threads"], cbptt.get_settings()["team"]) == (2, 1)
    with bounded.capped_team(2):
        assert cbptt.get_settings()["threads"] is None


def test_an_encoders_forward_and_backward_count_as_one_call():
    choice = ThreadChoice()
    for _ in range(5):                  # warm-up, probes: each a forward then its backward
        threads = choice.threads(2)
        choice.record(threads, threads, 0.004 if threads > 1 else 0.001, first_half=True)
        assert choice.threads(2) == threads          # the backward runs where its forward ran
        choice.record(threads, threads, 0.004 if threads > 1 else 0.009)
    assert choice.choice == TEAM and choice.calls == 5     # 8 ms a call against 10 ms
    choice.record(2, 1, 0.001, first_half=True)            # a busy team in the forward
    choice.record(2, 2, 0.001)
    assert choice.busy == 1 and choice.calls == 6


def test_an_encoder_decoder_steps_to_the_same_bits_whichever_threads_run_it(
        two_blas_threads, fake_clock):
    """Seq2Seq: the encoder's encode and backward_from_final on the path its choice takes;
    the team slower for the first engine calls, faster after: both paths run."""
    rng = np.random.default_rng(3)
    X, Y_in, Y_out = (rng.standard_normal(shape) for shape in ((6, 5, 2), (6, 4, 3), (6, 4, 3)))

    def train(**knobs):
        cbptt.set_settings(team_min_flops=0, **knobs)
        s2s = cbptt.Seq2Seq(cbptt.RNN(2, 8, None, cell="gru", seed=0),
                            cbptt.RNN(3, 8, 3, cell="gru", seed=1))
        losses = [s2s.step(X, Y_in, Y_out) for _ in range(8)]
        return s2s, losses, np.concatenate([s2s.encoder.params, s2s.decoder.params])

    fixed = train(threads=2)
    fake_clock[TEAM] += [0.001] + [0.030] * 4 + [0.001] * 30
    fake_clock[ONE] += [0.020] * 30
    s2s, losses, params = train(threads=None, adaptive=True)
    choices = [engine.thread_choice for engine in s2s._engines.values()]
    assert all(c["one_thread_calls"] == 2 and c["team_calls"] == 6 for c in choices)
    # the encoder's calls are two halves (encode, backward_from_final): 2 x 20 ms one thread
    assert sorted(c["reason"].split(", ")[1] for c in choices) == [
        "20 ms on one thread (probe 1)", "40 ms on one thread (probe 1)"]
    assert losses == fixed[1] and np.array_equal(params, fixed[2])


def test_calls_whose_parts_are_in_the_result_stay_on_the_team(two_blas_threads):
    cbptt.set_settings(team_column_flops=0)          # each step's products split by columns
    engine = lstm_call(calls=3)[0]
    assert engine.last_parts == 2 and engine.thread_choice["policy"] == "default"
    assert "split by columns" in engine.thread_choice["reason"]
    small = _engine.Engine("tanh", 1, 2, 4, 1, 1, 3, np.float64)
    assert small.thread_choice == {"threads": 1, "policy": "default", "reason": (
        "one thread: the call does not qualify for the team (batch, size, settings)")}
