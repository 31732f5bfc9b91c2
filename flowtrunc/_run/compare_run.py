"""`run_compare`: a comparison run on disk, chunk by chunk, resumable; in a
multi-process run process 0 writes every file."""

import os
import shutil
import sys

import jax
import numpy as np

from .._experiment.comparison import check_fits_in_memory, chunk_results, kept_trajectories, resolve_data
from .._experiment.config import DEVICE_CHOSEN, CompareConfig
from .chunks import (
    check_chunks,
    chunk_name,
    covered_seeds,
    finished_ranges,
    gaps,
    load_metrics,
    run_fingerprint,
)
from .directory import RunLock, prepare_directory, remove_stray_temporaries
from .files import CONFIG, SEEDS, TRAJECTORIES, OutputError, read_config, save_npz, write_atomic
from .progress import Progress
from .watchdog import DEFAULT_STALL_TIMEOUT, watched


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
    config, user_data = resolve_data(config)
    if config.chunk_size < min(config.keep, config.seeds) and progress and jax.process_index() == 0:
        print(
            f"keeping the trajectories of {config.chunk_size} seeds, not --keep {config.keep}: they "
            f"come from the first chunk (--chunk-size {config.chunk_size}); raise --chunk-size to keep more.",
            file=sys.stderr,
        )
    if jax.process_index() != 0:  # in a multi-process run only process 0 touches the files
        covered = tell_others(True, None, config.seeds)
        return _run_chunks(
            config, user_data, os.path.abspath(out_dir), max_chunks, False, covered, stall_timeout
        )
    started = created = False
    try:
        created = prepare_directory(out_dir, config, resume)
        out_dir = os.path.abspath(out_dir)
        with RunLock(out_dir):
            remove_stray_temporaries(out_dir)
            covered = tell_others(True, covered_seeds(config.seeds, check_chunks(out_dir)), config.seeds)
            started = True
            return _run_chunks(config, user_data, out_dir, max_chunks, progress, covered, stall_timeout)
    except BaseException:
        if not started:
            tell_others(False)
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


def tell_others(ok: bool, covered: np.ndarray | None = None, num_seeds: int = 0):
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
    todo = gaps(covered, config.chunk_size)
    bar = progress if isinstance(progress, Progress) else Progress(config.seeds, enabled=progress and leader)
    bar.skip(config.seeds - sum(stop - start for start, stop in todo))
    fingerprint = run_fingerprint(out_dir) if leader else None
    chunks = [np.arange(start, stop) for start, stop in todo[:max_chunks]]
    if chunks:
        bar.compiling()

    def guard(compute, seeds):
        return watched(compute, stall_timeout, f"the chunk of seeds {seeds[0]}..{seeds[-1]}")

    for count, (seeds, metrics, trajectories, seconds) in enumerate(
        chunk_results(config, user_data, chunks, guard)
    ):
        start, stop = int(seeds[0]), int(seeds[-1]) + 1
        if leader:
            if start == 0 and config.keep > 0:
                kept = kept_trajectories(config, trajectories)
                kept["fingerprint"] = np.asarray(fingerprint)
                write_atomic(os.path.join(out_dir, TRAJECTORIES), lambda p: save_npz(p, kept))
            path = os.path.join(out_dir, "chunks", chunk_name(start, stop))
            stamp = {"chunk_seconds": np.float64(seconds), "fingerprint": np.asarray(fingerprint)}
            write_atomic(path, lambda p: save_npz(p, {**metrics, **stamp}))
        bar.chunk_done(stop - start, seconds, first=count == 0)
    if len(chunks) < len(todo):
        return False  # stopped after `max_chunks` new chunks
    if leader:
        finish(out_dir)
    return True


def finish(out_dir: str) -> None:
    """Merges the chunks into `seeds.npz`, writes `summary.json` and the figures."""
    from .report import write_report

    metrics, _ = load_metrics(out_dir)
    write_atomic(os.path.join(out_dir, SEEDS), lambda p: save_npz(p, metrics))
    write_report(out_dir)
