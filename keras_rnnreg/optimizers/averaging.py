import keras
import numpy as np
from keras import ops

from keras_rnnreg._keras_compat import optimizer_trainable_variables, optimizer_variable_index

# Room for NT-ASGD's validation log (see `record_validation`).
VALIDATION_LOG_CAPACITY = 256


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class ASGD(keras.optimizers.SGD):
    """SGD with uniform iterate averaging (averaged SGD) held as optimizer state.

    Averaged SGD (Polyak & Juditsky, 1992) as used by AWD-LSTM (Merity et al.
    2017, section 3, Algorithm 1): SGD steps with a constant learning rate,
    and once averaging has been triggered at iteration T the optimizer keeps

        w̄ = (1 / (k - T + 1)) Σ_{i=T}^{k} w_i

    updated in the train step after each SGD step as
    w̄ ← w̄ + (w_k − w̄) / (k − T + 1), in the way Keras's `use_ema` keeps its
    moving average, but uniform. Averaging is off until `start_averaging()`
    (called by the `NTASGD` callback when its non-monotone criterion fires),
    which sets w̄ = w_T. The average and the trigger iteration are optimizer
    variables, so they live inside the compiled train step on every backend
    and are saved with the optimizer (checkpoints resume the average
    exactly). `swap_average_weights()` exchanges the model's weights and the
    average, e.g. to validate with w̄ and swap back.

    Args:
        learning_rate: The SGD learning rate (AWD-LSTM: 30, constant).
        **sgd_kwargs: Any `keras.optimizers.SGD` argument (`momentum`,
            `weight_decay`, `global_clipnorm`, ...).

    Example:

    ```python
    model.compile(optimizer=ASGD(30.0, global_clipnorm=0.25), loss=...)
    model.fit(..., callbacks=[keras_rnnreg.callbacks.NTASGD(nonmono=5)])
    ```
    """

    def __init__(self, learning_rate=0.01, **sgd_kwargs):
        super().__init__(learning_rate=learning_rate, **sgd_kwargs)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._averages = [
            self.add_variable_from_reference(v, name="average") for v in variables
        ]
        # -1 while averaging is off; otherwise T, the value of `iterations`
        # when it started. The count k - T + 1 derives from it.
        self.averaging_start = self.add_variable(
            shape=(), initializer=keras.initializers.Constant(-1), dtype="int32",
            aggregation="only_first_replica", name="averaging_start",
        )
        # NT-ASGD's log of validation values, kept here so that a checkpoint
        # taken before the trigger resumes the non-monotone test exactly.
        self.validation_log = self.add_variable(
            shape=(VALIDATION_LOG_CAPACITY,), dtype="float32",
            aggregation="only_first_replica", name="validation_log",
        )
        self.validation_log_size = self.add_variable(
            shape=(), dtype="int32", aggregation="only_first_replica",
            name="validation_log_size",
        )

    @property
    def averages(self):
        """The running averages w̄, one per trainable variable."""
        return list(self._averages)

    @property
    def averaging(self):
        """Whether averaging has started (Python bool; reads the variable)."""
        return bool(self.built and int(ops.convert_to_numpy(self.averaging_start)) >= 0)

    @property
    def average_count(self):
        """How many iterates w̄ averages: k - T + 1, or 0 before the trigger."""
        if not self.averaging:
            return 0
        start = int(ops.convert_to_numpy(self.averaging_start))
        return int(ops.convert_to_numpy(self.iterations)) - start + 1

    def start_averaging(self):
        """Triggers averaging at the current iteration T: w̄ = w_T."""
        self._require_built("start_averaging")
        for variable, average in zip(optimizer_trainable_variables(self), self._averages):
            # A copy: on JAX two variables sharing one buffer break the train
            # step's buffer donation.
            average.assign(ops.copy(variable))
        self.averaging_start.assign(ops.copy(ops.cast(self.iterations, "int32")))

    def stop_averaging(self):
        """Turns averaging off (the average is kept until the next start)."""
        self._require_built("stop_averaging")
        self.averaging_start.assign(-1)

    def validation_history(self):
        """The logged validation values (NT-ASGD's `logs`), oldest first."""
        self._require_built("validation_history")
        size = int(ops.convert_to_numpy(self.validation_log_size))
        return [float(v) for v in ops.convert_to_numpy(self.validation_log)[:size]]

    def record_validation(self, value, keep_last):
        """Appends a validation value to the log.

        When the log is full it is compacted to [min(older values)] + the
        last `keep_last` values, which leaves NT-ASGD's test
        `len(logs) > n and v > min(logs[:-n])` (n = keep_last) unchanged.
        """
        history = self.validation_history()
        if len(history) == VALIDATION_LOG_CAPACITY:
            history = [min(history[:-keep_last])] + history[-keep_last:]
        history.append(float(value))
        log = np.zeros((VALIDATION_LOG_CAPACITY,), "float32")
        log[: len(history)] = history
        self.validation_log.assign(log)
        self.validation_log_size.assign(len(history))

    def clear_validation_history(self):
        self._require_built("clear_validation_history")
        self.validation_log_size.assign(0)

    def swap_average_weights(self):
        """Exchanges model weights and averages (its own inverse)."""
        self._require_built("swap_average_weights")
        for variable, average in zip(optimizer_trainable_variables(self), self._averages):
            # Copies both ways: reading a variable does not copy it on
            # TensorFlow (the tf.Variable itself) nor torch (the tensor that
            # `assign` overwrites in place), so without the first copy both
            # would end up holding w̄; without the second, on JAX the two
            # variables would share one buffer, which breaks the train step's
            # buffer donation.
            weights = ops.copy(variable)
            variable.assign(ops.copy(average))
            average.assign(weights)

    def update_step(self, gradient, variable, learning_rate):
        if keras.backend.backend() == "torch" and self.momentum == 0:
            # w -= lr·g in place: one pass where Keras's SGD makes the
            # product, the difference and the copy back as three.
            import torch

            with torch.no_grad():  # also outside Keras's trainer (custom loops)
                variable.value.addcmul_(
                    ops.cast(gradient, variable.dtype), ops.cast(learning_rate, variable.dtype),
                    value=-1,
                )
        else:
            super().update_step(gradient, variable, learning_rate)
        average = self._averages[optimizer_variable_index(self, variable)]
        start = ops.cast(self.averaging_start, "float32")
        # During this step `iterations` = k - 1, so the new count is k - T + 1.
        count = ops.cast(self.iterations, "float32") - start + 2.0
        weight = ops.cast(ops.where(start >= 0, 1.0 / ops.maximum(count, 1.0), 0.0), average.dtype)
        if keras.backend.backend() == "torch":
            # Eager torch would make three passes over every weight (the
            # difference, its scaling, the sum), compiled backends fuse
            # them; lerp_ is one: w̄ + (w - w̄)·weight in place.
            import torch

            with torch.no_grad():
                average.value.lerp_(variable.value, weight)
            return
        self.assign_add(average, ops.multiply(ops.subtract(variable, average), weight))

    def assign_average_to_variables(self):
        """Sets the model's variables to w̄ (the model NT-ASGD returns)."""
        self._require_built("assign_average_to_variables")
        for variable, average in zip(optimizer_trainable_variables(self), self._averages):
            variable.assign(ops.copy(average))

    def _require_built(self, method):
        if not self.built:
            raise ValueError(
                f"ASGD.{method}() needs the optimizer's variables: build it "
                "first (model.fit does, or optimizer.build(model.trainable_variables))."
            )
