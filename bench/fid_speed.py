"""bench/fid_speed.py -- how long the FID itself takes: mean, covariance and the symmetric eigen route, in float64.

Run:     python bench/fid_speed.py [--n 10000 --dim 256 --repeats 3]
Target:  10,000 x 256 features on each side in under 2 s on the CPU (the figure a reader should reproduce).
Prints the best time over a few repeats, the target, and the machine (platform, CPU count, torch/numpy versions).
The work is about 3 GFLOP and one 256x256 eigendecomposition per side: ~0.05 s on one core. On a busy machine
numpy's multi-threaded OpenBLAS can spend far longer waiting for its second thread; OPENBLAS_NUM_THREADS=1 avoids it.
"""
import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere
from evaluate import fid  # noqa: E402

TARGET_S = 2.0


def main(argv=None):
    p = argparse.ArgumentParser(description="Time evaluate.fid on random features (CPU, float64).")
    p.add_argument("--n", type=int, default=10000, help="samples on each side")
    p.add_argument("--dim", type=int, default=256, help="feature dimension (the evaluator's features are 256-d)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; the best one is reported")
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    feats_a = rng.normal(size=(a.n, a.dim)).astype(np.float32)
    feats_b = (rng.normal(size=(a.n, a.dim)) * 1.1 + 0.1).astype(np.float32)
    times = []
    for _ in range(a.repeats):
        start = time.perf_counter()
        value = fid(feats_a, feats_b)
        times.append(time.perf_counter() - start)
    best = min(times)
    print(f"FID of {a.n:,} x {a.dim} features against {a.n:,} x {a.dim}: {best:.3f} s (best of {a.repeats}; "
          f"all {', '.join(f'{t:.3f}' for t in times)}), FID = {value:.4f}")
    print(f"target: under {TARGET_S:.0f} s -- {'met' if best < TARGET_S else 'NOT met'}")
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
          f"python {platform.python_version()}; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")


if __name__ == "__main__":
    main()
