"""One training run of a small model, single-device or distributed.

Run as a script by tests/test_distributed.py in a fresh process, because the
device layout (TF logical CPUs, JAX host devices, TF_CONFIG workers) must be
fixed before the backend initializes. Writes the final weights, the ASGD
averages and, for distributed runs, whether every replica's copy of every
variable is identical, to an .npz file.

    python distributed_job.py MODE OUTPUT.npz
    MODE: single | mirrored | jax_data_parallel | multi_worker
"""

import os
import sys

MODE, OUTPUT = sys.argv[1], sys.argv[2]
STEPS, TRIGGER = 6, 3

if MODE == "jax_data_parallel":
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
elif MODE != "single":
    os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_rnnreg.optimizers import ASGD, GradientNoise  # noqa: E402


def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    model.compile(GradientNoise(ASGD(0.1), eta=0.05, seed=11), "mse")
    return model


class StartAveraging(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == TRIGGER:
            self.model.optimizer.inner_optimizer.start_averaging()


def train(model, strategy=None):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")
    if MODE == "multi_worker":
        return train_multi_worker(model, strategy, x, y)
    # one full batch per epoch: STEPS updates, averaging from step TRIGGER
    model.fit(x, y, batch_size=16, shuffle=False, epochs=STEPS, verbose=0,
              callbacks=[StartAveraging()])


def train_multi_worker(model, strategy, x, y):
    """A custom loop: Keras 3.15's fit cannot start under a multi-worker
    strategy (its symbolic build reduces a PerReplica batch eagerly), so this
    drives the same optimizer the way custom-loop users do."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)

    @tf.function
    def step(inputs, targets):
        def replica_step(inputs, targets):
            with tf.GradientTape() as tape:
                error = model(inputs, training=True) - targets
                # Keras's scaling: each replica's mean loss / replicas
                loss = tf.reduce_mean(tf.square(error)) / strategy.num_replicas_in_sync
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply(grads, model.trainable_variables)

        strategy.run(replica_step, args=(inputs, targets))

    for index in range(STEPS):
        if index == TRIGGER:
            model.optimizer.inner_optimizer.start_averaging()
        step(*batch)


def replica_copies(variable):
    """Every device's copy of a variable's value, as NumPy arrays."""
    value = variable.value
    if hasattr(value, "values"):  # tf.distribute mirrored variable
        return [np.asarray(v.numpy()) for v in value.values]
    if hasattr(value, "addressable_shards"):  # jax array
        return [np.asarray(s.data) for s in value.addressable_shards]
    return [keras.ops.convert_to_numpy(value)]


def main():
    strategy = None
    if MODE == "mirrored":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif MODE == "multi_worker":
        import tensorflow as tf

        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif MODE == "jax_data_parallel":
        import jax

        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices())
        )

    if strategy is not None:
        with strategy.scope():
            model = build()
        replicas = strategy.num_replicas_in_sync
    else:
        model = build()
        distribution = keras.distribution.distribution()
        replicas = 1 if distribution is None else distribution.device_mesh.devices.size
    train(model, strategy)

    optimizer = model.optimizer.inner_optimizer
    tracked = list(model.trainable_variables) + list(optimizer.averages)
    copies = [replica_copies(v) for v in tracked]
    identical = all(all(np.array_equal(c[0], other) for other in c[1:]) for c in copies)
    np.savez(
        OUTPUT,
        identical=identical,
        replicas=replicas,
        copies_per_variable=min(len(c) for c in copies),
        average_count=optimizer.average_count,
        **{f"weight_{i}": c[0] for i, c in enumerate(copies)},
    )


if __name__ == "__main__":
    main()
