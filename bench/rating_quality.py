"""bench/rating_quality.py -- how well each scorer ranks the training rows, what one row costs it, and where it puts
the duplicates: meta-learned raters beside no-learning ones, all measured in one run on one machine.

Run: python bench/rating_quality.py --data data/shapes --proxy runs/x/proxy.pt --primary runs/x/primary_warm.pt
                                    [--raters losses=runs/x/rater.pt content=runs/y/rater.pt] [--scores name=S.npy]
                                    [--rows 4000] [--out T.md]
Prints (and with --out writes) one row per scorer: AUROC of clean rows against each defect type (1 = every defective
row ranked below every clean one, 0.5 = chance), the duplicates' mean percentile (100 = top) and the share of them in
the top 25% (what Shift-Gsample discards at keep <= 50%), the forward passes and seconds it spends per 1000 rows, and
its one-off training cost. The no-learning scorers, all on the same K = 8 fixed (t, noise) draws for every row:
  minus loss        - L(theta_ref; x)                          the reference proxy's per-sample loss
  caption gain      L(theta; x, null caption) - L(theta; x)    for the reference, and for the primary (the rater's trunk)
  minus gap (RHO)   - (L(theta_primary; x) - L(theta_ref; x))  Eq. 6's signal itself, with no learning
A rater (--raters, a metagrad.py rater.pt) is scored here as rater.py scores it, timed; a rater trained with --rate-on
gets two rows, on the rows it was meta-trained on (seen) and on the others (unseen). Its training cost is read from
rater.pt: features of the training rows plus the meta steps (the primary's warm-up, which the primary's no-learning
scorers need too, is listed apart). "pays after" is the number of rows at which training plus scoring costs no more
than scoring with RHO, when the rater is cheaper per row. A second table shows whether the group head sees
redundancy: the mean W_batch of batches of 64 made of clean rows and a growing share of duplicated rows.
"""
import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import proxy  # noqa: E402
import rater  # noqa: E402

DUP_SHARES = [0.0, 0.25, 0.5, 1.0]  # shares of duplicated rows in the batches the group head is shown


def timed(fn):
    """(fn(), wall seconds)."""
    tic = time.time()
    out = fn()
    return out, time.time() - tic


def no_learning(d, reference, primary, draws, device):
    """{name: (scores [n], forward passes per row, seconds)} of the no-learning scorers, each loss timed once."""
    null = data.null_tokens(len(d["tokens"]), d["tokens"].shape[1])
    loss = lambda m, tok, what: timed(lambda: proxy.loss_by_rows(m, d["images"], tok, draws, device, desc=what).numpy())
    K = len(draws[0])
    (ref, t_ref), (ref_null, t_ref_null) = loss(reference, d["tokens"], "reference"), loss(reference, null, "null")
    out = {"minus loss (reference)": (-ref, K, t_ref),
           "caption gain (reference)": (ref_null - ref, 2 * K, t_ref + t_ref_null)}
    if primary is not None:
        (prim, t_prim), (prim_null, t_prim_null) = loss(primary, d["tokens"], "primary"), loss(primary, null, "null")
        out["caption gain (primary)"] = (prim_null - prim, 2 * K, t_prim + t_prim_null)
        out["minus gap, RHO (primary - reference)"] = (-(prim - ref), 2 * K, t_prim + t_ref)
    return out


def score_with_rater(path, d, device):
    """Score the rows as rater.py does, timed: (scores [n], passes per row (str), seconds, rater, feats, ckpt)."""
    r, trunk, ckpt = rater.load_rater(path, device, d)
    feats, t_feats = timed(lambda: r.standardise(rater.features_for(trunk, ckpt, d["images"], d["tokens"],
                                                                     device).to(device)))
    scores, t_score = timed(lambda: rater.score_rows(r, feats).cpu().numpy())
    kind, depth = ckpt.get("input", "losses"), trunk.config["depth"]
    passes = (f"{2 * ckpt['K']}" if kind == "losses" else
              f"1 partial ({ckpt.get('content_blocks', rater.CONTENT_BLOCKS)} of {depth} blocks)")
    return scores, passes, t_feats + t_score, r, feats, ckpt


def redundancy(r, feats, defect, names, batches=20, size=64, seed=0):
    """Mean W_batch of `batches` batches of `size` rows: clean rows with a share s of duplicated rows, per s in
    DUP_SHARES. {share: mean W_batch}; empty without a group head or without duplicates."""
    clean, dup = np.flatnonzero(defect == 0), np.flatnonzero(defect == names.index("duplicate"))
    if not r.use_group or len(dup) == 0 or len(clean) == 0:
        return {}
    rng, out = np.random.default_rng(seed), {}
    with torch.no_grad():
        for share in DUP_SHARES:
            k = int(round(share * size))
            w = [torch.sigmoid(r.logits(feats[torch.from_numpy(np.r_[rng.choice(dup, k), rng.choice(clean, size - k)])
                                            .to(feats.device)])[1]).item() for _ in range(batches)]
            out[share] = float(np.mean(w))
    return out


