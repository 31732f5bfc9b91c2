import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(params=[0, 1, 2])
def seed(request):
    """A seed that shows in the test id, so a failure names it."""
    return request.param


@pytest.fixture
def key(seed):
    return jax.random.key(seed)
