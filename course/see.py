"""course/see.py -- closing demos for the exercises whose result no stage script prints by itself.

Reads:   D/train.pt, D/val.pt, D/test.pt (a set from data.py), D/evaluator.pt (trained and cached there if missing)
Writes:  D/evaluator.pt (evaluate.py's cache); prints a table
Run:     python course/see.py 5 --data runs/course/shapes
Exercise 5 (FID and KID): real image sets against the clean test set, through your evaluate.fid and evaluate.kid on
the evaluator's features, then FID and KID of two clean sets at shrinking sample sizes.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this copy's stage files
import data  # noqa: E402
import evaluate  # noqa: E402


def fid_and_kid(a):
    test, val, train = (data.load_dataset(a.data, split) for split in ("test", "val", "train"))
    encoder, _ = evaluate.load_encoder(a.data, test)
    feats = lambda images: evaluate.encode_images(encoder, images)[0].numpy().astype(np.float64)
    ref, n = feats(test["images"]), len(test["images"])
    defect, names = train["defect"].numpy(), train["defect_names"]
    print(f"against the clean test set ({n} rows), {ref.shape[1]}-d evaluator features; {n} rows of each set")
    print(f"{'set':<28} {'FID':>8} {'KID':>10}")
    sets = [("val (clean)", val["images"][:n])]
    sets += [(f"train, {names[k]} rows", train["images"][np.flatnonzero(defect == k)[:n]]) for k in np.unique(defect)]
    for name, images in sets:
        f = feats(images)
        print(f"{name:<28} {evaluate.fid(f, ref):8.4f} {evaluate.kid(f, ref, subset_size=min(len(f), n))[0]:+10.5f}"
              + ("" if len(f) == n else f"   (only {len(f)} rows)"))
    print("\nFID is biased by the sample size, KID is not: the clean val set against the clean test set, N rows each")
    f_val = feats(val["images"])
    for m in (n, n // 2, n // 4):
        print(f"N = {m:<4} FID {evaluate.fid(f_val[:m], ref[:m]):8.4f}   KID "
              f"{evaluate.kid(f_val[:m], ref[:m], subset_size=m)[0]:+10.5f}")


DEMOS = {5: fid_and_kid}


def main(argv=None):
    p = argparse.ArgumentParser(description="Closing demos of the course's exercises (course/README.md).")
    p.add_argument("exercise", type=int, help=f"the exercise, one of {sorted(DEMOS)}")
    p.add_argument("--data", required=True, help="a data folder made by data.py (README: the course's set)")
    a = p.parse_args(argv)
    if a.exercise not in DEMOS:
        data.fail(f"no demo for exercise {a.exercise}; there are demos for {sorted(DEMOS)}")
    try:
        DEMOS[a.exercise](a)
    except data.DataError as e:
        data.fail(str(e))


if __name__ == "__main__":
    main()
