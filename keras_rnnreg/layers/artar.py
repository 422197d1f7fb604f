import keras
from keras import ops

from keras_rnnreg._validation import check_non_negative, check_rank


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class ARTARRegularizer(keras.layers.Layer):
    """Activation (AR) and temporal activation (TAR) regularization.

    Merity, McCann & Socher (2017), *Revisiting Activation Regularization for
    Language RNNs*, section 2, and AWD-LSTM section 4.6. Applied to the output
    of the last recurrent layer only:

        AR  = alpha * L2(m ⊙ h_t)        on the dropped output m ⊙ h
        TAR = beta  * L2(h_t - h_{t+1})  on the raw (undropped) output h

    with L2 taken, as in the reference implementation, as the mean of squares
    over batch, time and features:

        loss = alpha * mean(dropped_h ** 2) + beta * mean((h[:, 1:] - h[:, :-1]) ** 2)

    The layer is a pass-through: it returns the last tensor it was given,
    unchanged, and adds the penalty to the model's loss with `add_loss` while
    training only, so `evaluate` and validation metrics stay plain
    cross-entropy. Because it only reads outputs it composes with the fused
    (cuDNN) LSTM. Masked (padded) steps are left out of both means; a TAR
    difference counts only when both of its steps are unmasked. AWD-LSTM uses
    alpha = 2, beta = 1.

    The layer also sums the two terms it adds (alpha * AR and beta * TAR)
    over the training steps since `reset_terms()`, in two non-trainable
    variables (so they are exact across a `fit`'s compiled steps on every
    backend, and saved with the model): `terms()` gives their means, and
    `keras_rnnreg.callbacks.LogRegularizers` puts them in each epoch's logs
    (History, `CSVLogger`, `TensorBoard`) as `ar_loss` and `tar_loss`.

    Args:
        alpha: Float >= 0, the AR coefficient.
        beta: Float >= 0, the TAR coefficient.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: Either h, a 3D tensor `(batch, time, units)` (AR and TAR both
            read it), or a pair `(h, dropped_h)`: the RNN output and its
            `LockedDropout` output.
        training: Python bool; the penalty is added only when True.
        mask: Optional `(batch, time)` mask, passed automatically by Keras.

    Example:

    ```python
    h = keras.layers.LSTM(400, return_sequences=True)(x)
    dropped_h = LockedDropout(0.4)(h)
    dropped_h = ARTARRegularizer(alpha=2.0, beta=1.0)([h, dropped_h])
    ```
    """

    def __init__(self, alpha=0.0, beta=0.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = check_non_negative("alpha", alpha)
        self.beta = check_non_negative("beta", beta)
        self.supports_masking = True

    def _split(self, inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(
                    "ARTARRegularizer takes one tensor h or a pair "
                    f"(h, dropped_h). Received: inputs with {len(inputs)} tensors"
                )
            return inputs[0], inputs[1]
        return inputs, inputs

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(
            input_shape[0], (list, tuple)
        ):
            names = ("h", "dropped_h")
            for name, shape in zip(names, input_shape):
                check_rank("ARTARRegularizer", name, shape, 3)
        else:
            check_rank("ARTARRegularizer", "h", input_shape, 3)
        # [sum of alpha * AR, sum of beta * TAR, training steps]. "mean"
        # aggregation: under tf.distribute each replica adds its own batch's
        # means, and the mirrored copy takes their average.
        self.term_totals = self.add_weight(
            shape=(3,), initializer="zeros", dtype="float32", trainable=False,
            autocast=False, aggregation="mean", name="term_totals",
        )

    def call(self, inputs, training=False, mask=None):
        h, dropped_h = self._split(inputs)
        if training and (self.alpha > 0 or self.beta > 0):
            if isinstance(mask, (list, tuple)):
                mask = mask[0] if mask[0] is not None else mask[-1]
            ar, tar = self.penalty_terms(h, dropped_h, mask)
            self.add_loss(ar + tar)
            self.term_totals.assign_add(ops.stack([ar, tar, ops.ones((), "float32")]))
        return dropped_h

    def terms(self):
        """`{"ar_loss": ..., "tar_loss": ...}`: the mean of alpha * AR and of
        beta * TAR over the training steps since `reset_terms()` (0.0 before
        any), as Python floats."""
        ar, tar, steps = (float(x) for x in ops.convert_to_numpy(self.term_totals))
        steps = max(steps, 1.0)
        return {"ar_loss": ar / steps, "tar_loss": tar / steps}

    def reset_terms(self):
        """Starts the sums behind `terms()` again (e.g. at an epoch's start)."""
        self.term_totals.assign(ops.zeros((3,), "float32"))

    def penalty(self, h, dropped_h, mask=None):
        """alpha * AR + beta * TAR, in float32, over unmasked steps."""
        ar, tar = self.penalty_terms(h, dropped_h, mask)
        return ar + tar

    def penalty_terms(self, h, dropped_h, mask=None):
        """`(alpha * AR, beta * TAR)`, float32 scalars, over unmasked steps."""
        h = ops.cast(h, "float32")
        dropped_h = ops.cast(dropped_h, "float32")
        if mask is None:  # no all-ones weights to multiply in (eager torch runs each)
            step_weight = pair_weight = None
        else:
            step_weight = ops.cast(mask, "float32")
            pair_weight = step_weight[:, 1:] * step_weight[:, :-1]

        def masked_mean_square(x, weight):
            # max(.., 1) keeps an all-masked batch, and a one-step batch's
            # empty TAR term, at zero instead of NaN.
            if weight is None:
                return ops.sum(ops.square(x)) / ops.maximum(ops.cast(ops.size(x), "float32"), 1.0)
            total = ops.sum(ops.square(x) * ops.expand_dims(weight, -1))
            units = ops.cast(ops.shape(x)[-1], "float32")
            return total / (ops.maximum(ops.sum(weight), 1.0) * units)

        ar = tar = ops.zeros((), "float32")
        if self.alpha > 0:
            ar = self.alpha * masked_mean_square(dropped_h, step_weight)
        if self.beta > 0:
            tar = self.beta * masked_mean_square(h[:, 1:] - h[:, :-1], pair_weight)
        return ar, tar

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            return mask[-1]
        return mask

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(
            input_shape[0], (list, tuple)
        ):
            return input_shape[-1]
        return input_shape

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}
