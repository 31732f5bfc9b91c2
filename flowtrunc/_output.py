"""A comparison run on disk: chunks written atomically as they finish, resumable.

Layout of the output directory:
`config.json` (the resolved settings, plus `provenance`: data hash and versions),
`chunks/seeds_SSSSSSSS-EEEEEEEE.npz` (per-seed metrics of seeds S..E-1, and the seconds
the chunk took), `trajectories.npz` (the first `keep` seeds), then `seeds.npz` (all
per-seed metrics), `summary.json` and `figures/` once every seed is done. `.lock` marks
a run in progress.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import threading
import time

import jax
import numpy as np

from ._compare import _enable_precision, check_fits_in_memory, resolve_data, run_chunk
from ._config import DEVICE_CHOSEN, CompareConfig

CONFIG, SEEDS, TRAJECTORIES, SUMMARY, LOCK = (
    "config.json",
    "seeds.npz",
    "trajectories.npz",
    "summary.json",
    ".lock",
)
_CHUNK = re.compile(r"seeds_(\d{8,})-(\d{8,})\.npz")
# settings a resumed run may change: results do not depend on them
RESUMABLE_CHANGES = ("chunk_size",)


class OutputError(ValueError):
    """A run's files cannot be written or read; the message says which and what to do."""


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


# ---------------------------------------------------------------- writing files


def write_atomic(path: str, write) -> None:
    """Writes through a temporary file in the same folder, then renames it into place.
    On failure (disk full, no permission) the temporary file is removed."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        reason = "the disk is full" if error.errno == errno.ENOSPC else error.strerror or str(error)
        raise OutputError(
            f"could not write {path!r}: {reason}. Finished chunks are kept; free space (or fix "
            "the permission) and continue with the same command plus --resume."
        ) from error


def json_safe(value):
    """`value` with every non-finite float written as the string "inf", "-inf" or "nan"
    (JSON has no such numbers; a summary must be writable whatever the results are)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_json(path: str, value: dict) -> None:
    def write(temporary):
        with open(temporary, "w") as f:
            json.dump(json_safe(value), f, indent=2, sort_keys=True, allow_nan=False)
            f.write("\n")

    write_atomic(path, write)


def _save_npz(path: str, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def provenance(config: CompareConfig) -> dict:
    """What else a run's results depend on: the data file's content and the versions."""
    from . import __version__

    digest = data_std = None
    if config.data is not None:
        with open(config.data, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        with np.load(config.data) as archive:
            data_std = float(np.max(np.std(np.asarray(archive["x"], np.float64), axis=0)))
    versions = {"flowtrunc": __version__, "jax": jax.__version__, "python": sys.version.split()[0]}
    return {"data_sha256": digest, "data_std": data_std, "versions": versions}


def read_config(out_dir: str) -> tuple[CompareConfig, dict]:
    """The settings and provenance saved in `out_dir/config.json`, with a clear error when
    the file is missing or damaged."""
    path = os.path.join(out_dir, CONFIG)
    try:
        with open(path) as f:
            saved = json.load(f)
        origin = saved.pop("provenance", {}) if isinstance(saved, dict) else {}
        return CompareConfig.from_dict(saved), origin
    except FileNotFoundError:
        raise OutputError(f"{out_dir!r} holds no {CONFIG}; it is not a flowtrunc run.") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as error:
        raise OutputError(
            f"{path!r} is damaged ({error}); restore it, or start again in a new --out directory."
        ) from error


# ---------------------------------------------------------------- the directory


def _check_out(out_dir) -> str:
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir).strip():
        raise ValueError(
            f"--out {out_dir!r} is empty (an unset shell variable?); give the path of a new or "
            "empty directory, e.g. --out runs/first (nothing was written)."
        )
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir!r} is a file; give a directory.")
    return out_dir


