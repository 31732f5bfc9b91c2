"""The run directory: checked before the first byte is written, never shared with
something else, and locked while a process writes it."""

import os
import shutil
import socket
import sys

from .._experiment.config import CompareConfig
from .files import CONFIG, LOCK, RESUMABLE_CHANGES, OutputError, provenance, read_config, write_json


def check_out(out_dir) -> str:
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
    out_dir = check_out(out_dir)
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


def remove_stray_temporaries(out_dir: str) -> None:
    for folder in (out_dir, os.path.join(out_dir, "chunks")):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if ".tmp-" in name:
                    os.remove(os.path.join(folder, name))
