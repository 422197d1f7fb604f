"""`LogRegularizers`: the AR and TAR terms of a model's `ARTARRegularizer`
layers in each epoch's logs."""

import keras

from keras_rnnreg._keras_compat import nested_layers
from keras_rnnreg._stateful import sync_backend_state
from keras_rnnreg.layers.artar import ARTARRegularizer


class LogRegularizers(keras.callbacks.Callback):
    """Adds the epoch's mean AR and TAR terms to the logs.

    AWD-LSTM section 4.6 (Merity et al. 2017): the loss a model trains on is
    cross-entropy plus alpha * AR + beta * TAR, added by `ARTARRegularizer`
    with `add_loss`, so Keras's `loss` log holds their sum with the
    cross-entropy and nothing shows each term. This callback reads each
    `ARTARRegularizer`'s sums (`terms()`) at every epoch's end and writes
    `ar_loss` and `tar_loss`, the means over the epoch's training steps of
    the terms as added to the loss (`<layer name>_ar_loss`, ... when the model
    has several such layers). Callbacks after it in the list see them:
    `CSVLogger`, `TensorBoard` and the `History` record them like any metric.
    It resets the sums at every epoch's start.

    Example:

    ```python
    model.fit(train, validation_data=valid, epochs=10,
              callbacks=[LogRegularizers(), keras.callbacks.TensorBoard("logs")])
    ```
    """

    def _layers(self):
        return [l for l in nested_layers(self.model) if isinstance(l, ARTARRegularizer)]

    def on_epoch_begin(self, epoch, logs=None):
        layers = self._layers()
        if layers:
            sync_backend_state(self.model)
        for layer in layers:
            if layer.built:
                layer.reset_terms()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        layers = [l for l in self._layers() if l.built]
        if layers:
            sync_backend_state(self.model)
        for layer in layers:
            prefix = f"{layer.name}_" if len(layers) > 1 else ""
            for key, value in layer.terms().items():
                logs[prefix + key] = value