def prepare_directory(out_dir: str, config: CompareConfig, resume: bool) -> bool:
    """Checks that `out_dir` may receive this run (nothing is overwritten) and creates it
    for a new run. Returns True when this call created something (a new run)."""
    out_dir = _check_out(out_dir)
    origin = provenance(config)
    if resume:
        if not os.path.isfile(os.path.join(out_dir, CONFIG)):
            raise ValueError(f"--resume: {out_dir!r} holds no {CONFIG}; there is no run to resume.")
        saved, saved_origin = read_config(out_dir)
        wanted, have = config.to_dict(), saved.to_dict()
        differing = sorted(k for k in wanted if wanted[k] != have[k] and k not in RESUMABLE_CHANGES)
        if differing:
            details = ", ".join(f"{k}: saved {have[k]!r} vs now {wanted[k]!r}" for k in differing)
            raise ValueError(
                f"--resume: {out_dir!r} was made with another config ({details}); rerun with "
                "the same options, or use a new --out directory."
            )
        if saved_origin.get("data_sha256") != origin["data_sha256"]:
            raise ValueError(
                f"--resume: the data file {config.data!r} changed since the run in {out_dir!r} "
                f"began (sha256 {saved_origin.get('data_sha256')} then, {origin['data_sha256']} "
                "now); restore the file, or start a new --out directory."
            )
        if saved_origin.get("versions") != origin["versions"]:
            print(
                f"flowtrunc: note: versions differ from the run's start "
                f"({saved_origin.get('versions')} then, {origin['versions']} now).",
                file=sys.stderr,
            )
        return False
    if _never_started(out_dir):
        print(
            f"flowtrunc: note: {out_dir!r} holds only the settings of a run that stopped before "
            "its first chunk; starting it afresh.",
            file=sys.stderr,
        )
        shutil.rmtree(out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if os.path.isfile(os.path.join(out_dir, CONFIG)):
            raise ValueError(
                f"{out_dir!r} already holds a flowtrunc run; pass --resume to continue it, "
                "or choose a new --out directory."
            )
        raise ValueError(
            f"{out_dir!r} is not empty and holds something else; choose an empty or new "
            "--out directory (nothing was written)."
        )
    try:
        os.makedirs(os.path.join(out_dir, "chunks"), exist_ok=True)
    except OSError as error:
        raise OutputError(
            f"--out {out_dir!r} cannot be created ({error.strerror}); choose a directory you can write to."
        ) from error
    write_json(os.path.join(out_dir, CONFIG), {**config.to_dict(), "provenance": origin})
    return True


def _never_started(out_dir: str) -> bool:
    """A run directory that a killed run left before its first chunk: `config.json`, an
    empty `chunks/`, at most a lock of a dead process and temporary files; nothing computed."""
    if not os.path.isdir(out_dir):
        return False
    names = {name for name in os.listdir(out_dir) if ".tmp-" not in name}
    if CONFIG not in names or not names <= {CONFIG, "chunks", LOCK}:
        return False
    chunk_dir = os.path.join(out_dir, "chunks")
    if os.path.exists(chunk_dir) and (not os.path.isdir(chunk_dir) or os.listdir(chunk_dir)):
        return False
    lock = RunLock(out_dir)
    return not (os.path.exists(lock.path) and lock._holder_alive())


class RunLock:
    """`out_dir/.lock` holds the pid of the process writing the run; a second process is
    refused. A lock left by a process that died on this host is taken over."""

    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, LOCK)

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._holder_alive():
                    raise OutputError(
                        f"another flowtrunc process ({self._read()}) is writing to "
                        f"{os.path.dirname(self.path)!r}; wait for it to finish. If it is gone, "
                        f"delete {self.path!r} and resume."
                    ) from None
                os.remove(self.path)  # stale: its process died
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()}\n")
            return self
        raise OutputError(f"could not take the lock {self.path!r}; delete it and resume.")

    def __exit__(self, *exc):
        if os.path.exists(self.path):
            os.remove(self.path)

    def _read(self) -> str:
        try:
            with open(self.path) as f:
                return f.read().strip()
        except OSError:
            return ""

    def _holder_alive(self) -> bool:
        parts = self._read().split()
        if len(parts) != 2 or parts[0] != socket.gethostname():
            return len(parts) == 2  # another host's lock: assume alive
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError):
            return True
        return True


def _remove_stray_temporaries(out_dir: str) -> None:
    for folder in (out_dir, os.path.join(out_dir, "chunks")):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if ".tmp-" in name:
                    os.remove(os.path.join(folder, name))


