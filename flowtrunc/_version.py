"""The installed version (0.0.0 when run from a source tree that was never installed)."""

import importlib.metadata

try:
    __version__ = importlib.metadata.version("flowtrunc")
except importlib.metadata.PackageNotFoundError:
    __version__ = "0.0.0"
