"""Quiet start-up for the `keras-rnnreg` command.

TensorFlow's C++ runtime writes lines such as "Could not find cuda drivers
on your machine" straight to file descriptor 2 while it is imported, before
any logging setting applies (TF_CPP_MIN_LOG_LEVEL does not stop them). On a
CPU machine they are noise to a user of the command line, so when the
package is imported by that command (and only then), TensorFlow is imported
first with descriptor 2 pointed at /dev/null. A library user's imports are
left alone.
"""

import contextlib
import importlib.util
import os
import sys


def _launched_as_command():
    first = os.path.basename(sys.argv[0]) if sys.argv else ""
    return first in ("keras-rnnreg", "-m") or first == "__main__.py" and "keras_rnnreg" in sys.argv[0]


@contextlib.contextmanager
def _stderr_descriptor_silenced():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quiet_tensorflow_import():
    """Imports TensorFlow silently if the command line is starting and
    TensorFlow is installed (Keras or `keras.utils.set_random_seed` would
    import it next, noisily)."""
    if not _launched_as_command() or "tensorflow" in sys.modules:
        return
    if sys.argv and sys.argv[0] == "-m" and not _module_is_ours():
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_descriptor_silenced():
        import tensorflow

        # Device discovery is where "failed call to cuInit" is written.
        tensorflow.config.list_physical_devices()


def _module_is_ours():
    # `python -m X`: sys.argv[0] is "-m" while X's package is imported; only
    # `python -m keras_rnnreg` should be quieted.
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec is None or (spec.name or "").startswith("keras_rnnreg")
