"""A chunk watched by the clock: stopped with a clear error when it stalls, and Ctrl-C
handled at once while XLA computes in a worker thread."""

import threading
import time

# seconds a chunk may go without finishing before the run stops (compilation included)
DEFAULT_STALL_TIMEOUT = 1800.0


class StalledRun(RuntimeError):
    """A chunk made no progress within the stall timeout; the run was stopped."""


# one event per chunk thread left behind, set when its work ends. Not `Thread.is_alive()`:
# in Python 3.11 a `join` interrupted by Ctrl-C marks a thread that still runs as stopped.
_abandoned: list[threading.Event] = []


def abandoned_work() -> bool:
    """Whether a stalled or interrupted chunk is still running in a thread (the process
    must then end without waiting for it: `os._exit`)."""
    return not all(ended.is_set() for ended in _abandoned)


def watched(work, timeout: float | None, what: str):
    """`work()` in a worker thread; raises `StalledRun` if it has not finished within
    `timeout` seconds (None or 0: wait as long as it takes). The main thread stays free, so
    Ctrl-C interrupts at once. A stalled computation cannot be cancelled inside XLA: the
    thread is left behind and `abandoned_work()` says so."""
    if not timeout:
        return work()
    box, ended = {}, threading.Event()

    def run():
        try:
            box["value"] = work()
        except BaseException as error:  # handed to the caller
            box["error"] = error
        finally:
            ended.set()

    thread = threading.Thread(target=run, name="flowtrunc-chunk", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:  # short waits: a Ctrl-C the kernel hands to another thread is handled within 0.2 s
        while not (finished := ended.wait(min(0.2, max(deadline - time.monotonic(), 0.0)))):
            if time.monotonic() >= deadline:
                break
    finally:
        if not ended.is_set():
            _abandoned.append(ended)
    if not finished:
        raise StalledRun(
            f"{what} made no progress for {timeout:g} s (compilation included) and was stopped. "
            "If the problem is just large, raise --stall-timeout (0 waits forever) or lower "
            "--chunk-size; finished chunks are kept, continue with the same command plus --resume."
        )
    if "error" in box:
        raise box["error"]
    return box["value"]
