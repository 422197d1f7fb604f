"""What the run directory's JAX compilation cache saves when a run resumes.

`keras-rnnreg train` keeps JAX's persistent compilation cache in
`<run>/jax-cache` (keras_rnnreg/app/compile_cache.py). This trains one run
of `make demo`'s job (the embedded synthetic corpus, fixed BPTT; with
`--variable-bptt` AWD-LSTM's lengths, padded to multiples of 8 on a CPU)
for `--epochs` epochs, then, `--rounds`
times, resumes two copies of it for one more epoch, each in a fresh
process, in turn:

    cached    the copy as the run left it (its jax-cache included)
    no_cache  the same copy without jax-cache: every step compiles again

Printed: the wall time of each `keras-rnnreg train --resume` command
(start-up and imports included, the same for both), medians and their
difference, and JAX's count of cache hits and compilations.

    taskset -c 0 .venv/bin/python benchmarks/resume_compile.py
"""

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def command(*args):
    return [sys.executable, "-m", "keras_rnnreg", *args]


def timed(argv, env):
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed: {' '.join(argv)}\n{done.stderr[-2000:]}")
    log = done.stderr
    return (time.perf_counter() - start, log.count("Persistent compilation cache hit"),
            log.count("Finished XLA compilation of jit(train_step)")
            + log.count("Finished XLA compilation of jit(test_step)"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 epoch, 1 round: a smoke test")
    parser.add_argument("--variable-bptt", action="store_true",
                        help="AWD-LSTM's variable lengths (the demo's job has fixed ones)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.rounds = 1, 1
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_LOG_COMPILES": "1"}
    print(f"date: {datetime.date.today()}  backend: jax; make demo's job, {args.epochs} epochs, "
          f"then resumed for 1 more, {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as root:
        run = os.path.join(root, "run")
        extra = ["--variable-bptt", "true"] if args.variable_bptt else []
        seconds, _, compiled = timed(command("train", "--epochs", str(args.epochs), *extra,
                                             "--output", run, "--quiet"), env)
        print(f"  first run: {seconds:.1f} s, {compiled} train/test steps compiled")
        times = {"cached": [], "no_cache": []}
        for round_ in range(args.rounds):
            for name in times:
                copy = os.path.join(root, f"{name}-{round_}")
                shutil.copytree(run, copy)
                if name == "no_cache":
                    shutil.rmtree(os.path.join(copy, "jax-cache"))
                seconds, hits, compiled = timed(command(
                    "train", "--resume", copy, "--epochs", str(args.epochs + 1), "--quiet"), env)
                times[name].append(seconds)
                print(f"  round {round_ + 1} {name:<8} {seconds:6.1f} s  cache hits {hits:3d}  "
                      f"train/test steps compiled {compiled}", flush=True)
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"\nmedian resume: cached {median['cached']:.1f} s, no_cache {median['no_cache']:.1f} s; "
          f"saved {median['no_cache'] - median['cached']:.1f} s "
          f"(no_cache / cached = {median['no_cache'] / median['cached']:.2f})")


if __name__ == "__main__":
    main()