def table_row(name, s, defect, names, types, cost="", extra=""):
    """One markdown row: AUROC by type, duplicates' mean percentile and share in the top 25%, then cost cells."""
    r = rater.ranking_report(s, defect, names)
    dup = defect == names.index("duplicate") if "duplicate" in names else np.zeros(len(s), bool)
    top = np.zeros(len(s), bool)
    top[np.argsort(-s, kind="stable")[:len(s) // 4]] = True
    in_top = f"{100 * top[dup].mean():.0f}%" if dup.any() else "-"
    cells = [f"{r[f'auroc_{t}']:.3f}" if f"auroc_{t}" in r else "-" for t in types]
    return (f"| {name} | " + " | ".join(cells) + f" | {r.get('mean_percentile_duplicate', float('nan')):.0f} | "
            f"{in_top} | {cost}{extra} |")


def main(argv=None):
    p = argparse.ArgumentParser(description="AUROC by defect type, cost per row and the duplicates' place, for "
                                            "meta-learned and no-learning scorers.")
    p.add_argument("--data", required=True, help="data folder with ground-truth defects (train.pt)")
    p.add_argument("--proxy", required=True, help="the reference proxy (proxy.py, warmed on the training set)")
    p.add_argument("--primary", help="the primary warmed on val (metagrad.py's primary_warm.pt), for its scorers")
    p.add_argument("--raters", nargs="*", default=[], help="NAME=rater.pt pairs (metagrad.py): scored and timed here")
    p.add_argument("--scores", nargs="*", default=[], help="NAME=scores.npy pairs (rater.py outputs), not timed")
    p.add_argument("--draws", type=int, default=8, help="K fixed (t, noise) draws for the no-learning scorers")
    p.add_argument("--rows", type=int, help="score only this many random rows (seed 0), for speed (default: all)")
    p.add_argument("--out", help="also write the tables as markdown here")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    a = p.parse_args(argv)
    device = data.pick_device(a.device)
    try:
        d = data.load_dataset(a.data, "train")
        reference, _ = proxy.load_proxy(a.proxy, device, d)
        primary = proxy.load_proxy(a.primary, device, d)[0] if a.primary else None
        named = dict(item.split("=", 1) for item in a.scores)
        loaded = {name: np.load(path) for name, path in named.items()}
        raters = dict(item.split("=", 1) for item in a.raters)
        for name, path in raters.items():
            rater.load_rater(path, "cpu", d)  # every rater.pt fits this data before the long part starts
    except (data.DataError, ValueError, OSError) as e:
        data.fail(str(e).splitlines()[0])
    n_all = len(d["images"])
    pick = np.sort(np.random.default_rng(0).choice(n_all, a.rows, replace=False)) if a.rows and a.rows < n_all \
        else np.arange(n_all)
    d = {**d, "images": d["images"][pick], "tokens": d["tokens"][pick], "defect": d["defect"][pick]}
    defect, names = d["defect"].numpy(), d["defect_names"]
    types = [names[k] for k in range(1, len(names)) if (defect == k).any()]
    size = d["images"].shape[-1]
    draws = proxy.fixed_draws(a.draws, (3, size, size), seed=rater.DRAWS_SEED + 1)  # not the rater's own draws
    lines = ["| scorer | " + " | ".join(types) + " | duplicates' mean percentile | duplicates in top 25% | "
             "passes per row | s per 1000 rows | training (one-off) |", "|---|" + "---|" * (len(types) + 5)]
    rho_per_row = None
    for name, (s, passes, secs) in no_learning(d, reference, primary, draws, device).items():
        lines.append(table_row(name, s, defect, names, types, f"{passes} | {1000 * secs / len(s):.2f} | -"))
        rho_per_row = secs / len(s) if name.startswith("minus gap") else rho_per_row
    group_lines = []
    for name, path in raters.items():
        s, passes, secs, r, feats, ckpt = score_with_rater(path, d, device)
        lines += rater_rows(name, s, passes, secs, ckpt, pick, n_all, defect, names, types, rho_per_row)
        w = redundancy(r, feats, defect, names)
        if w:
            group_lines.append(f"| {name} | " + " | ".join(f"{w[k]:.3f}" for k in DUP_SHARES) + " |")
    for name, s in loaded.items():
        if s.shape != (n_all,):
            data.fail(f"--scores {name}: {s.shape[0] if s.ndim else 0} scores for {n_all} rows")
        lines.append(table_row(name, s[pick], defect, names, types, "- | - | -"))
    tables = "\n".join(lines)
    if group_lines:
        tables += ("\n\nW_batch of batches of 64 rows: clean rows with this share of duplicated rows (20 batches each)\n\n"
                   "| rater | " + " | ".join(f"{100 * k:.0f}% duplicates" for k in DUP_SHARES) + " |\n" +
                   "|---|" + "---|" * len(DUP_SHARES) + "\n" + "\n".join(group_lines))
    print(f"AUROC, clean vs each type (low score = defective); {a.data}, {len(defect)} of {n_all} rows; "
          f"{platform.node()}, torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}\n{tables}")
    if a.out:
        data.atomic_save(tables + "\n", a.out)


def rater_rows(name, s, passes, secs, ckpt, pick, n_all, defect, names, types, rho_per_row):
    """A rater's table rows: all rows, or seen and unseen ones apart (--rate-on); its cost and when it pays."""
    spent = ckpt.get("seconds", {})
    train = spent.get("features", 0.0) + spent.get("meta", 0.0)
    per_row = secs / len(s)
    pays = (f", pays after {train / (rho_per_row - per_row):,.0f} rows vs RHO" if rho_per_row and
            rho_per_row > per_row and spent else "")
    cost = (f"{passes} | {1000 * per_row:.2f} | " + (f"{train / 60:.1f} min (+ warm-up {spent.get('warmup', 0) / 60:.1f}"
                                                     f" min, shared)" if spent else "not recorded"))
    rated = ckpt.get("rated_rows")
    if rated is None or ckpt.get("n_rows") != n_all or len(rated) == n_all:
        return [table_row(name, s, defect, names, types, cost, pays)]
    seen = np.isin(pick, np.asarray(rated))
    return [table_row(f"{name}, {part} rows ({int(rows.sum())})", s[rows], defect[rows], names, types, cost, pays)
            for part, rows in [("unseen", ~seen), ("seen", seen)] if rows.any()]


if __name__ == "__main__":
    main()
