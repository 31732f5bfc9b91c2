"""Traced programs kept on disk beside the compilation cache, so that a later process skips
tracing as well as compiling.

Tracing the per-seed comparison (diffrax solves inside `vmap`) takes longer than compiling
it, and JAX's persistent cache keeps only the compiled program. Here a program is
exported once (`jax.export`, StableHLO) under a key of everything it depends on: its name
and static settings, the structure, shapes, dtypes and shardings of its arguments, the JAX
configuration that changes tracing, the device kind and count, the versions, and the
digest of flowtrunc's own source files (so an edited checkout never reuses an old
program). Files are written atomically (temporary file, then rename), so concurrent
processes can share the folder; an unreadable file is traced again. Multi-process runs
trace as usual, and so does a program JAX cannot export (one with host callbacks, such as
diffrax's run-time checks of traced save times in the usual cost's event loop).
"""

import functools
import hashlib
import os
import sys

import jax

_folder: str | None = None
_memory: dict = {}
_counts = {"loaded": 0, "saved": 0}
_noticed: list = []  # one notice per process


def use_folder(folder: str | None) -> None:
    """Keeps exported programs in `folder` (None: trace in every process)."""
    global _folder
    _folder = folder


def counts() -> dict:
    return dict(_counts)


@functools.cache
def _source_digest() -> str:
    package = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(package)):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    digest.update(os.path.relpath(path, package).encode() + f.read())
    return digest.hexdigest()


def call(name: str, function, args: tuple, static) -> object:
    """`function(*args)`, through a program traced once per key and kept on disk.
    `function` must be a pure function of `args` once `static` (hashable, with a faithful
    `repr`) is fixed."""
    if _folder is None or jax.process_count() > 1:
        return function(*args)
    leaves, treedef = jax.tree.flatten(args)
    key = _key(name, static, treedef, leaves)
    program = _memory.get(key)
    if program is None:
        program = _memory[key] = _load_or_export(name, key, function, treedef, leaves)
    return program(*leaves)


def _key(name, static, treedef, leaves) -> str:
    import jaxlib

    described = tuple((tuple(x.shape), str(x.dtype), str(getattr(x, "sharding", None))) for x in leaves)
    config = jax.config
    signature = (
        name,
        repr(static),
        str(treedef),
        described,
        config.jax_enable_x64,
        config.jax_numpy_rank_promotion,
        config.jax_default_matmul_precision,
        jax.default_backend(),
        jax.device_count(),
        jax.devices()[0].device_kind,
        jax.__version__,
        jaxlib.__version__,
        _source_digest(),
    )
    return hashlib.sha256(repr(signature).encode()).hexdigest()[:32]


def _load_or_export(name, key, function, treedef, leaves):
    from jax import export

    path = os.path.join(_folder, f"{name}-{key}.jaxexport")
    exported = None
    if os.path.isfile(path):
        try:
            with open(path, "rb") as f:
                exported = export.deserialize(bytearray(f.read()))
            _counts["loaded"] += 1
        except Exception as error:  # a damaged or foreign file: trace again
            if not _noticed:
                print(
                    f"flowtrunc: note: the saved program {path!r} could not be read "
                    f"({type(error).__name__}); tracing it again.",
                    file=sys.stderr,
                )
                _noticed.append(True)
    if exported is None:
        flat = jax.jit(lambda *xs: function(*jax.tree.unflatten(treedef, xs)))
        try:
            exported = export.export(flat)(*leaves)
        except NotImplementedError:  # host callbacks (diffrax's checks of traced save times)
            return flat  # cannot be exported: traced in every process
        try:
            os.makedirs(_folder, exist_ok=True)
            temporary = f"{path}.tmp-{os.getpid()}"
            with open(temporary, "wb") as f:
                f.write(exported.serialize())
            os.replace(temporary, path)
            _counts["saved"] += 1
        except OSError:
            pass  # not kept: the next process traces again
    return jax.jit(exported.call)
