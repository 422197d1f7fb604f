import math
import warnings

import keras
from keras import ops

from keras_rnnreg._stateful import rnn_states_set_aside, sync_backend_state
from keras_rnnreg._validation import check_bool, check_positive_int
from keras_rnnreg.optimizers.averaging import ASGD, VALIDATION_LOG_CAPACITY


def find_asgd(optimizer):
    """The `ASGD` inside `optimizer`, looking through wrappers, else None.

    Wrappers (GradientNoise, LossScaleOptimizer) keep the wrapped optimizer
    in `inner_optimizer`.
    """
    while optimizer is not None and not isinstance(optimizer, ASGD):
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return optimizer


@keras.saving.register_keras_serializable(package="keras_rnnreg")
class NTASGD(keras.callbacks.Callback):
    """Non-monotonically triggered averaging (NT-ASGD), AWD-LSTM Algorithm 1.

    Merity, Keskar & Socher (2017), section 3. Train with `ASGD` (constant
    learning rate). Every logging interval L (an epoch by default) read the
    validation value v; while averaging has not started, if more than n
    values have been logged and

        v > min(logs[:-n])      (n = `nonmono`, the reference code's test,
                                 applied before v is appended)

    start averaging at the current iteration T. From then on the optimizer
    keeps w̄ = mean(w_T, ..., w_k); validation during training runs with w̄
    (swapped in for `evaluate`, swapped back after), and when `fit` ends the
    model holds w̄. A NaN value counts as "not improved".

    `finetune=True` is AWD-LSTM's fine-tuning stage: averaging restarts at
    T = 0 from the current (hot-started, averaged) weights as soon as
    training begins, and training stops by the same non-monotone criterion.

    The validation log, the trigger iteration and the average are ASGD
    optimizer variables, saved with the model, so
    `keras.callbacks.BackupAndRestore` or `ModelCheckpoint` plus a reload
    resume the run exactly, before or after the trigger (with `finetune=True`,
    list `BackupAndRestore` after this callback). The History gets
    `averaging_start` (T, or -1 before the trigger) at every epoch.

    Args:
        monitor: Name of the validation value in the logs (`"val_loss"`).
        nonmono: n >= 1, how many most recent values are excluded from the
            minimum. AWD-LSTM uses 5.
        interval: None to check at each epoch end, or a number of batches L;
            then `validation_data` is evaluated by the callback after every
            L-th optimizer step of the run (counted by the optimizer's
            `iterations`, so a resumed run or a second `fit` keeps the
            schedule).
        finetune: Bool; run the fine-tuning stage (see above).
        validation_data: What `model.evaluate` accepts, required with
            `interval`.
        verbose: 1 prints a line when averaging starts or fine-tuning stops.
        final_average: Bool; when `fit` ends, leave the model holding w̄
            (the default). False when training goes on in another `fit` of
            the same run (`keras-rnnreg train --resume` trains an epoch
            resumed mid-way in a `fit` of its own).

    Example:

    ```python
    model.compile(optimizer=ASGD(30.0, global_clipnorm=0.25), loss=...)
    model.fit(train, validation_data=valid, epochs=750, callbacks=[NTASGD()])
    model.fit(train, validation_data=valid, epochs=750,
              callbacks=[NTASGD(finetune=True)])
    ```
    """

    def __init__(self, monitor="val_loss", nonmono=5, interval=None,
                 finetune=False, validation_data=None, verbose=1, final_average=True):
        super().__init__()
        if not isinstance(monitor, str):
            raise TypeError(f"Argument `monitor` must be a str. Received: monitor={monitor!r}")
        self.monitor = monitor
        self.nonmono = check_positive_int("nonmono", nonmono)
        if self.nonmono >= VALIDATION_LOG_CAPACITY:
            raise ValueError(
                f"Argument `nonmono` must be < {VALIDATION_LOG_CAPACITY} (the "
                f"size of ASGD's validation log). Received: nonmono={nonmono}"
            )
        self.interval = None if interval is None else check_positive_int("interval", interval)
        if self.interval is not None and validation_data is None:
            raise ValueError(
                "NTASGD with `interval` (batches) evaluates the model itself and "
                f"needs `validation_data`. Received: interval={interval}, "
                "validation_data=None"
            )
        self.finetune = bool(finetune)
        self.final_average = check_bool("final_average", final_average)
        self.validation_data = validation_data
        self.verbose = verbose
        self._batches = 0
        self._warned_missing = False
        self._swapped = False

    @property
    def async_safe(self):
        """True without `interval`: `on_train_batch_end` then does nothing,
        so Keras may run the batch-end callbacks off the training loop."""
        return self.interval is None

    # -- Algorithm 1 ---------------------------------------------------------
    @property
    def history(self):
        """The validation values v logged so far, Algorithm 1's `logs`.

        Held by the ASGD optimizer (as variables), so checkpoints keep it.
        """
        return self.optimizer.validation_history()

    def non_monotone(self, value):
        """True when v is worse than the best value older than `nonmono` logs."""
        n = self.nonmono
        history = self.history
        return len(history) > n and value > min(history[:-n])

    def _check(self, value, logs):
        if value is None:
            return
        value = float(value)
        if math.isnan(value):
            value = math.inf  # NaN never counts as an improvement
        if self.non_monotone(value):
            if self.finetune:
                self.model.stop_training = True
                self._say("NTASGD: fine-tuning stopped (validation no longer improving).")
            elif not self.optimizer.averaging:
                self.optimizer.start_averaging()
                self._say(
                    "NTASGD: averaging started at iteration "
                    f"{int(keras.ops.convert_to_numpy(self.optimizer.iterations))} "
                    f"({self.monitor}={value:.4f} > min of all but the last {self.nonmono})."
                )
        self.optimizer.record_validation(value, keep_last=self.nonmono)

    # -- callback hooks -----------------------------------------------------
    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        self.optimizer = find_asgd(optimizer)
        if self.optimizer is None:
            raise TypeError(
                "NTASGD needs the model compiled with keras_rnnreg.optimizers.ASGD "
                "(optionally inside GradientNoise or LossScaleOptimizer), e.g. "
                "model.compile(optimizer=ASGD(30.0, global_clipnorm=0.25), ...). "
                f"Received: optimizer of type {type(optimizer).__name__}"
            )
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        # Counted in optimizer steps, which a checkpoint restores: a resumed
        # run (or a second `fit`) keeps checking every L steps of the whole
        # run rather than L batches into each `fit`.
        self._batches = int(ops.convert_to_numpy(optimizer.iterations))
        if self.finetune:
            self.optimizer.clear_validation_history()
            self.optimizer.start_averaging()

    def on_train_batch_end(self, batch, logs=None):
        if self.interval is None:
            return
        self._batches += 1
        if self._batches % self.interval:
            return
        # evaluate() called here runs no callbacks: swap w̄ in by hand, and
        # (for stateful RNNs, as BPTTCallback would) validate from zero
        # states, then give training back the state of its last batch.
        with rnn_states_set_aside(self.model):
            self.on_test_begin()
            try:
                results = self._evaluate()
            finally:
                self.on_test_end()
        key = self.monitor[4:] if self.monitor.startswith("val_") else self.monitor
        self._check(self._read(results, key), logs)

    def _evaluate(self):
        sync_backend_state(self.model)
        data = self.validation_data
        if isinstance(data, (tuple, list)):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(tuple(data))
            return self.model.evaluate(
                x, y, sample_weight=sample_weight, verbose=0, return_dict=True
            )
        return self.model.evaluate(data, verbose=0, return_dict=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if self.interval is None:
            self._check(self._read(logs, self.monitor), logs)
        logs["averaging_start"] = float(
            keras.ops.convert_to_numpy(self.optimizer.averaging_start)
        )

    def on_test_begin(self, logs=None):
        if getattr(self, "optimizer", None) is None or self._swapped:
            return
        sync_backend_state(self.model)
        if self.optimizer.averaging:
            self.optimizer.swap_average_weights()
            self._swapped = True

    def on_test_end(self, logs=None):
        if self._swapped:
            self.optimizer.swap_average_weights()
            self._swapped = False

    def on_train_end(self, logs=None):
        if self.final_average and self.optimizer.averaging:
            sync_backend_state(self.model)
            self.optimizer.assign_average_to_variables()

    # -- helpers ------------------------------------------------------------
    def _read(self, logs, key):
        if key in logs:
            return logs[key]
        if not self._warned_missing:
            self._warned_missing = True
            warnings.warn(
                f"NTASGD: monitor '{self.monitor}' is not in the logs; available "
                f"keys: {sorted(logs)}. Pass validation data to fit() or set "
                "`monitor` to one of these.",
                stacklevel=2,
            )
        return None

    def _say(self, message):
        if self.verbose:
            print(message)

    def get_config(self):
        """The constructor's arguments but `validation_data` (data, not
        configuration): with `interval`, rebuild the callback with
        `NTASGD(**config, validation_data=...)`."""
        return {
            "monitor": self.monitor, "nonmono": self.nonmono,
            "interval": self.interval, "finetune": self.finetune,
            "verbose": self.verbose, "final_average": self.final_average,
        }

    @classmethod
    def from_config(cls, config):
        # keras.callbacks.Callback has none, so Keras's deserialization of
        # a registered callback failed without it.
        return cls(**config)

