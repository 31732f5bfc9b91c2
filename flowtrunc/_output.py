"""A comparison run on disk: chunks written atomically as they finish, resumable.

Layout of the output directory:
`config.json` (fully resolved), `chunks/chunk_NNNNN.npz` (per-seed metrics of each
chunk), `trajectories.npz` (the first `keep` seeds), then `seeds.npz` (all per-seed
metrics), `summary.json` and `figures/*.png` once every chunk is done.
"""

import json
import math
import os
import sys
import time

import jax
import numpy as np

from ._compare import CompareConfig, _enable_precision, resolve_data, run_chunk, write_atomic, write_json

CONFIG, SEEDS, TRAJECTORIES, SUMMARY = "config.json", "seeds.npz", "trajectories.npz", "summary.json"


def _chunk_path(out_dir: str, index: int) -> str:
    return os.path.join(out_dir, "chunks", f"chunk_{index:05d}.npz")


def prepare_directory(out_dir: str, config: CompareConfig, resume: bool) -> None:
    """Checks that `out_dir` may receive this run; nothing is overwritten."""
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir).strip():
        raise ValueError(
            f"--out {out_dir!r} is empty (an unset shell variable?); give the path of a new or "
            "empty directory, e.g. --out runs/first (nothing was written)."
        )
    out_dir = os.path.abspath(out_dir)
    config_path = os.path.join(out_dir, CONFIG)
    exists = os.path.isdir(out_dir) and bool(os.listdir(out_dir))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir!r} is a file; give a directory.")
    if resume:
        if not os.path.isfile(config_path):
            raise ValueError(f"--resume: {out_dir!r} holds no {CONFIG}; there is no run to resume.")
        with open(config_path) as f:
            saved = json.load(f)
        wanted = json.loads(json.dumps(config.to_dict()))
        differing = sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))
        if differing:
            details = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {wanted.get(k)!r}" for k in differing)
            raise ValueError(
                f"--resume: {out_dir!r} was made with another config ({details}); rerun with "
                "the same options, or use a new --out directory."
            )
        return
    if exists:
        if os.path.isfile(config_path):
            raise ValueError(
                f"{out_dir!r} already holds a flowtrunc run; pass --resume to continue it, "
                "or choose a new --out directory."
            )
        raise ValueError(
            f"{out_dir!r} is not empty and holds something else; choose an empty or new "
            "--out directory (nothing was written)."
        )
    os.makedirs(os.path.join(out_dir, "chunks"), exist_ok=True)
    write_json(config_path, config.to_dict())


def _progress_bar(done: int, total: int, started: float, stream=sys.stderr) -> None:
    width = 30
    filled = int(width * done / total)
    elapsed = time.perf_counter() - started
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} chunks, {elapsed:6.1f} s")
    if done == total:
        stream.write("\n")
    stream.flush()


def run_compare(
    config: CompareConfig,
    out_dir: str,
    *,
    resume: bool = False,
    max_chunks: int | None = None,
    progress: bool = True,
) -> bool:
    """Runs (or continues) a comparison into `out_dir`. Each finished chunk is written
    atomically; with `resume`, finished chunks are skipped. `max_chunks` stops after that
    many new chunks (a time-boxed run). Returns True when the run is complete (then
    `seeds.npz`, `summary.json` and the figures exist)."""
    config, user_data = resolve_data(config)
    _enable_precision(config)
    prepare_directory(out_dir, config, resume)
    seeds = np.arange(config.seeds)
    total = math.ceil(len(seeds) / config.chunk_size)
    started = time.perf_counter()
    computed = 0
    leader = jax.process_index() == 0
    for index in range(total):
        path = _chunk_path(out_dir, index)
        if os.path.isfile(path):
            continue
        if max_chunks is not None and computed >= max_chunks:
            return False
        chunk = seeds[index * config.chunk_size : (index + 1) * config.chunk_size]
        keep_here = index == 0 and config.keep > 0
        metrics, trajectories = run_chunk(config, user_data, chunk, with_trajectories=keep_here)
        if leader:
            if trajectories is not None:
                kept = {name: value[: config.keep] for name, value in trajectories.items()}
                write_atomic(os.path.join(out_dir, TRAJECTORIES), lambda p: _save_npz(p, kept))
            write_atomic(path, lambda p: _save_npz(p, metrics))
        computed += 1
        if progress and leader:
            _progress_bar(index + 1, total, started)
    if leader:
        finish(out_dir, config)
    return True


def _save_npz(path: str, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_metrics(out_dir: str) -> dict:
    """All per-seed metrics of a run, from its chunk files, in seed order."""
    chunk_dir = os.path.join(out_dir, "chunks")
    names = sorted(name for name in os.listdir(chunk_dir) if name.endswith(".npz"))
    parts = []
    for name in names:
        with np.load(os.path.join(chunk_dir, name)) as archive:
            parts.append({key: archive[key] for key in archive.files})
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def finish(out_dir: str, config: CompareConfig) -> None:
    """Merges the chunks into `seeds.npz`, writes `summary.json` and the figures."""
    from ._report import write_report

    metrics = load_metrics(out_dir)
    write_atomic(os.path.join(out_dir, SEEDS), lambda p: _save_npz(p, metrics))
    write_report(out_dir)
