"""No run waits forever: a chunk without progress stops the run with a message and leaves
nothing behind, and a directory a killed run left before its first chunk does not block a
fresh run."""

import json
import os
import time

import pytest
from helpers import TINY

from flowtrunc import CompareConfig
from flowtrunc.internal import compare_run, comparison, directory, main, watchdog


def test_watched_work_that_stalls_is_reported_and_left_behind():
    with pytest.raises(watchdog.StalledRun, match=r"made no progress for 0.2 s.*--stall-timeout"):
        watchdog.watched(lambda: time.sleep(1.0), 0.2, "the sleeper")
    assert watchdog.abandoned_work()
    time.sleep(1.2)
    assert not watchdog.abandoned_work()
    assert watchdog.watched(lambda: 7, 5.0, "quick") == 7
    with pytest.raises(ZeroDivisionError):  # the work's own errors come through
        watchdog.watched(lambda: 1 / 0, 5.0, "failing")


@pytest.mark.parametrize("receiver", ["main thread", "worker thread"])
def test_ctrl_c_while_waiting_leaves_the_running_work_marked_as_abandoned(receiver):
    """A real SIGINT while the main thread waits on a chunk, delivered to the main thread or
    (as the kernel may do with a process-wide SIGINT) to the worker: it is handled at once,
    the work still runs, and `abandoned_work()` says so (Python 3.11's interrupted
    `Thread.join` marks the thread as stopped; the process then tore down under live XLA
    work)."""
    import signal
    import threading

    threads = {"main thread": threading.get_ident()}

    def work():
        threads["worker thread"] = threading.get_ident()
        time.sleep(3.0)

    # Python's own handler, as in a terminal (a shell that starts jobs in the background
    # hands them SIGINT ignored, and pytest's workers inherit that)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Timer(0.3, lambda: signal.pthread_kill(threads[receiver], signal.SIGINT)).start()
    began = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            watchdog.watched(work, 30.0, "the sleeper")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - began < 2.5  # well before the work ends
    assert watchdog.abandoned_work()
    time.sleep(3.0)
    assert not watchdog.abandoned_work()


def test_a_stalled_first_chunk_stops_the_run_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setattr(comparison, "run_chunk", lambda *args, **kwargs: time.sleep(1.5))
    out = tmp_path / "run"
    with pytest.raises(watchdog.StalledRun, match="seeds 0..3"):
        compare_run.run_compare(CompareConfig(**TINY), str(out), progress=False, stall_timeout=0.3)
    assert not out.exists()  # config.json, .lock and chunks/ removed: a fresh run can start
    time.sleep(1.5)


def _left_by_a_killed_run(out, lock_pid):
    (out / "chunks").mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(CompareConfig(**TINY).on_device().to_dict()))
    if lock_pid is not None:
        import socket

        (out / ".lock").write_text(f"{socket.gethostname()} {lock_pid}\n")


def test_a_directory_left_before_the_first_chunk_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    _left_by_a_killed_run(out, lock_pid=2**22 + 12345)  # no such process
    config = CompareConfig(**TINY).on_device()
    assert directory.prepare_directory(str(out), config, resume=False)
    assert "stopped before its first chunk; starting it afresh" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["chunks", "config.json"]


@pytest.mark.parametrize(
    "situation, message",
    [
        ("chunk", "already holds a flowtrunc run; pass --resume"),
        ("live lock", "already holds a flowtrunc run; pass --resume"),
        ("other file", "already holds a flowtrunc run; pass --resume"),
    ],
)
def test_a_directory_with_results_or_a_live_writer_is_not_taken_over(tmp_path, situation, message):
    out = tmp_path / "run"
    _left_by_a_killed_run(out, lock_pid=os.getpid() if situation == "live lock" else None)
    if situation == "chunk":
        (out / "chunks" / "seeds_00000000-00000004.npz").write_bytes(b"")
    if situation == "other file":
        (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=message):
        directory.prepare_directory(str(out), CompareConfig(**TINY).on_device(), resume=False)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--stall-timeout", "-1"], "--stall-timeout must be a number of seconds >= 0"),
        (["--stall-timeout", "nan"], "--stall-timeout must be a number of seconds >= 0"),
        (["--connect-timeout", "-1"], "--connect-timeout must be a positive number of seconds"),
        (
            ["--process-id", "5", "--num-processes", "2"],
            "--process-id 5 is out of range for --num-processes 2",
        ),
        (["--process-id", "-1", "--num-processes", "2"], "--process-id must be 0 or more"),
        (["--num-processes", "0"], "--num-processes must be at least 1"),
    ],
)
def test_run_flags_are_checked_before_anything_is_written(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main(["compare", "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_ctrl_c_during_compilation_exits_130_without_a_crash(tmp_path):
    """SIGINT while the first chunk compiles (a shape no other test compiles): the
    documented exit code and message, no segmentation fault, nothing left behind."""
    import signal

    from helpers import cli_process

    out = tmp_path / "run"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, "points": 13, "seeds": 4}.items()]
    process = cli_process(["compare", "--out", str(out), *flags])
    seen = ""
    while "compiling" not in seen:
        seen += process.stderr.read(1)
        assert process.poll() is None, seen
    time.sleep(2.0)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, seen + err
    assert "interrupted before the first chunk; nothing was kept" in err
    assert not out.exists()
