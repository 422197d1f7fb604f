import contextlib
import functools
import itertools
import math
import random

import keras
from keras import ops

from keras_rnnreg._config import from_wrapper_config
from keras_rnnreg._keras_compat import clip_gradients, own_optimizer_variables, random_seed_dtype
from keras_rnnreg._threefry import standard_normal
from keras_rnnreg._validation import check_non_negative, check_seed

_CLIP_ARGUMENTS = ("clipnorm", "global_clipnorm", "clipvalue")


@contextlib.contextmanager
def _clipping_and_scaling_off(optimizer):
    """The wrapped optimizer would clip (and unscale) after the noise; the
    wrapper does both before it, so they are off while it applies the update
    and restored after: the optimizer the user passed is left as it was."""
    saved = {key: getattr(optimizer, key) for key in (*_CLIP_ARGUMENTS, "loss_scale_factor")}
    for key in saved:
        setattr(optimizer, key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(optimizer, key, value)


class _CounterSeed(keras.random.SeedGenerator):
    """A seed computed in-graph from (base seed + index, step); no state.

    `keras.random` draws from a `SeedGenerator`'s `next()`. A stateful
    generator would need its own variable threaded through every backend's
    train step (and synchronized across replicas); a seed derived from the
    step counter is the same on every replica and in every trace, so replicas
    add identical noise and resuming at step t reproduces step t's noise.
    """

    def __init__(self, base, step):  # no super().__init__: there is no state
        dtype = random_seed_dtype()  # uint32, int64 or int32, per backend
        self._seed = ops.stack([ops.cast(base, dtype), ops.cast(step, dtype)])

    def next(self, ordered=True):
        return self._seed


def _replica_noise_scale():
    """1 / replicas under a TF distribution strategy, else 1.

    Keras's TF trainer divides each replica's loss by the number of replicas
    and sums the replicas' gradients (after `apply` is entered). Every
    replica draws the same noise (same seed), so adding noise / replicas on
    each one adds exactly the noise once to the summed gradient.
    """
    if keras.backend.backend() != "tensorflow":
        return 1.0
    import tensorflow as tf

    return 1.0 / tf.distribute.get_strategy().num_replicas_in_sync


def _static_shape(tensor):
    shape = tuple(tensor.shape)
    if any(dim is None for dim in shape):
        raise ValueError(
            "GradientNoise needs gradients of static shape (those of the "
            f"trainable variables). Received: a gradient of shape {shape}"
        )
    return shape


def _noisy_gradient(grad, seed, stddev):
    """grad + N(0, stddev²) noise, element by element independent, from the
    backend's cheapest exact generator (each measured in docs/benchmarks.md).

    On JAX and TensorFlow `_threefry.standard_normal`: Threefry-2x32 bits
    and the erfinv transform of `jax.random.normal`, written as elementwise
    ops that XLA fuses with the addition. The same seed gives the same noise
    on both. On TensorFlow that part runs as a function of its own with
    `jit_compile=True`, in the train step whether or not that is compiled:
    XLA is what fuses it. On torch `keras.random.normal`.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return grad + ops.cast(stddev, grad.dtype) * ops.cast(
            standard_normal(_static_shape(grad), seed.next()), grad.dtype
        )
    if backend == "tensorflow":
        return _tf_noisy_gradient()(grad, seed.next(), ops.cast(stddev, "float32"))
    noise = keras.random.normal(_static_shape(grad), dtype=grad.dtype, seed=seed)
    return grad + ops.cast(stddev, grad.dtype) * noise


@functools.cache
def _tf_noisy_gradient():
    """`grad + stddev * z` on TensorFlow, compiled by XLA (`_noisy_gradient`)."""
    import tensorflow as tf

    @tf.function(jit_compile=True, autograph=False)
    def noisy(grad, seed, stddev):
        z = standard_normal(_static_shape(grad), seed)
        return grad + tf.cast(stddev * z, grad.dtype)

    return noisy


def _plus_scaled(grad, noise, scale):
    """grad + scale * noise on torch in one pass (`addcmul`), where eager
    ops would make the product its own pass and allocation."""
    import torch

    return torch.addcmul(grad, noise, scale)


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class GradientNoise(keras.optimizers.Optimizer):
    """Annealed Gaussian gradient noise around any Keras optimizer.

    Neelakantan et al. (2015), *Adding Gradient Noise Improves Learning for
    Very Deep Networks*, section 3, equation (1): at step t (the number of
    updates applied so far: 0, 1, 2, ...) every gradient gets independent noise

        g_t ← g_t + N(0, σ_t²),   σ_t² = η / (1 + t)^γ

    and the wrapped optimizer then applies g_t as usual. The paper uses
    γ = 0.55 and η ∈ {0.01, 1.0} (section 3: "selecting η from {0.01, 1.0}").

    Order of operations: loss-scale unscaling, then gradient clipping
    (`clipnorm`, `global_clipnorm` or `clipvalue`, given here or on the
    wrapped optimizer: either place, applied exactly once), then the noise,
    then the wrapped optimizer's own update (weight decay, momentum, EMA,
    ...). The noise is therefore never clipped. σ_t is computed in-graph from
    the wrapped optimizer's `iterations`; the noise's seed is derived from
    `seed` and the step, so every replica of a distributed run adds the same
    noise and replicas never diverge.

    The wrapper forwards `learning_rate` and `iterations` to the wrapped
    optimizer. Under `mixed_float16`, `model.compile` wraps it in a
    `keras.optimizers.LossScaleOptimizer`, which unscales the gradients
    before this wrapper sees them.

    Args:
        optimizer: A `keras.optimizers.Optimizer` instance (SGD, Adam, AdamW,
            RMSprop, `ASGD`, ...). It is not modified: clipping (and
            `loss_scale_factor`) set on it are applied by the wrapper, before
            the noise, instead of by it after.
        eta: Float >= 0, η, the noise variance at t = 0.
        gamma: Float >= 0, γ, the annealing exponent.
        seed: Optional int, base seed of the noise.
        clipnorm: Optional clipping, as on any Keras optimizer. Set clipping
            here or on `optimizer`, not both.
        global_clipnorm: Optional clipping, as `clipnorm`.
        clipvalue: Optional clipping, as `clipnorm`.
        name: Optional name.

    Example:

    ```python
    optimizer = GradientNoise(
        keras.optimizers.SGD(30.0, global_clipnorm=0.25), eta=0.01, gamma=0.55
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    ```
    """

    def __init__(
        self, optimizer, eta=0.01, gamma=0.55, seed=None, clipnorm=None,
        global_clipnorm=None, clipvalue=None, loss_scale_factor=None, name=None,
        **kwargs,
    ):
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "Argument `optimizer` must be a `keras.optimizers.Optimizer` "
                f"instance, e.g. keras.optimizers.SGD(1.0). Received: "
                f"optimizer={optimizer!r} of type {type(optimizer).__name__}"
            )
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            raise TypeError(
                "GradientNoise cannot wrap a LossScaleOptimizer: the noise must "
                "be added to unscaled gradients. Wrap the other way round, "
                "keras.optimizers.LossScaleOptimizer(GradientNoise(...)), which "
                "is what model.compile does under 'mixed_float16'. Received: "
                f"optimizer={optimizer!r}"
            )
        if optimizer.gradient_accumulation_steps:
            raise ValueError(
                "GradientNoise does not support a wrapped optimizer with "
                "`gradient_accumulation_steps` (the noise would be added to "
                "each micro-batch). Received: gradient_accumulation_steps="
                f"{optimizer.gradient_accumulation_steps}"
            )
        own = {"clipnorm": clipnorm, "global_clipnorm": global_clipnorm,
               "clipvalue": clipvalue}
        inner = {key: getattr(optimizer, key) for key in _CLIP_ARGUMENTS}
        if any(own.values()) and any(inner.values()):
            raise ValueError(
                "Set gradient clipping either on GradientNoise or on the wrapped "
                "optimizer, not both: it must be applied exactly once, before "
                f"the noise. Received: GradientNoise({own}) wrapping "
                f"{type(optimizer).__name__}({inner})"
            )
        # Clipping and unscaling set on the wrapped optimizer are done by the
        # wrapper, before the noise (see `_clipping_and_scaling_off`).
        own_clipping, own_loss_scale_factor = any(own.values()), loss_scale_factor
        if loss_scale_factor is None:
            loss_scale_factor = optimizer.loss_scale_factor
        super().__init__(
            learning_rate=0.0, name=name, loss_scale_factor=loss_scale_factor,
            **(own if own_clipping else inner),
        )
        self._own_clipping = own_clipping
        self._own_loss_scale_factor = own_loss_scale_factor
        self.inner_optimizer = optimizer
        self.eta = check_non_negative("eta", eta)
        self.gamma = check_non_negative("gamma", gamma)
        self.seed = check_seed(seed)
        self._base_seed = random.randint(0, 2**30) if seed is None else seed

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return own_optimizer_variables(self) + self.inner_optimizer.variables

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def noise_stddev(self, step=None):
        """σ_t = sqrt(η / (1 + t)^γ), by default at the current step."""
        step = self.iterations if step is None else step
        t = ops.cast(step, "float32")
        return ops.sqrt(self.eta / ops.power(1.0 + t, self.gamma))

    def add_noise(self, grads):
        """g + N(0, σ_t²) for each gradient, independent across gradients.

        One draw per gradient, each with its own seed, derived from `seed`,
        the gradient's index and the step. On torch one normal draw per
        dtype over the gradients' total size, split into their shapes (the
        same distribution: independent element for element): there every
        call is its own eager kernel, while on JAX and TensorFlow splitting
        one large draw costs copies that per-gradient draws, fused with the
        addition or cache-sized, do not (docs/benchmarks.md).
        """
        stddev = self.noise_stddev() * _replica_noise_scale()
        if keras.backend.backend() != "torch":
            return [
                None if grad is None else self._noisy(grad, stddev, index)
                for index, grad in enumerate(grads)
            ]
        noisy = list(grads)
        groups = {}  # dtype -> indices of its gradients, in order
        for index, grad in enumerate(grads):
            if grad is not None:
                noisy[index] = grad = ops.convert_to_tensor(grad)
                groups.setdefault(keras.backend.standardize_dtype(grad.dtype), []).append(index)
        for group, (dtype, indices) in enumerate(groups.items()):
            shapes = [_static_shape(noisy[i]) for i in indices]
            sizes = [math.prod(shape) for shape in shapes]
            noise = keras.random.normal(
                (sum(sizes),), dtype=dtype,
                seed=self._seed(group),
            )
            scale = ops.cast(stddev, dtype)
            pieces = ops.split(noise, list(itertools.accumulate(sizes[:-1]))) if len(sizes) > 1 else [noise]
            for index, shape, piece in zip(indices, shapes, pieces):
                noisy[index] = _plus_scaled(noisy[index], ops.reshape(piece, shape), scale)
        return noisy

    def _seed(self, index):
        """The seed of draw `index` (a gradient's or a dtype group's) at
        the current step."""
        return _CounterSeed(self._base_seed + 7919 * index, self.iterations)

    def _noisy(self, grad, stddev, index):
        return _noisy_gradient(ops.convert_to_tensor(grad), self._seed(index), stddev)

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "GradientNoise must be built before `apply(grads)` without "
                    "`trainable_variables`: call `optimizer.build(variables)`."
                )
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
            self.built = True
        grads = list(grads)
        if self.loss_scale_factor is not None:
            grads = [g if g is None else g / self.loss_scale_factor for g in grads]
        grads = self.add_noise(clip_gradients(self, grads))
        with _clipping_and_scaling_off(self.inner_optimizer):
            self.inner_optimizer.apply(grads, trainable_variables)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        # Not super().get_config(): most base arguments belong to the wrapped
        # optimizer, as in keras.optimizers.LossScaleOptimizer.
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "eta": self.eta,
            "gamma": self.gamma,
            "seed": self._base_seed,
            # Only what was set on the wrapper: the wrapped optimizer's
            # config keeps its own, as the user set them.
            "clipnorm": self.clipnorm if self._own_clipping else None,
            "global_clipnorm": self.global_clipnorm if self._own_clipping else None,
            "clipvalue": self.clipvalue if self._own_clipping else None,
            "loss_scale_factor": self._own_loss_scale_factor,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return from_wrapper_config(cls, config, "optimizer", custom_objects)
