"""The cost of one step's gradient noise alone, per way of drawing it.

For the gradients of `throughput.py`'s plain LM (4.65M parameters in 9
tensors), times `grads -> grads + σ·z` with z ~ N(0, 1) drawn

    add_only        no draw: grads + σ·grads (the pass over memory alone)
    keras_random    one `keras.random.normal` per gradient (GradientNoise's
                      first implementation)
    gradient_noise  `GradientNoise.add_noise`, the library's draw:
                      Threefry-2x32 as elementwise ops, Giles's erfinv
    bits_only       (JAX) the library's random bits, cast and
                      added without the erfinv transform (not Gaussian:
                      what the bits cost)
    xla_rng_bits    (JAX, TensorFlow) the previous draw: the same transform
                      by XLA's erf_inv, of bits from XLA's RngBitGenerator
                      (THREE_FRY; TensorFlow's stateless threefry uniforms)
    jax_rbg         (JAX) `jax.random.normal` per gradient from an `rbg` key
    jax_unsafe_rbg  (JAX) the same from an `unsafe_rbg` key

compiled as a train step would be (`jax.jit` on JAX, `tf.function` on
TensorFlow, eager on torch), interleaved, medians of `--repeats`, ratios
to `gradient_noise`. What the noise costs a whole training step is
`throughput.py --variants plain,gradient_noise,gradient_noise_per_variable`.

    KERAS_BACKEND=jax taskset -c 1 python benchmarks/noise_draws.py --threads 1
"""

import argparse
import datetime
import functools
import os
import statistics
import sys
import time

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402

from keras_rnnreg import GradientNoise  # noqa: E402
from keras_rnnreg._threefry import grid_uniform, random_bits  # noqa: E402

SIGMA = 0.1


def _keras_random(optimizer, grads):
    # throughput.py's variant: GradientNoise's first draw, same seeds.
    return throughput._PerVariableGradientNoise.add_noise(optimizer, grads)


def _jax_keyed(impl):
    def draw(optimizer, grads):
        import jax

        key = jax.random.key(optimizer._base_seed, impl=impl)
        keys = jax.random.split(key, len(grads))
        return [g + SIGMA * jax.random.normal(k, g.shape) for k, g in zip(keys, grads)]

    return draw


def _bits_only(optimizer, grads):
    return [
        g + SIGMA * keras.ops.cast(
            keras.ops.reshape(random_bits(int(np.prod(g.shape)), optimizer._seed(i).next()),
                              g.shape), g.dtype)
        for i, g in enumerate(grads)
    ]


def _xla_rng_bits(optimizer, grads):
    if keras.backend.backend() == "tensorflow":
        return _tf_rng_bits(optimizer, grads)
    import jax

    def normal(shape, seed):
        key = jax.random.wrap_key_data(seed, impl="threefry2x32")
        state = jax.random.bits(key, (4,), "uint32")
        _, bits = jax.lax.rng_bit_generator(
            state, tuple(shape), dtype="uint32",
            algorithm=jax.lax.RandomAlgorithm.RNG_THREE_FRY,
        )
        return np.float32(np.sqrt(2.0)) * jax.lax.erf_inv(grid_uniform(bits))

    return [g + SIGMA * normal(g.shape, optimizer._seed(i).next()) for i, g in enumerate(grads)]


@functools.cache
def _tf_noisy():
    import tensorflow as tf

    @tf.function(jit_compile=True, autograph=False)
    def noisy(grad, seed):
        bits = tf.random.stateless_uniform(
            tf.shape(grad), seed, minval=None, maxval=None, dtype=tf.uint32, alg="threefry"
        )
        return grad + SIGMA * np.float32(np.sqrt(2.0)) * tf.math.erfinv(grid_uniform(bits))

    return noisy


def _tf_rng_bits(optimizer, grads):
    return [_tf_noisy()(g, optimizer._seed(i).next()) for i, g in enumerate(grads)]


def variants(backend):
    found = {
        "add_only": lambda optimizer, grads: [g + SIGMA * g for g in grads],
        "keras_random": _keras_random,
        "gradient_noise": lambda optimizer, grads: optimizer.add_noise(grads),
    }
    if backend in ("jax", "tensorflow"):
        found["xla_rng_bits"] = _xla_rng_bits
    if backend == "jax":
        found["bits_only"] = _bits_only
        found["jax_rbg"] = _jax_keyed("rbg")
        found["jax_unsafe_rbg"] = _jax_keyed("unsafe_rbg")
    return found


def compiled(function, backend):
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function)
    return function


def finish(result, backend):
    """Waits until every noisy gradient is computed."""
    if backend == "jax":
        import jax

        return jax.block_until_ready(result)
    # One value of each: enough to wait on every device computation.
    return [keras.ops.convert_to_numpy(r[(0,) * len(r.shape)]) for r in result]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 repeats")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for torch and TensorFlow (as throughput.py)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 2
    backend = keras.backend.backend()
    threads = throughput.configure_threads(backend, args.threads)
    print(f"date:     {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"command:  KERAS_BACKEND={backend} {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"backend:  {backend} {throughput.backend_version()} ({throughput.accelerator_description()})")
    print(f"machine:  {throughput.machine_description()}; {threads}")
    print(f"load:     {throughput.load_average()} at the start")

    model = throughput.build_model("plain")
    weights = model.trainable_weights
    optimizer = GradientNoise(keras.optimizers.SGD(1.0), eta=0.01, seed=0)
    optimizer.build(weights)
    grads = [keras.ops.convert_to_tensor(np.random.default_rng(0).standard_normal(
        tuple(w.shape), dtype="float32")) for w in weights]
    size = sum(int(np.prod(w.shape)) for w in weights)
    print(f"gradients: {len(grads)} tensors, {size:,} values; medians of {args.repeats}")

    functions = {}
    for name, draw in variants(backend).items():
        function = compiled(lambda g, draw=draw: draw(optimizer, g), backend)
        finish(function(grads), backend)  # trace and compile
        functions[name] = function
    times = {name: [] for name in functions}
    for _ in range(args.repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            finish(function(grads), backend)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print(f"load:     {throughput.load_average()} at the end\n")
    print("| variant | median ms | min - max | × gradient_noise |")
    print("| --- | ---: | ---: | ---: |")
    for name, t in times.items():
        print(f"| {name} | {median[name]:.1f} | {min(t) * 1e3:.1f} - {max(t) * 1e3:.1f} "
              f"| {median[name] / median['gradient_noise']:.2f} |")


if __name__ == "__main__":
    main()
