"""The `keras-rnnreg` application: training runs that resume exactly, their
plots and summaries, text generation. The command line is `keras_rnnreg.cli`.

The library (layers, optimizers, callbacks, models) depends on Keras alone;
the application also uses matplotlib (plots), tensorflow-datasets (PTB,
WikiText-2) and keras-tuner (`tune`), installed with
`pip install "keras-rnnreg[app]"`.
"""
