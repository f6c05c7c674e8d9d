"""bench/prune_speed.py -- time Shift-Gsample (prune.py, Eq. 11) on 10 million scores, with the machine.

Run: python bench/prune_speed.py [--n 10000000 --keep 0.5 --repeats 3 --target 5]
Target: 10M scores at keep 0.5 in under 5 s on the CPU (the ranking's sort dominates; the Gumbel top-k sampling is
O(N)). Prints the best of --repeats runs (wall and CPU time), the target, and the machine with its load average.
"""
import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import prune  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000_000, help="number of scores")
    p.add_argument("--keep", type=float, default=0.5, help="fraction kept")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    p.add_argument("--target", type=float, default=5.0, help="target seconds")
    p.add_argument("--seed", type=int, default=0, help="seed of the scores and of the sampling")
    a = p.parse_args(argv)
    scores = np.random.default_rng(a.seed).normal(size=a.n).astype(np.float32)  # like a rater's scores.npy
    count = int(round(a.keep * a.n))
    times, cpu = [], []
    for r in range(a.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        rows = prune.shift_gsample(scores, count, np.random.default_rng(a.seed + r))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert len(rows) == count and rows.dtype == np.int64 and np.all(np.diff(rows) > 0)
    best = min(times)
    # The load average says whether other processes shared the CPU: on a busy machine wall time exceeds CPU time.
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
          f"(load average {os.getloadavg()[0]:.1f}), numpy {np.__version__}, torch {torch.__version__}")
    print(f"shift_gsample on {a.n:,} scores, keep {a.keep:g} ({count:,} rows, discard top "
          f"{prune.default_discard_top(a.keep):g}%): best {best:.2f} s wall of {a.repeats} "
          f"({', '.join(f'{t:.2f}' for t in times)}; CPU time {min(cpu):.2f} s); "
          f"target < {a.target:g} s: {'PASS' if best < a.target else 'FAIL'}")


if __name__ == "__main__":
    main()
