"""JAX's persistent compilation cache for the command line: a second `flowtrunc compare` or
`sweep` with the same shapes loads its programs instead of compiling them.

Where: `--compile-cache DIR`, else the environment variable `FLOWTRUNC_COMPILE_CACHE`, else
`$XDG_CACHE_HOME/flowtrunc/compile` (`~/.cache/flowtrunc/compile`); `off` (or an empty
value) disables it. Each JAX/jaxlib version gets its own subfolder, which also keeps the
traced programs (`_program_cache`: tracing costs more than compiling). The cache is bounded
(`MAX_BYTES`, least recently used programs evicted), which makes JAX take a file lock
around every read and write, so concurrent processes share it safely. A folder that cannot
be written gives one line of notice and compilation as usual; an unreadable entry is
compiled again (JAX's own fallback), announced in one line.
"""

import os
import sys
import warnings

from .. import _program_cache as program_cache

OFF = ("", "off", "0", "none", "false", "no")
ENVIRONMENT = "FLOWTRUNC_COMPILE_CACHE"
MAX_BYTES = 4 * 2**30

_counts = {"requests": 0, "hits": 0, "writes": 0}
_EVENTS = {
    "/jax/compilation_cache/compile_requests_use_cache": "requests",
    "/jax/compilation_cache/cache_hits": "hits",
    "/jax/compilation_cache/cache_misses": "writes",  # recorded as a compiled program is written
}


def default_folder() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "flowtrunc", "compile")


def chosen_folder(flag: str | None) -> str | None:
    """The cache folder from the flag, the environment or the default; None when off."""
    value = flag if flag is not None else os.environ.get(ENVIRONMENT, default_folder())
    return None if value.strip().lower() in OFF else os.path.abspath(os.path.expanduser(value))


def enable(folder: str | None) -> str | None:
    """Turns the cache on in `folder` (before anything is compiled). Returns the folder
    used, or None (off, or not writable: then one line says so on stderr)."""
    if folder is None:
        return None
    import jax
    import jaxlib

    versioned = os.path.join(folder, f"jax-{jax.__version__}-jaxlib-{jaxlib.__version__}")
    try:
        os.makedirs(versioned, exist_ok=True)
        probe = os.path.join(versioned, f".probe-{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.remove(probe)
    except OSError as error:
        print(
            f"flowtrunc: note: the compilation cache {folder!r} cannot be used "
            f"({error.strerror or error}); compiling as usual. Choose another with --compile-cache "
            f"DIR or {ENVIRONMENT}=DIR, or turn it off with --compile-cache off.",
            file=sys.stderr,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", versioned)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _listen()
    _announce_unreadable_entries()
    program_cache.use_folder(os.path.join(versioned, "programs"))
    return versioned


def counts() -> dict:
    """Programs asked of the cache in this process, found there, and compiled and written;
    traced programs loaded and saved."""
    return {**_counts, **program_cache.counts()}


_listening = False
_noticed: list = []  # one notice per process


def _listen() -> None:
    global _listening
    if _listening:
        return
    import jax

    def on_event(event, **_):
        if event in _EVENTS:
            _counts[_EVENTS[event]] += 1

    jax.monitoring.register_event_listener(on_event)
    _listening = True


def _announce_unreadable_entries() -> None:
    """JAX warns (and compiles) when an entry cannot be read; say it in one line."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if text.startswith("Error reading persistent compilation cache entry"):
            if not _noticed:
                print(
                    f"flowtrunc: note: compilation cache entries could not be read ({text[:120]}); "
                    "compiling them again (delete the folder to start it afresh).",
                    file=sys.stderr,
                )
                _noticed.append(True)
            return
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
