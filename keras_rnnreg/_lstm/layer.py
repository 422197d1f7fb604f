"""`EngineRNN`: what WeightDrop* and Noisin* layers share on the engine."""

import keras
from keras import ops

from keras_rnnreg._dropout import dropout
from keras_rnnreg._lstm.paths import fused_only_inside_the_engine, gru, lstm
from keras_rnnreg._stateful import variables_with_states
from keras_rnnreg.noise import sample_noise

# Seed the weight mask's and the noise's generators apart from the cell's
# dropout generator: two SeedGenerators with one seed yield the same stream.
WEIGHT_SEED_OFFSET = 0x5EED
NOISE_SEED_OFFSET = 0x4015E


def _generator(seed, offset):
    return keras.random.SeedGenerator(None if seed is None else seed + offset)


class EngineRNN:
    """Mixin for `keras.layers.LSTM` and `GRU` subclasses whose loop runs on
    the engine with weight drop's U' and Noisin's ε.

    The subclass validates its arguments, calls Keras's constructor, then
    `_init_engine`. In training `inner_loop` hands `lstm()`/`gru()` the
    dropped kernel U' = U ⊙ M / (1 - p) (one mask M per forward pass; Merity
    et al. 2017, section 2) and the noise ε of the whole sequence, one
    `keras.random` draw of shape (batch, time, units) before the loop
    (Dieng et al. 2018, Algorithm 1; on JAX a draw inside the loop's scan
    would repeat at every step). At inference the layer is Keras's. A
    stateful layer carries its state in `fit` on every backend (see
    `_stateful.CarriedStates`).
    """

    use_cudnn = fused_only_inside_the_engine()

    def _init_engine(self, seed, weight_dropout=0.0, noisin=None):
        """`noisin`: None, or `(noise, noise_level, mode, noise_params)`
        validated (`keras_rnnreg.noise._check_noise`)."""
        self.weight_dropout = weight_dropout
        self.weight_dropout_seed_generator = _generator(seed, WEIGHT_SEED_OFFSET)
        self._noisin = noisin is not None
        if noisin is not None:
            self.noise, self.noise_level, self.mode, self.noise_params = noisin
            self.noise_seed_generator = _generator(seed, NOISE_SEED_OFFSET)

    @property
    def variables(self):
        return variables_with_states(self, super().variables)

    def _technique_on(self):
        return self.weight_dropout > 0 or self._noisin

    def dropped_recurrent_kernel(self, dtype=None):
        """U' = U ⊙ M / (1 - p), a fresh mask M at each call, in `dtype`
        (default: the cell's compute dtype)."""
        kernel = ops.cast(self.cell.recurrent_kernel, dtype or self.cell.compute_dtype)
        return dropout(kernel, self.weight_dropout, seed=self.weight_dropout_seed_generator)

    def draw_noise(self, shape):
        """ε of `shape` (batch, time, units), in the compute dtype or, under
        a 16-bit policy, in float32 (so that 1/γ is not rounded to a few
        bits; the noise is then applied in float32)."""
        return draw_noise(self, shape, self.noise_seed_generator)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        kernel = noise = None
        if training and self.weight_dropout > 0:
            kernel = self.dropped_recurrent_kernel()
        if training and self._noisin:
            shape = ops.shape(sequences)
            noise = self.draw_noise((shape[0], shape[1], self.units))
        loop = lstm if isinstance(self, keras.layers.LSTM) else gru
        return loop(self, sequences, initial_state, mask, training, kernel, noise,
                    self.mode if self._noisin else None)

    def get_config(self):
        config = {**super().get_config(), "weight_dropout": self.weight_dropout}
        if self._noisin:
            config.update(noise=self.noise, noise_level=self.noise_level, mode=self.mode,
                          **self.noise_params)
        return config


def draw_noise(layer, shape, seed):
    """ε for `shape` with `layer`'s Noisin settings (`noise`, `noise_level`,
    `mode`, `noise_params`) from the generator `seed`, in float32 under a
    16-bit policy."""
    dtype = keras.backend.standardize_dtype(layer.compute_dtype)
    if dtype in ("float16", "bfloat16"):
        dtype = "float32"
    return sample_noise(layer.noise, shape, layer.noise_level, layer.mode, seed=seed,
                        dtype=dtype, **layer.noise_params)
