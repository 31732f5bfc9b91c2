"""Chunk files: which seeds are done, whether each file belongs to this run, and the
per-seed metrics read back in seed order."""

import hashlib
import json
import os
import re

import numpy as np

from .files import RESUMABLE_CHANGES, TRAJECTORIES, OutputError, read_config

_CHUNK = re.compile(r"seeds_(\d{8,})-(\d{8,})\.npz")


def chunk_name(start: int, stop: int) -> str:
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
                f"chunk files {chunk_name(a, b)!r} and {chunk_name(c, d)!r} in {chunk_dir!r} hold "
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
        path = os.path.join(out_dir, "chunks", chunk_name(start, stop))
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
    return gaps(covered_seeds(num_seeds, done), chunk_size)


def gaps(covered: np.ndarray, chunk_size: int) -> list[tuple[int, int]]:
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
        path = os.path.join(out_dir, "chunks", chunk_name(start, stop))
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


def covered_seeds(num_seeds: int, done: list[tuple[int, int]]) -> np.ndarray:
    covered = np.zeros(num_seeds, bool)
    for start, stop in done:
        covered[start:stop] = True
    return covered
