"""Training throughput of a language model's output projection: over
(batch, time) hidden states, as Keras's `Dense` and a plain matmul compute
it, against over the flattened tokens, as the library's decoders do.

The LM of benchmarks/throughput.py's `plain` (vocabulary 10000, embedding
200, two `WeightDropLSTM(200, weight_dropout=0)`, batch 20, BPTT 35), with
four output layers, interleaved in one process:

    dense_3d     keras.layers.Dense(10000): one matmul over (batch, time, 200)
    token_dense  TokenDense(10000), the untied decoder `language_model`
                 builds: the same Dense, its matmul over (batch * time, 200)
    tied_3d      TiedEmbedding's reverse call as a matmul over (batch, time,
                 200) with the transposed embedding matrix, plus the bias
    tied_flat    TiedEmbedding's reverse call (the library): over the
                 flattened tokens (`project_tokens`; on torch one linear)

Same values and gradients in each pair (tests/test_projection.py). SGD(lr=1,
global_clipnorm=0.25), TokenCrossEntropy, random ids. Printed: medians of
tokens/s over repeats and the ratio within each pair.

    KERAS_BACKEND=jax taskset -c 0 .venv/bin/python benchmarks/output_projection.py --threads 1
"""

import argparse
import datetime
import functools

import keras
from keras import ops
import numpy as np

from _interleaved import print_medians, set_threads, time_interleaved
from keras_rnnreg.layers import TiedEmbedding, WeightDropLSTM
from keras_rnnreg.layers._projection import TokenDense
from keras_rnnreg.losses import TokenCrossEntropy

VOCAB, EMBEDDING, HIDDEN, BATCH = 10000, 200, 200, 20


class _Tied3D(TiedEmbedding):
    """The reverse call as one matmul over (batch, time, features)."""

    def call(self, inputs, reverse=False):
        if not reverse:
            return super().call(inputs)
        embeddings = ops.cast(self.embeddings, self.compute_dtype)
        logits = ops.matmul(inputs, ops.transpose(embeddings))
        return logits + ops.cast(self.output_bias, self.compute_dtype)


def build(variant, bptt):
    tokens = keras.Input((bptt,), batch_size=BATCH, dtype="int32")
    tied = variant.startswith("tied")
    embedding = ({"tied_3d": _Tied3D}.get(variant, TiedEmbedding))(
        VOCAB, EMBEDDING, use_output_bias=True
    ) if tied else keras.layers.Embedding(VOCAB, EMBEDDING)
    x = embedding(tokens)
    x = WeightDropLSTM(HIDDEN, weight_dropout=0.0, return_sequences=True)(x)
    h = WeightDropLSTM(EMBEDDING, weight_dropout=0.0, return_sequences=True)(x)
    if tied:
        logits = embedding(h, reverse=True)
    else:
        logits = (TokenDense if variant == "token_dense" else keras.layers.Dense)(VOCAB)(h)
    model = keras.Model(tokens, logits)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0, global_clipnorm=0.25),
        loss=TokenCrossEntropy(),
    )
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batches", type=int, default=4, help="timed steps per variant per repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for torch and TensorFlow (JAX ignores it)")
    parser.add_argument("--quick", action="store_true", help="2 repeats x 1 step: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.batches, args.warmup = 2, 1, 1
    backend = keras.backend.backend()
    set_threads(args.threads)
    keras.utils.set_random_seed(0)
    data = np.random.default_rng(0).integers(0, VOCAB, size=(20, BATCH, args.bptt + 1), dtype=np.int32)
    x, y = data[:, :, :-1], data[:, :, 1:]
    print(f"date: {datetime.date.today()}  backend: {backend}  keras {keras.__version__}  "
          f"threads: {args.threads or 'framework default'}")
    print(f"model: vocab {VOCAB}, embedding {EMBEDDING}, 2 LSTMs, batch {BATCH}, bptt {args.bptt}; "
          f"{args.repeats} repeats x {args.batches} steps, interleaved")
    variants = ("dense_3d", "token_dense", "tied_3d", "tied_flat")
    builders = {name: functools.partial(build, name, args.bptt) for name in variants}
    rates = time_interleaved(builders, x, y, BATCH * args.bptt, args.repeats, args.batches, args.warmup)
    median = print_medians(backend, rates)
    print(f"\ntoken_dense / dense_3d = {median['token_dense'] / median['dense_3d']:.3f}; "
          f"tied_flat / tied_3d = {median['tied_flat'] / median['tied_3d']:.3f}")


if __name__ == "__main__":
    main()
