"""The default `flowtrunc compare` run twice in a row, each in a new process, one empty
compilation cache for both: how much of the first run's compilation the second skips.

    python second_run.py [--seeds N] [--out FILE]

Each run's compilation phase is its first chunk's time minus the median of its other
chunks (every chunk has one shape; only the first can compile). The CLI's last line says
how many programs it compiled and how many it loaded; both lines are recorded.
"""

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def one_run(out_dir: str, cache: str, seeds: int | None) -> dict:
    args = [sys.executable, "-m", "flowtrunc._cli", "compare", "--out", out_dir, "--compile-cache", cache]
    if seeds is not None:
        args += ["--seeds", str(seeds)]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the run failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    seconds = []
    for path in sorted(glob.glob(os.path.join(out_dir, "chunks", "*.npz"))):
        with np.load(path) as archive:
            seconds.append(float(archive["chunk_seconds"]))
    others = statistics.median(seconds[1:]) if len(seconds) > 1 else 0.0
    cache_line = next((line for line in done.stderr.splitlines() if "compilation cache:" in line), "")
    return {
        "process_wall_s": round(wall, 2),
        "chunks": len(seconds),
        "first_chunk_s": round(seconds[0], 2),
        "other_chunks_median_s": round(others, 3),
        "compilation_phase_s": round(seconds[0] - others, 2),
        "cli_cache_line": cache_line.strip(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=None, help="seeds per run (default: the CLI's)")
    parser.add_argument("--out", default=None, help="JSON file for the record (default: print only)")
    args = parser.parse_args()
    from _common import report

    with tempfile.TemporaryDirectory() as scratch:
        cache = os.path.join(scratch, "cache")
        rows = [one_run(os.path.join(scratch, f"run{i}"), cache, args.seeds) for i in (1, 2)]
    rows[1]["compilation_ratio_second_to_first"] = round(
        rows[1]["compilation_phase_s"] / rows[0]["compilation_phase_s"], 4
    )
    report("second_run", rows, args.out)


if __name__ == "__main__":
    main()
