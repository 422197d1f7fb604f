"""JAX's persistent compilation cache in a run's directory.

On JAX every distinct batch shape costs a compilation of the train or test
step: seconds each on a CPU, and together minutes of a GPU run's first
epoch (docs/benchmarks.md). Without a cache a resumed run, and `evaluate`
or `generate` of a finished one, compile them all again. The command line
therefore points JAX's own persistent cache (`jax_compilation_cache_dir`)
at `<run>/jax-cache` for the duration of a command: a resumed run loads
the steps it compiled before instead of compiling them, and `evaluate`
loads the test steps that validation compiled, also after the run directory
was moved or copied elsewhere. A cache the user configured
(`JAX_COMPILATION_CACHE_DIR` or `jax.config`) is left as it is. JAX decides
what is worth keeping (by default compilations of a second or more).
"""

import contextlib
import os

import keras

CACHE_FOLDER = "jax-cache"


@contextlib.contextmanager
def run_compilation_cache(directory):
    """Within the block, JAX caches its compilations in `directory/jax-cache`.

    Yields the cache's directory, or None where nothing was changed: another
    backend, or a cache the user configured. Afterwards JAX has no cache
    directory again, as before the block.
    """
    if keras.backend.backend() != "jax":
        yield None
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if jax.config.jax_compilation_cache_dir:
        yield None
        return
    path = os.path.join(directory, CACHE_FOLDER)
    previous_xla_caches = jax.config.jax_persistent_cache_enable_xla_caches
    # JAX would also keep XLA's GPU autotuning cache under the directory and
    # name that path in every compilation's key, so that a moved or copied
    # run would find none of its entries; a hit skips autotuning anyway.
    jax.config.update("jax_persistent_cache_enable_xla_caches", "none")
    # reset_cache: JAX opens its cache once per process, at the first
    # compilation after a directory is set; a command run in a process that
    # already compiled (a notebook, the tests) must open this one.
    compilation_cache.reset_cache()
    compilation_cache.set_cache_dir(path)
    try:
        yield path
    finally:
        jax.config.update("jax_compilation_cache_dir", None)
        jax.config.update("jax_persistent_cache_enable_xla_caches", previous_xla_caches)
        compilation_cache.reset_cache()
