"""bench/jest_picks.py -- what JEST's learnability picks on the shapes set: its kept rows by defect type, caption and t.

Run: python bench/jest_picks.py [--runs runs/ablate_quick] [--rows 3200]        (after bench/online_grid.py)
Scores random training rows, each with its own (t, noise) draw and the 10% null-caption drop of training, by
learnability (train_t2i.learnability: learner loss minus reference loss on the same draws), with the uniform run's
snapshots as the learner and the online grid's guide as the reference, then keeps 64 of every 320 by
train_t2i.jest_select at the grid's temperature. Prints, per snapshot, the mean score by defect type and what the
kept rows hold against all rows. Seconds on one CPU core.
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import proxy  # noqa: E402
import train_t2i  # noqa: E402


def draws(d, n, seed):
    """n random rows with the draws training gives them: images, tokens (10% null), t, noise, the null mask."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(d["images"]), (n,), generator=g)
    tokens, null = d["tokens"][idx].clone(), torch.rand(n, generator=g) < proxy.CFG_DROP
    tokens[null] = data.null_tokens(int(null.sum()), tokens.shape[1])
    x0 = data.to_float(d["images"][idx])
    t = proxy.sample_t(n, g)
    return idx, x0, tokens, t, torch.randn(x0.shape, generator=g), null


def main(argv=None):
    p = argparse.ArgumentParser(description="What JEST's learnability picks on the shapes set (after online_grid.py).")
    p.add_argument("--runs", default="runs/ablate_quick", help="the grid's working folder")
    p.add_argument("--rows", type=int, default=3200, help="rows to score (a multiple of 320)")
    p.add_argument("--temperature", type=float, default=0.01, help="JEST's selection temperature")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    d = data.load_pt(os.path.join(a.runs, "data", "train.pt"), "train.pt")
    reference, _ = proxy.load_proxy(os.path.join(a.runs, "online", "guide", "model.pt"))
    idx, x0, tokens, t, noise, null = draws(d, a.rows, seed=1)
    defect, names = d["defect"][idx], d["defect_names"]
    for snap in ["step250", "step750"]:
        learner, _ = proxy.load_proxy(os.path.join(a.runs, "online", "uniform_s0", "snapshots", f"{snap}.pt"))
        with torch.no_grad():
            score, _, _ = train_t2i.learnability(lambda m: proxy.rf_loss(m, x0, tokens, t=t, noise=noise),
                                                 learner, reference)
        score = score.float()
        kept = torch.cat([c + train_t2i.jest_select(score[c:c + 320], 64, 16, a.temperature,
                                                    torch.Generator().manual_seed(c)) for c in range(0, a.rows, 320)])
        print(f"learner {snap}: score mean {score.mean():.3f}, std {score.std():.3f}, "
              f"corr(score, t) {np.corrcoef(score, t)[0, 1]:.2f}")
        print("  mean score by type: " + ", ".join(f"{n} {score[defect == k].mean():.3f}" for k, n in enumerate(names)))
        print("  share kept / share of all rows: " + ", ".join(
            f"{n} {(defect[kept] == k).float().mean():.2f} / {(defect == k).float().mean():.2f}"
            for k, n in enumerate(names)) + f"; null caption {null[kept].float().mean():.2f} / "
            f"{null.float().mean():.2f}; mean t {t[kept].mean():.2f} / {t.mean():.2f}")


if __name__ == "__main__":
    main()
