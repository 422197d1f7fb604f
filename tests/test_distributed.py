"""GradientNoise and ASGD under tf.distribute and keras.distribution.

Each run is a fresh process (tests/distributed_job.py) because the device
layout must be fixed before the backend starts. After a few steps with noise
and averaging active, every replica's copy of every variable (weights and
averages) must be identical, and equal to a single-device run of the same
backend: noise is added once to the synchronized gradient, and the average
is the average of the synchronized iterates.
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

JOB = os.path.join(os.path.dirname(__file__), "distributed_job.py")
TIMEOUT = 240
# The jobs import keras_rnnreg from this checkout even where it is not
# pip-installed (e.g. a copy of the tree on a GPU machine).
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def job_env(backend, extra_env=None):
    path = os.pathsep.join(p for p in (PROJECT, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": path, **(extra_env or {})}


def run_job(mode, output, backend, extra_env=None):
    env = job_env(backend, extra_env)
    result = subprocess.run(
        [sys.executable, JOB, mode, str(output)], env=env, capture_output=True,
        text=True, timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(output))


def assert_matches_single_device(distributed, single, replicas, local_copies=None):
    assert distributed["replicas"] == replicas
    assert distributed["copies_per_variable"] == (local_copies or replicas)
    assert distributed["identical"]  # no replica drifted
    assert distributed["average_count"] == single["average_count"] == 4
    weights = sorted(k for k in single if k.startswith("weight_"))
    for key in weights:
        np.testing.assert_allclose(distributed[key], single[key], rtol=1e-5, atol=1e-6)


tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="tf.distribute is TensorFlow's; this runs in the tensorflow pass",
)


@tensorflow_only
def test_mirrored_strategy_two_logical_cpus(tmp_path):
    single = run_job("single", tmp_path / "single.npz", "tensorflow")
    mirrored = run_job("mirrored", tmp_path / "mirrored.npz", "tensorflow")
    assert_matches_single_device(mirrored, single, replicas=2)


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution.DataParallel is tested in the jax pass",
)
def test_jax_data_parallel_two_host_devices(tmp_path):
    # Two CPU devices from XLA's host platform, also on a machine whose JAX
    # default device is one GPU; the single-device run is on the CPU too, so
    # the two compute with the same kernels.
    on_cpu = {"JAX_PLATFORMS": "cpu"}
    single = run_job("single", tmp_path / "single.npz", "jax", on_cpu)
    parallel = run_job("jax_data_parallel", tmp_path / "parallel.npz", "jax", on_cpu)
    assert_matches_single_device(parallel, single, replicas=2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@tensorflow_only
def test_multi_worker_mirrored_strategy_two_processes(tmp_path):
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    processes = []
    try:
        for index in range(2):
            tf_config = {"cluster": {"worker": workers},
                         "task": {"type": "worker", "index": index}}
            env = job_env("tensorflow", {"TF_CONFIG": json.dumps(tf_config)})
            processes.append(subprocess.Popen(
                [sys.executable, JOB, "multi_worker", str(tmp_path / f"w{index}.npz")],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            ))
        errors = [p.communicate(timeout=TIMEOUT)[1] for p in processes]
        for process, error in zip(processes, errors):
            assert process.returncode == 0, error[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    first, second = (dict(np.load(tmp_path / f"w{i}.npz")) for i in range(2))
    single = run_job("single", tmp_path / "single.npz", "tensorflow")
    # one replica per worker process: the copies are compared across files
    assert_matches_single_device(first, single, replicas=2, local_copies=1)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
