"""bench/quick_levers.py -- what the quality levers of the quick preset bought, measured with the project's commands.

Run: python bench/quick_levers.py [--runs runs/ablate_quick] [--out runs/levers]      (after `python ablate.py`)
The quick grid's oracle (seed 0: the quick target trained on the clean rows) is compared with the same run without
one lever at a time, each evaluated as the grid evaluates (200 samples, 16 Euler steps):
  sampling with CFG 3 instead of none      evaluate.py --cfg 3 on the grid's own oracle and full-set models
  learning rate 2e-3 instead of 5e-3       train_t2i.py --lr 2e-3 on the oracle's rows
  the two-object grammar                   data.py --max-objects 2 (the same sizes and seed), its oracle trained alike
About 4 minutes on one CPU core. Prints one table; everything it trains goes under --out.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import evaluate  # noqa: E402
import train_t2i  # noqa: E402

EVAL = ["--n-samples", "200", "--steps", "16", "--encoder-steps", "400", "--device", "cpu"]


def train_eval(data_dir, subset, out, extra=(), cfg="1"):
    """Train the quick target on `subset` (seed 0, 1000 steps) unless done, evaluate it; returns metrics."""
    if not os.path.exists(os.path.join(out, "model.pt")):
        train_t2i.main(["--data", data_dir, "--out", out, "--subset", subset, "--preset", "quick", "--seed", "0",
                        "--device", "cpu", "--grid-every", "0", *extra])
    return evaluate_model(data_dir, os.path.join(out, "model.pt"), os.path.join(out, f"metrics_cfg{cfg}.json"), cfg)


def evaluate_model(data_dir, model, out, cfg):
    if not os.path.exists(out):
        evaluate.main(["--data", data_dir, "--model", model, "--out", out, "--cfg", cfg] + EVAL)
    return json.load(open(out))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/ablate_quick", help="the quick grid's working folder (ablate.py --runs)")
    p.add_argument("--out", default="runs/levers", help="where the extra runs go")
    p.error = data.arg_error
    a = p.parse_args(argv)
    d, train = os.path.join(a.runs, "data"), os.path.join(a.runs, "train")
    if not os.path.exists(os.path.join(train, "oracle_s0", "metrics.json")):
        data.fail(f"{a.runs}: no finished quick grid there (oracle_s0); run `python ablate.py` first")
    rows = {"the quick preset (the grid's oracle, seed 0)": json.load(open(os.path.join(train, "oracle_s0", "metrics.json")))}
    rows["sampled with CFG 3"] = evaluate_model(d, os.path.join(train, "oracle_s0", "model.pt"),
                                                os.path.join(a.out, "oracle_cfg3.json"), "3")
    full_cfg1 = json.load(open(os.path.join(train, "full_s0", "metrics.json")))
    full_cfg3 = evaluate_model(d, os.path.join(train, "full_s0", "model.pt"), os.path.join(a.out, "full_cfg3.json"), "3")
    rows["learning rate 2e-3"] = train_eval(d, os.path.join(a.runs, "subsets", "oracle.npy"),
                                            os.path.join(a.out, "oracle_lr2e-3"), ["--lr", "2e-3"])
    two = os.path.join(a.out, "data_two_objects")
    if not os.path.exists(os.path.join(two, "test.pt")):
        data.main(["--out", two, "--size", "16", "--n-train", "2000", "--n-val", "300", "--n-test", "300",
                   "--max-objects", "2", "--seed", "0"])
    clean = os.path.join(a.out, "two_objects_clean.npy")
    data.atomic_save(np.flatnonzero(data.load_dataset(two)["defect"].numpy() == 0), clean)
    rows["two-object scenes (as before)"] = train_eval(two, clean, os.path.join(a.out, "oracle_two_objects"))
    print("| oracle (clean rows), seed 0 | FID | CLIP score | GenEval |\n|---|---|---|---|")
    for name, m in rows.items():
        print(f"| {name} | {m['fid']:.4f} | {m['clip_score']:.3f} | {m['geneval_overall']:.2f} |")
    print(f"full set, seed 0: CFG 1 FID {full_cfg1['fid']:.4f} GenEval {full_cfg1['geneval_overall']:.2f}; "
          f"CFG 3 FID {full_cfg3['fid']:.4f} GenEval {full_cfg3['geneval_overall']:.2f}")
    print("(FID of the two-object set is on that set's own evaluator: compare its CLIP score and GenEval only)")


if __name__ == "__main__":
    main()
