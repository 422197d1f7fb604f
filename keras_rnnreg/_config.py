"""Config helpers shared by the serializable classes that wrap another Keras object."""

import keras


def from_wrapper_config(cls, config, key, custom_objects=None):
    """`cls(inner, **rest)` for a wrapper whose `get_config` serializes the
    wrapped object under `config[key]` and the rest as keyword arguments.

    The caller's `config` is left as it was."""
    config = dict(config)
    inner = keras.saving.deserialize_keras_object(config.pop(key), custom_objects=custom_objects)
    return cls(inner, **config)
