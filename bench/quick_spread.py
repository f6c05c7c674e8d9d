"""bench/quick_spread.py -- what reproduces bit for bit, and what spread to expect on another machine.

Run: python bench/quick_spread.py [--runs runs/ablate_quick] [--out runs/spread]      (after `python ablate.py`)
Re-trains seed 0 of a few quick-grid runs exactly as the grid did (one thread, the same precision) and checks that
the weights are bit-identical, then trains them again as another machine would: in fp32 (a CPU without bf16
hardware) and with 2 threads (another summation order). Each is evaluated as the grid evaluates; the table shows
how far each lands from the grid's own seed-0 figures. About 10 minutes on one core (it runs one thing at a time).
"""
import argparse
import json
import os
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import data  # noqa: E402

RUNS = ["full", "oracle", "alchemist_shift_gsample_20", "alchemist_top_k_20"]
VARIANTS = {"the same again": ("1", []), "fp32": ("1", ["--precision", "fp32"]), "2 threads": ("2", [])}


def run(cmd, threads):
    subprocess.run([sys.executable] + cmd, env=dict(os.environ, OMP_NUM_THREADS=threads), check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/ablate_quick", help="the quick grid's working folder (ablate.py --runs)")
    p.add_argument("--out", default="runs/spread", help="where the re-trained runs go")
    p.error = data.arg_error
    a = p.parse_args(argv)
    runs = os.path.abspath(a.runs)
    if not all(os.path.exists(os.path.join(runs, "train", f"{r}_s0", "metrics.json")) for r in RUNS):
        data.fail(f"{a.runs}: the quick grid is not finished there; run `python ablate.py` first")
    print("| run (seed 0) | variant | weights identical | FID (grid's) | GenEval (grid's) | CLIP score (grid's) |")
    print("|---|---|---|---|---|---|")
    for variant, (threads, extra) in VARIANTS.items():
        for name in RUNS if variant != "the same again" else RUNS[:2]:
            out = os.path.join(os.path.abspath(a.out), variant.replace(" ", "_"), name)
            grid = os.path.join(runs, "train", f"{name}_s0")
            if not os.path.exists(os.path.join(out, "metrics.json")):
                subset = [] if name == "full" else ["--subset", os.path.join(runs, "subsets", "oracle.npy" if
                                                    name == "oracle" else f"{name}_s0.npy")]
                run(["train_t2i.py", "--data", os.path.join(runs, "data"), "--out", out, "--steps", "1000",
                     "--batch-size", "64", "--seed", "0", "--device", "cpu", "--grid-every", "1000", "--preset", "quick"]
                    + subset + extra, threads)
                run(["evaluate.py", "--data", os.path.join(runs, "data"), "--n-samples", "200", "--steps", "16",
                     "--encoder-steps", "400", "--cfg", "1.0", "--device", "cpu", "--model", os.path.join(out, "model.pt"),
                     "--out", os.path.join(out, "metrics.json")], threads)
            m, g = (json.load(open(os.path.join(x, "metrics.json"))) for x in (out, grid))
            mine, theirs = (torch.load(os.path.join(x, "model.pt"), weights_only=True)["model"] for x in (out, grid))
            same = all(torch.equal(mine[k], theirs[k]) for k in theirs)
            print(f"| {name} | {variant} | {'yes' if same else 'no'} | {m['fid']:.4f} ({g['fid']:.4f}) | "
                  f"{m['geneval_overall']:.2f} ({g['geneval_overall']:.2f}) | {m['clip_score']:.3f} "
                  f"({g['clip_score']:.3f}) |", flush=True)


if __name__ == "__main__":
    main()
