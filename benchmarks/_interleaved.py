"""The timing loop shared by the benchmarks that compare whole models.

Every model has a Keras-like `train_on_batch(x, y)`. Each is warmed up
first (traced, compiled); then every repeat times `batches` steps of each
model in turn, so the drifts of a shared machine hit all of them alike.
"""

import os
import statistics
import time

import numpy as np


def one_xla_thread(threads):
    """With `threads` == 1, XLA (JAX's CPU backend) computes on one thread.
    Call before JAX is imported: its CPU thread pool is fixed when it starts."""
    if threads == 1:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )


def set_threads(threads):
    """`threads` intra-op threads for torch (Keras's torch backend and the
    PyTorch variants, which run on every backend) and, on the TensorFlow
    backend, for TensorFlow; None leaves the frameworks' defaults. JAX's
    XLA pool is fixed when JAX starts."""
    if threads is None:
        return
    import keras
    import torch

    torch.set_num_threads(threads)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # Must run before TensorFlow executes its first op.
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def run_steps(model, x, y, start, n_steps):
    """`n_steps` steps on batches `start`, `start + 1`, ... of (x, y), cycled;
    returns the last loss as a float (which waits for the device)."""
    loss = None
    for i in range(n_steps):
        j = (start + i) % len(x)
        loss = model.train_on_batch(x[j], y[j])
    if hasattr(loss, "detach"):  # a torch tensor
        loss = loss.detach().cpu().numpy()
    return float(np.asarray(loss).reshape(-1)[0])


def time_interleaved(builders, x, y, tokens_per_step, repeats, batches, warmup):
    """Builds each model (`builders`: name -> zero-argument function), warms
    it up and times it interleaved with the others. Returns name -> list of
    tokens/s, one per repeat; prints progress."""
    models = {}
    for name, build in builders.items():
        start = time.perf_counter()
        models[name] = build()
        loss = run_steps(models[name], x, y, 0, warmup)
        print(f"  warm-up {name:<16} {time.perf_counter() - start:6.1f} s  loss {loss:.3f}", flush=True)
    rates = {name: [] for name in models}
    position = warmup
    for repeat in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            run_steps(model, x, y, position, batches)
            rates[name].append(batches * tokens_per_step / (time.perf_counter() - start))
        position += batches
        line = ", ".join(f"{name} {r[-1]:,.0f}" for name, r in rates.items())
        print(f"  repeat {repeat + 1}/{repeats}: {line}", flush=True)
    return rates


def print_medians(backend, rates):
    """The markdown table of medians and ranges; returns name -> median."""
    median = {name: statistics.median(r) for name, r in rates.items()}
    print("\n| backend | variant | median tokens/s | min - max |")
    print("| --- | --- | ---: | ---: |")
    for name, r in rates.items():
        print(f"| {backend} | {name} | {median[name]:,.0f} | {min(r):,.0f} - {max(r):,.0f} |")
    return median
