import os
import tempfile

import jax
import pytest

# Experiments turn on JAX's persistent compilation cache: keep the tests' entries out of ~/.cache.
os.environ.setdefault("PGX_JAX_COMPILE_CACHE", tempfile.mkdtemp(prefix="pgx_jax_test_cache_"))

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def key():
    return jax.random.key(0)
