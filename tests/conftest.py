import contextlib
import os

# The suite compares against NumPy references at float32 precision. On
# Ampere/Hopper GPUs cuBLAS and cuDNN (torch's cuDNN RNNs, JAX's matmuls)
# default to TF32, whose 10-bit mantissa misses those tolerances by orders of
# magnitude; this turns it off for every CUDA library before any is loaded.
# It does nothing on a CPU. The per-backend switches below say the same to
# the frameworks themselves.
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")


def _quick_xla_compilations():
    """XLA (JAX's jit, and Keras's `jit_compile` on TensorFlow) compiles at
    LLVM optimization level 0: the suite's thousands of small programs are
    compiled once and run for milliseconds, so compilation, not execution,
    is most of the JAX pass, and -O0 compiles several times faster. The
    programs compute the same operations; every test, twin and reference
    comparison runs unchanged. An `XLA_FLAGS` that already sets the level
    wins."""
    if os.environ.get("RNNREG_XLA_DEFAULT_OPT"):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


def _one_cpu_thread_per_xdist_worker():
    """Under pytest-xdist with several workers (`make test` runs `-n 2`),
    each worker computes on one CPU thread: the workers already keep the
    cores busy, and a framework's thread pool per worker only oversubscribes
    them (torch's OpenMP threads spin-wait for a core another process holds).
    Set before any framework is imported; a value the caller exported wins.
    The tests' subprocesses (the CLI, the distributed jobs) inherit it."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) < 2 or os.environ.get("RNNREG_NO_THREAD_LIMIT"):
        return
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip()


def _one_compilation_cache_per_run():
    """JAX's persistent compilation cache in one temporary directory per
    pytest run, shared by its xdist workers and the command-line processes
    the tests start (all inherit the variables from the controller, which
    creates the directory and removes it at exit).

    Many tests build the same tiny model and compile the same train, test
    and predict steps; JAX keys its cache on the program itself (not on the
    Python function or the test), so each program after the first is loaded
    instead of compiled; the default threshold (cache what took 1 s or more)
    is lowered to 0 for the suite's quick compilations. Nothing outlives the
    run: every `make test` starts from an empty cache, as CI does. A
    `JAX_COMPILATION_CACHE_DIR` the caller exported wins, and
    `RNNREG_TEST_JAX_CACHE=0` turns it off. Tests that examine the command
    line's own cache suspend it (`suite_compilation_cache_suspended`)."""
    if os.environ.get("RNNREG_TEST_JAX_CACHE") == "0" or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    import atexit
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="rnnreg-jax-cache-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


_quick_xla_compilations()
_one_cpu_thread_per_xdist_worker()
_one_compilation_cache_per_run()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _full_float32_precision():
    """Turns TF32 (and other reduced-precision float32 math) off per backend."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    elif backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
        if os.environ.get("OMP_NUM_THREADS") == "1":
            tf.config.threading.set_intra_op_parallelism_threads(1)


def _quick_graph_building():
    """On TensorFlow, Grappler's graph rewrites (constant folding, layout,
    remapping: speed-ups for long runs) are skipped: they cost more than
    the milliseconds each of the suite's small programs runs, and the
    programs compute the same. `RNNREG_XLA_DEFAULT_OPT=1` keeps them, as it
    keeps XLA's default optimization level."""
    if keras.backend.backend() == "tensorflow" and not os.environ.get("RNNREG_XLA_DEFAULT_OPT"):
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


@contextlib.contextmanager
def suite_compilation_cache_suspended():
    """Within the block JAX has no compilation cache (the command line's
    `run_compilation_cache` then sets its own, as for a user who set none)."""
    path = jax_cache = None
    if keras.backend.backend() == "jax":
        import jax

        path = jax.config.jax_compilation_cache_dir
    if not path:
        yield
        return
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    jax.config.update("jax_compilation_cache_dir", None)
    jax_cache.reset_cache()
    try:
        yield
    finally:
        jax_cache.reset_cache()
        jax.config.update("jax_compilation_cache_dir", path)


_full_float32_precision()
_quick_graph_building()


def pytest_sessionstart(session):
    """Under pytest-xdist the controller runs no test, so what the frameworks
    wrote while this file imported them (TensorFlow's start-up log) would
    stay in its captured output until exit and print after the summary. It
    is dropped, as a single-process run files it in the first test's report."""
    config = session.config
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        capture = config.pluginmanager.getplugin("capturemanager")
        if capture is not None:
            capture.read_global_capture()


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the same seeds and the default dtype policy."""
    keras.utils.set_random_seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")
    # free_memory=False: skips a gc.collect() that costs ~0.5 s a test on JAX
    keras.backend.clear_session(free_memory=False)


def to_numpy(x):
    # A copy, whatever the backend's convert_to_numpy does (a CPU torch
    # tensor's .numpy() is a view): a "before" kept across an `assign` must
    # not follow it.
    return np.array(keras.ops.convert_to_numpy(x), copy=True)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm(x, kernel, recurrent_kernel, bias, h0=None, c0=None,
               eps=None, mode="multiplicative", mask=None):
    """Keras's LSTM recurrence (gate order i, f, c, o) in NumPy.

    With `eps` (batch, time, units) it is Noisin's Algorithm 1: the emitted
    state z_t = h_t ⊙ ε_t (or h_t + ε_t with mode="additive") is both the
    output and the state fed back; c is not noised. With `mask` (batch, time)
    a masked step carries the previous (z, c) forward, as Keras does.
    Returns all outputs (batch, time, units) and the final (h, c).
    """
    batch, steps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((batch, units)) if h0 is None else h0
    c = np.zeros((batch, units)) if c0 is None else c0
    outputs = []
    for t in range(steps):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = np.split(z, 4, axis=-1)
        c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h_new = sigmoid(o) * np.tanh(c_new)
        if eps is not None:
            h_new = h_new * eps[:, t] if mode == "multiplicative" else h_new + eps[:, t]
        if mask is not None:
            keep = mask[:, t : t + 1].astype(bool)
            h_new, c_new = np.where(keep, h_new, h), np.where(keep, c_new, c)
        h, c = h_new, c_new
        outputs.append(h)
    return np.stack(outputs, axis=1), h, c


def numpy_gru(x, kernel, recurrent_kernel, bias):
    """Keras's GRU recurrence with reset_after=True (gate order z, r, h)."""
    batch, steps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((batch, units))
    outputs = []
    for t in range(steps):
        x_z, x_r, x_h = np.split(x[:, t] @ kernel + bias[0], 3, axis=-1)
        h_z, h_r, h_h = np.split(h @ recurrent_kernel + bias[1], 3, axis=-1)
        z = sigmoid(x_z + h_z)
        r = sigmoid(x_r + h_r)
        candidate = np.tanh(x_h + r * h_h)
        h = z * h + (1 - z) * candidate
        outputs.append(h)
    return np.stack(outputs, axis=1)
