"""The progress line of a run (compilation as its own phase, then seeds with an ETA)."""

import sys


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
