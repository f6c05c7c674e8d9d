"""bench/rating_quality.py -- how well each scorer ranks the training rows: meta-learned raters beside no-learning ones.

Run: python bench/rating_quality.py --data data/shapes --proxy runs/x/proxy.pt --primary runs/x/primary_warm.pt
                                    [--scores alchemist=runs/x/scores.npy exact=runs/y/scores.npy ...] [--out T.md]
Prints (and with --out writes) one row per scorer: AUROC of clean rows against each defect type (1 = every defective
row ranked below every clean one, 0.5 = chance) and the duplicates' mean percentile (100 = top). The no-learning
scorers, all on the same K = 8 fixed (t, noise) draws (FEASIBILITY.md):
  minus loss        - L(theta_ref; x)                          the reference proxy's per-sample loss
  caption gain      L(theta; x, null caption) - L(theta; x)    for the reference, and for the primary (the rater's trunk)
  minus gap (RHO)   - (L(theta_primary; x) - L(theta_ref; x))  Eq. 6's signal itself, with no learning
A meta-learned rater is worth its cost when it ranks better than these: it sees the very same losses as inputs.
"""
import argparse
import os
import platform
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import proxy  # noqa: E402
import rater  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="AUROC by defect type of meta-learned and no-learning scorers.")
    p.add_argument("--data", required=True, help="data folder with ground-truth defects (train.pt)")
    p.add_argument("--proxy", required=True, help="the reference proxy (proxy.py, warmed on the training set)")
    p.add_argument("--primary", help="the primary warmed on val (metagrad.py's primary_warm.pt), for its scorers")
    p.add_argument("--scores", nargs="*", default=[], help="NAME=scores.npy pairs (rater.py outputs) to compare")
    p.add_argument("--draws", type=int, default=8, help="K fixed (t, noise) draws for the no-learning scorers")
    p.add_argument("--rows", type=int, help="score only this many random rows (seed 0), for speed (default: all)")
    p.add_argument("--out", help="also write the table as markdown here")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    a = p.parse_args(argv)
    device = data.pick_device(a.device)
    try:
        d = data.load_dataset(a.data, "train")
        reference, _ = proxy.load_proxy(a.proxy, device, d)
        primary = proxy.load_proxy(a.primary, device, d)[0] if a.primary else None
        named = dict(item.split("=", 1) for item in a.scores)
        loaded = {name: np.load(path) for name, path in named.items()}
    except (data.DataError, ValueError, OSError) as e:
        data.fail(str(e).splitlines()[0])
    n_all = len(d["images"])
    pick = np.sort(np.random.default_rng(0).choice(n_all, a.rows, replace=False)) if a.rows and a.rows < n_all \
        else np.arange(n_all)
    d = {**d, "images": d["images"][pick], "tokens": d["tokens"][pick], "defect": d["defect"][pick]}
    size, null = d["images"].shape[-1], data.null_tokens(len(d["tokens"]), d["tokens"].shape[1])
    draws = proxy.fixed_draws(a.draws, (3, size, size), seed=rater.DRAWS_SEED + 1)  # not the rater's own draws
    loss = lambda m, tok, what: proxy.loss_by_rows(m, d["images"], tok, draws, device, desc=what).numpy()
    ref, ref_null = loss(reference, d["tokens"], "reference"), loss(reference, null, "reference, null caption")
    scorers = {"minus loss (reference)": -ref, "caption gain (reference)": ref_null - ref}
    if primary is not None:
        prim, prim_null = loss(primary, d["tokens"], "primary"), loss(primary, null, "primary, null caption")
        scorers["caption gain (primary)"] = prim_null - prim
        scorers["minus gap, RHO (primary - reference)"] = -(prim - ref)
    for name, s in loaded.items():
        if s.shape != (n_all,):
            data.fail(f"--scores {name}: {s.shape[0] if s.ndim else 0} scores for {n_all} rows")
        scorers[name] = s[pick]
    defect, names = d["defect"].numpy(), d["defect_names"]
    types = [names[k] for k in range(1, len(names)) if (defect == k).any()]
    lines = ["| scorer | " + " | ".join(types) + " | duplicates' mean percentile |",
             "|---|" + "---|" * (len(types) + 1)]
    for name, s in scorers.items():
        r = rater.ranking_report(s, defect, names)
        cells = [f"{r[f'auroc_{t}']:.3f}" for t in types]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r.get('mean_percentile_duplicate', float('nan')):.0f} |")
    table = "\n".join(lines)
    print(f"AUROC, clean vs each type (low score = defective); {a.data}, {len(defect)} of {n_all} rows; "
          f"{platform.node()}, torch {torch.__version__}\n{table}")
    if a.out:
        data.atomic_save(table + "\n", a.out)


if __name__ == "__main__":
    main()