# ---------------------------------------------------------------- chunks


def _chunk_name(start: int, stop: int) -> str:
    return f"seeds_{start:08d}-{stop:08d}.npz"


def finished_ranges(out_dir: str) -> list[tuple[int, int]]:
    """Seed ranges `[start, stop)` of the chunks already written, sorted; overlapping
    ranges (a chunk file copied in from elsewhere) are an error naming both files."""
    chunk_dir = os.path.join(out_dir, "chunks")
    found = [_CHUNK.fullmatch(name) for name in os.listdir(chunk_dir)] if os.path.isdir(chunk_dir) else []
    ranges = sorted((int(m[1]), int(m[2])) for m in found if m)
    for (a, b), (c, d) in zip(ranges, ranges[1:]):
        if c < b:
            raise OutputError(
                f"chunk files {_chunk_name(a, b)!r} and {_chunk_name(c, d)!r} in {chunk_dir!r} hold "
                "overlapping seeds; one was not written by this run. Delete the one you did not "
                "expect (or both) and resume to recompute the seeds."
            )
    return ranges


def run_fingerprint(out_dir: str) -> str:
    """What a chunk's numbers depend on: the run's settings (those a resume may change
    excluded) and its data file's content, from `config.json`."""
    config, origin = read_config(out_dir)
    settings = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    text = json.dumps({"settings": settings, "data_sha256": origin.get("data_sha256")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def check_chunks(out_dir: str) -> list[tuple[int, int]]:
    """Every chunk file of a run belongs to it: same fingerprint, seeds inside the run.
    Returns the finished ranges."""
    ranges = finished_ranges(out_dir)
    if not ranges:
        return ranges
    config, _ = read_config(out_dir)
    expected = run_fingerprint(out_dir)
    for start, stop in ranges:
        path = os.path.join(out_dir, "chunks", _chunk_name(start, stop))
        if stop > config.seeds or start >= stop:
            raise OutputError(
                f"chunk file {path!r} holds seeds {start}..{stop - 1}, outside this run's "
                f"0..{config.seeds - 1}; it belongs to another run. Delete it and resume."
            )
        try:
            with np.load(path) as archive:
                found = str(archive["fingerprint"]) if "fingerprint" in archive.files else None
        except Exception as error:
            raise OutputError(
                f"chunk file {path!r} is damaged ({error}); delete it and resume to recompute it."
            ) from error
        if found != expected:
            raise OutputError(
                f"chunk file {path!r} was computed with other settings or data than this run's "
                f"config.json ({'no fingerprint' if found is None else 'fingerprint differs'}); its "
                "numbers would be mixed into the results. Delete it (or restore the original "
                "config.json) and resume to recompute those seeds."
            )
    path = os.path.join(out_dir, TRAJECTORIES)
    if os.path.isfile(path):
        try:
            with np.load(path) as archive:
                found = str(archive["fingerprint"]) if "fingerprint" in archive.files else None
        except Exception as error:
            raise OutputError(f"{path!r} is damaged ({error}); delete it and resume.") from error
        if found != expected:
            raise OutputError(
                f"{path!r} was computed with other settings or data than this run's config.json; "
                "delete it and the chunk of seeds 0.. (or restore the original config.json) and "
                "resume to recompute them."
            )
    return ranges


def pending_chunks(num_seeds: int, chunk_size: int, done: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The seed ranges still to compute, in chunks of at most `chunk_size` (the gaps
    between finished ranges, so a resume may use another chunk size)."""
    return _gaps(_covered(num_seeds, done), chunk_size)


def _gaps(covered: np.ndarray, chunk_size: int) -> list[tuple[int, int]]:
    chunks, seed, num_seeds = [], 0, len(covered)
    while seed < num_seeds:
        if covered[seed]:
            seed += 1
            continue
        stop = seed
        while stop < num_seeds and not covered[stop] and stop - seed < chunk_size:
            stop += 1
        chunks.append((seed, stop))
        seed = stop
    return chunks


def load_metrics(out_dir: str) -> tuple[dict, float]:
    """All per-seed metrics of a run from its chunk files, in seed order, and the seconds
    the chunks took in all."""
    parts, seconds = [], 0.0
    ranges = check_chunks(out_dir)
    if not ranges:
        raise OutputError(f"{out_dir!r} holds no finished chunk yet; run (or --resume) it first.")
    for start, stop in ranges:
        path = os.path.join(out_dir, "chunks", _chunk_name(start, stop))
        try:
            with np.load(path) as archive:
                part = {key: archive[key] for key in archive.files}
        except Exception as error:
            raise OutputError(
                f"chunk file {path!r} is damaged ({error}); delete it and resume to recompute it."
            ) from error
        seconds += float(part.pop("chunk_seconds", 0.0))
        part.pop("fingerprint", None)
        if part.keys() != parts[0].keys() if parts else False:
            raise OutputError(
                f"chunk file {path!r} holds metrics {sorted(part)} unlike the others; delete it and resume."
            )
        parts.append(part)
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}, seconds


class Progress:
    """One line on stderr: compilation as its own phase, then seeds done with an ETA. One
    instance may span several runs (a sweep's points); `label` prefixes the line."""

    def __init__(self, total_seeds: int, stream=None, enabled: bool = True):
        self.total, self.stream, self.enabled = total_seeds, stream or sys.stderr, enabled
        self.done, self.label = 0, ""
        self.steady_seconds, self.steady_seeds = 0.0, 0

    def skip(self, seeds: int) -> None:
        """Counts seeds finished before (a resumed run)."""
        self.done += seeds

    def compiling(self) -> None:
        self._write("first chunk: compiling the comparison program if its settings are new...")

    def chunk_done(self, seeds: int, seconds: float, first: bool) -> None:
        self.done += seeds
        if not first:  # a first chunk may include compilation: no basis for the rate
            self.steady_seconds += seconds
            self.steady_seeds += seeds
        width, filled = 30, int(30 * self.done / self.total)
        if self.steady_seeds:
            eta = (self.total - self.done) * self.steady_seconds / self.steady_seeds
            rate = f", ETA {eta:6.1f} s"
        else:
            rate = f", first chunk (incl. compiling) in {seconds:.1f} s" if first else ""
        self._write(f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} seeds{rate}")
        if self.done == self.total:
            self._write("", end="\n")

    def _write(self, text: str, end: str = "") -> None:
        if self.enabled:
            text = f"{self.label}{text}" if text else text
            self.stream.write(f"\r{text:<79}{end}" if text else end)
            self.stream.flush()


def run_compare(
    config: CompareConfig,
    out_dir: str,
    *,
    resume: bool = False,
    max_chunks: int | None = None,
    progress: "bool | Progress" = True,
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
) -> bool:
    """Runs (or continues) a comparison into `out_dir`. Each finished chunk is written
    atomically; with `resume`, finished seeds are skipped (the chunk size may change).
    `max_chunks` stops after that many new chunks (a time-boxed run). Returns True when the
    run is complete (then `seeds.npz`, `summary.json` and the figures exist). A new run
    that fails before its first chunk is written leaves no directory behind. `progress`:
    show a progress line, or a `Progress` to continue (a sweep's one line over points).
    Settings left to the device (`precision`, `chunk_size` unset) keep on resume the values
    the run began with. A chunk that takes longer than `stall_timeout` seconds stops the run
    with `StalledRun` (None or 0: no limit)."""
    config = settle_device_settings(config, out_dir, resume)
    check_fits_in_memory(config)
    _enable_precision(config)
    config, user_data = resolve_data(config)
    if config.chunk_size < min(config.keep, config.seeds) and progress and jax.process_index() == 0:
        print(
            f"keeping the trajectories of {config.chunk_size} seeds, not --keep {config.keep}: they "
            f"come from the first chunk (--chunk-size {config.chunk_size}); raise --chunk-size to keep more.",
            file=sys.stderr,
        )
    if jax.process_index() != 0:  # in a multi-process run only process 0 touches the files
        covered = _tell_others(True, None, config.seeds)
        return _run_chunks(
            config, user_data, os.path.abspath(out_dir), max_chunks, False, covered, stall_timeout
        )
    started = created = False
    try:
        created = prepare_directory(out_dir, config, resume)
        out_dir = os.path.abspath(out_dir)
        with RunLock(out_dir):
            _remove_stray_temporaries(out_dir)
            covered = _tell_others(True, _covered(config.seeds, check_chunks(out_dir)), config.seeds)
            started = True
            return _run_chunks(config, user_data, out_dir, max_chunks, progress, covered, stall_timeout)
    except BaseException:
        if not started:
            _tell_others(False)
        if created and not finished_ranges(out_dir):
            shutil.rmtree(out_dir, ignore_errors=True)  # nothing worth keeping
        raise


def settle_device_settings(config: CompareConfig, out_dir: str, resume: bool) -> CompareConfig:
    """`config.on_device`, taking the unset settings of a resumed run from its `config.json`."""
    saved = None
    if resume and any(getattr(config, name) is None for name in DEVICE_CHOSEN):
        path = os.path.join(os.path.abspath(out_dir), CONFIG)
        saved = read_config(out_dir)[0].to_dict() if os.path.isfile(path) else None
    return config.on_device(saved)


def _covered(num_seeds: int, done: list[tuple[int, int]]) -> np.ndarray:
    covered = np.zeros(num_seeds, bool)
    for start, stop in done:
        covered[start:stop] = True
    return covered


def _tell_others(ok: bool, covered: np.ndarray | None = None, num_seeds: int = 0):
    """Process 0 tells the others whether the run starts and which seeds are done (so a
    refused start stops every process instead of leaving them waiting in a collective).
    Returns the seeds already done, as every process then sees them."""
    if jax.process_count() == 1:
        return covered
    from jax.experimental import multihost_utils

    status = multihost_utils.broadcast_one_to_all(np.int32(ok))
    if not int(status):
        if jax.process_index() == 0:
            return covered  # process 0 raises its own error
        raise OutputError("process 0 refused the run (see its message); nothing was computed here.")
    mask = covered if covered is not None else np.zeros(num_seeds, bool)
    return np.asarray(multihost_utils.broadcast_one_to_all(mask.astype(np.int8))).astype(bool)


def _run_chunks(config, user_data, out_dir, max_chunks, progress, covered, stall_timeout) -> bool:
    leader = jax.process_index() == 0
    todo = _gaps(covered, config.chunk_size)
    bar = progress if isinstance(progress, Progress) else Progress(config.seeds, enabled=progress and leader)
    bar.skip(config.seeds - sum(stop - start for start, stop in todo))
    fingerprint = run_fingerprint(out_dir) if leader else None
    for count, (start, stop) in enumerate(todo):
        if max_chunks is not None and count >= max_chunks:
            return False
        if count == 0:
            bar.compiling()
        began = time.perf_counter()
        seeds = np.arange(start, stop)
        metrics, trajectories = watched(
            lambda: run_chunk(config, user_data, seeds, pad_to=config.chunk_size),
            stall_timeout,
            f"the chunk of seeds {start}..{stop - 1}",
        )
        seconds = time.perf_counter() - began
        if leader:
            if start == 0 and config.keep > 0:
                kept = {name: value[: config.keep] for name, value in trajectories.items()}
                kept["fingerprint"] = np.asarray(fingerprint)
                write_atomic(os.path.join(out_dir, TRAJECTORIES), lambda p: _save_npz(p, kept))
            path = os.path.join(out_dir, "chunks", _chunk_name(start, stop))
            stamp = {"chunk_seconds": np.float64(seconds), "fingerprint": np.asarray(fingerprint)}
            write_atomic(path, lambda p: _save_npz(p, {**metrics, **stamp}))
        bar.chunk_done(stop - start, seconds, first=count == 0)
    if leader:
        finish(out_dir)
    return True


def finish(out_dir: str) -> None:
    """Merges the chunks into `seeds.npz`, writes `summary.json` and the figures."""
    from ._report import write_report

    metrics, _ = load_metrics(out_dir)
    write_atomic(os.path.join(out_dir, SEEDS), lambda p: _save_npz(p, metrics))
    write_report(out_dir)
