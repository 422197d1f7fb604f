"""Sampling text from a trained language model."""

import keras
import numpy as np

from keras_rnnreg._stateful import reset_rnn_states


def sample_text(model, vocab, prompt=(), length=50, temperature=1.0, seed=None,
                allow_unk=False, allow_eos=False):
    """Samples `length` words after `prompt` (a list of words).

    The model's stateful layers carry the state from word to word; a model
    built for a fixed batch size gets the same prompt in every row and row 0
    is read. `<unk>` and `<eos>` are never drawn unless allowed; `<eos>`, if
    drawn, is written as a line break.

    Returns:
        The generated words (a list of str), prompt excluded.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)):
        raise TypeError(f"Argument `temperature` must be a number. Received: temperature={temperature!r}")
    if not 0 < temperature < np.inf:
        raise ValueError(f"Argument `temperature` must be finite and > 0. Received: temperature={temperature!r}")
    if isinstance(length, bool) or not (isinstance(length, int) and length >= 1):
        raise ValueError(f"Argument `length` must be an int >= 1. Received: length={length!r}")
    ids = {word: i for i, word in enumerate(vocab)}
    unknown = [w for w in prompt if w not in ids]
    if unknown:
        raise ValueError(f"The prompt has words outside the vocabulary: {', '.join(unknown)}")
    banned = [ids[w] for w, allowed in (("<unk>", allow_unk), ("<eos>", allow_eos))
              if w in ids and not allowed]
    rng = np.random.default_rng(seed)
    batch = model.inputs[0].shape[0] or 1
    reset_rnn_states(model)
    context = [ids[w] for w in prompt] or [ids.get("<eos>", 0)]
    words = []
    for _ in range(length):
        x = np.tile(np.asarray(context, "int32")[None, :], (batch, 1))
        logits = keras.ops.convert_to_numpy(model(x, training=False))[0, -1].astype("float64")
        logits[banned] = -np.inf
        logits = logits / temperature
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        choice = int(rng.choice(len(probabilities), p=probabilities))
        words.append(vocab[choice])
        context = [choice]  # the state carries what came before
    return words
