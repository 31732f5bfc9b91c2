"""A run's memory is bounded by its chunk, not by its number of seeds."""

import json
import subprocess
import sys

import pytest

# the CLI in a child that reports its own peak resident memory (Linux: KiB) on stdout's last line
_CHILD = """
import resource, sys
from flowtrunc.internal import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""
SMALL = dict(points=4, clusters=2, depth=1, t1=0.2, lr=0.02, saves=10, chunk_size=2048, keep=1)


def _peak_kib(out, seeds):
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**SMALL, "seeds": seeds}.items()]
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, "compare", "--out", str(out), *flags],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr
    assert f"{seeds} of {seeds} seeds ok" in done.stdout
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux only")
def test_peak_memory_at_1e5_seeds_is_that_of_1e4_plus_the_metric_arrays(tmp_path):
    """Bound: the peak at 10^5 seeds may exceed the peak at 10^4 by at most 4 copies of the
    extra per-seed metric arrays (the merge holds the chunks' arrays, the merged arrays,
    their saved copy and the summary's work arrays), measured as the size of the
    uncompressed `seeds.npz`, plus 64 MiB of allocator slack. A run whose memory grew with
    its seeds' working memory (the 2048-seed chunk program takes ~1 GiB) would need tens of
    GiB more."""
    small, large = _peak_kib(tmp_path / "1e4", 10_000), _peak_kib(tmp_path / "1e5", 100_000)
    metric_kib = (tmp_path / "1e5" / "seeds.npz").stat().st_size / 1024 * (1 - 10_000 / 100_000)
    bound = small + 4 * metric_kib + 64 * 1024
    record = {"peak_kib_1e4": small, "peak_kib_1e5": large, "bound_kib": bound}
    assert large <= bound, json.dumps(record)
