import os
import shutil
import tempfile

import jax
import pytest
from helpers import TINY

from flowtrunc.internal import compile_cache

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

_OWN_CACHE = "FLOWTRUNC_TEST_OWNS_CACHE"
_GIVEN_CACHE = "FLOWTRUNC_TEST_CACHE"


def pytest_configure(config):
    """One compilation cache per test run, shared by pytest-xdist's workers and by the CLI
    subprocesses the tests start (they inherit the environment): programs dropped by
    `jax.clear_caches` after a module, or traced in another process, come back from it."""
    if "PYTEST_XDIST_WORKER" not in os.environ and _OWN_CACHE not in os.environ:
        given = os.environ.get(_GIVEN_CACHE)  # one folder for several runs (CI's two tiers)
        os.environ[compile_cache.ENVIRONMENT] = given or tempfile.mkdtemp(prefix="flowtrunc-test-cache-")
        os.environ[_OWN_CACHE] = "keep" if given else "remove"
    compile_cache.enable(compile_cache.chosen_folder(None))


def pytest_unconfigure(config):
    if "PYTEST_XDIST_WORKER" not in os.environ and os.environ.pop(_OWN_CACHE, None) == "remove":
        shutil.rmtree(os.environ.pop(compile_cache.ENVIRONMENT), ignore_errors=True)


@pytest.fixture(autouse=True)
def _annotations_checked_unless_wrong_types(request):
    """The suite checks every annotation at run time (jaxtyping + beartype, pyproject's
    addopts). A test marked `wrong_types` passes wrongly typed arguments on purpose, to
    show the library's own message naming the argument and the fix, which the annotation
    check would pre-empt; for it alone the check is off."""
    import jaxtyping

    if request.node.get_closest_marker("wrong_types") is None:
        yield
        return
    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", before)


@pytest.fixture(params=[0, 1, 2])
def seed(request):
    """A seed that shows in the test id, so a failure names it."""
    return request.param


@pytest.fixture
def key(seed):
    return jax.random.key(seed)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Each module compiles its own programs; dropping them afterwards keeps one long
    pytest process (CI runs the whole suite in one) from accumulating them."""
    yield
    jax.clear_caches()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished run of the TINY comparison, shared (read-only) by every test that
    needs a reference run, instead of each computing its own."""
    from flowtrunc import CompareConfig
    from flowtrunc.internal import run_compare

    out = str(tmp_path_factory.mktemp("tiny") / "run")
    assert run_compare(CompareConfig(**TINY), out, progress=False)
    return out
