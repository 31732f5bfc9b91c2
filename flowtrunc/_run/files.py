"""A run's files: atomic writes, JSON that survives any number, the saved settings.

Layout of a run's output directory:
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
import sys

import jax
import numpy as np

from .._experiment.config import CompareConfig

CONFIG, SEEDS, TRAJECTORIES, SUMMARY, LOCK = (
    "config.json",
    "seeds.npz",
    "trajectories.npz",
    "summary.json",
    ".lock",
)
# settings a resumed run may change: results do not depend on them
RESUMABLE_CHANGES = ("chunk_size",)


class OutputError(ValueError):
    """A run's files cannot be written or read; the message says which and what to do."""


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


def save_npz(path: str, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def provenance(config: CompareConfig) -> dict:
    """What else a run's results depend on: the data file's content and the versions."""
    from .._version import __version__

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
