"""prune.py -- turn a ranking into a training subset (Shift-Gsample and its baselines), and the heuristic scorers.

Reads:   S.npy (float [N], one score per row of train.pt, higher = rated higher); with --data, D/train.pt for the
         keep rate by defect type; in scoring mode D/train.pt (and PROXY.pt for the loss and grad_norm scorers)
Writes:  SUBSET.npy (sorted unique int64 row indices into train.pt) and, with --data, SUBSET.png (the ranking by
         defect type with the kept rows marked); in scoring mode S.npy (float32 [N], higher = better)
Run:     python prune.py --scores runs/x/scores.npy --strategy shift_gsample --keep 0.5 --out runs/x/shift50.npy
         python prune.py --data data/shapes --scorer clarity --out runs/x/clarity.npy
Implements Alchemist's pruning stage (arXiv 2512.16905, Sec. "data pruning"; Shift-Gsample is Eq. 11) and its
baselines: random, top-K, bottom-K, a percentile block, Gsample, CCS (coverage-centric coreset selection, Zheng et al.
2023), and heuristic / model-based scorers (clarity, frequency, edge density, per-sample loss, GraNd; Paul 2021).

Percentiles count from the top of the ranking, as in the paper: the row ranked r-th of N (r = 0 is the best-rated)
sits at percentile q = 100 (r + 1/2) / N, so 0 = best-rated and 100 = worst-rated. Ties are broken by row index.
"""
import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from tqdm import tqdm

import data
from data import DataError

# Shift-Gsample's Gaussian, in percentiles from the top; the paper did not publish mu and sigma (docs/METHOD.md).
MU = 40.0     # Chosen by ablation on the shapes set (docs/RESULTS.md): the paper's "middle-to-late" (mu past 50,
              # sigma 20, our first default) reaches into the bottom tail, where this data's defective rows collect
              # under any good rating. mu 40, sigma 10 samples the middle of what the discarded top leaves above them:
SIGMA = 10.0  # at keep 20% percentiles ~25-55; at keep 50% the Gaussian saturates: the block 25-100 minus its bottom.
BETA = 0.1    # CCS: fraction of the hardest (here: lowest-rated) rows dropped before stratifying, at most 1 - keep
STRATA = 50   # CCS: equal-width score strata, as in Zheng et al. 2023


def default_discard_top(keep):
    """Shift-Gsample's n (in %) by keep ratio. Released configs: 25% for keep <= 50%, 15% at 80%, 5% at 90%; we
    interpolate linearly between them and down to 0% at keep 100% (where nothing can be discarded). Along this line
    the pool left, 100 - n, is never smaller than the budget, 100 keep."""
    return float(np.interp(keep, [0.5, 0.8, 0.9, 1.0], [25.0, 15.0, 5.0, 0.0]))


# ----------------------------------------------------------------------------------------------------------------
# The ranking and exact weighted sampling without replacement

def ranking(scores):
    """Row indices from the best-rated to the worst-rated, ties broken by row index: int64 [N]."""
    return np.argsort(-scores, kind="stable")


def mask(rows, n):
    """Row indices -> bool [n], True at the rows."""
    keep = np.zeros(n, dtype=bool)
    keep[rows] = True
    return keep


def as_subset(rows, n):
    """Any row indices -> the subset format: sorted, unique, int64 (the mask sorts them in O(n))."""
    return np.flatnonzero(mask(rows, n)).astype(np.int64)


def gumbel_top_k(log_w, count, rng):
    """Draw `count` distinct indices without replacement with weights w = exp(log_w): pick one with p_i = w_i / sum w,
    remove it, renormalise, repeat. Gumbel top-k does exactly that in one pass (Vieira 2014; Kool et al. 2019): add
    independent Gumbel(0, 1) noise to log w and keep the `count` largest. The sequential loop costs O(count * N), hours
    for 5M picks of 10M; "top-k of w_i * U_i" or "with replacement, de-duplicated" sample another distribution;
    Poisson sampling (each row kept with p ~ w_i) gives a random count. In log space, a row far out in the Gaussian's
    tail keeps a tiny positive weight instead of underflowing to 0."""
    keys = log_w + rng.gumbel(size=len(log_w))
    if count == len(keys):
        return np.arange(len(keys))
    return np.argpartition(-keys, count - 1)[:count]  # the `count` largest keys, in O(N)


# ----------------------------------------------------------------------------------------------------------------
# Strategies: (scores [N], count, rng, **opts) -> sorted unique int64 rows; each ignores the options it does not use.

def check_pool(count, pool, what):
    if not 1 <= count <= pool:
        raise DataError(f"cannot keep {count} rows: only {pool} are left {what}")


def random_subset(scores, count, rng, **_):
    """Uniformly at random (the baseline every method must beat)."""
    check_pool(count, len(scores), "in total")
    return as_subset(rng.choice(len(scores), size=count, replace=False), len(scores))


def top_k(scores, count, rng=None, **_):
    """The `count` best-rated rows (in the paper the worst choice: FID 48.2 at 20%, the top is plain and easy)."""
    check_pool(count, len(scores), "in total")
    return as_subset(ranking(scores)[:count], len(scores))


def bottom_k(scores, count, rng=None, **_):
    """The `count` worst-rated rows (the "hardest first" idea; here it also keeps the broken rows)."""
    check_pool(count, len(scores), "in total")
    return as_subset(ranking(scores)[len(scores) - count:], len(scores))


def block(scores, count, rng=None, start=None, **_):
    """A contiguous window of the ranking from percentile `start`; by default centred on the 50th percentile (at keep
    20% that is 40-60, the paper's best single window)."""
    n = len(scores)
    check_pool(count, n, "in total")
    start = 50.0 - 50.0 * count / n if start is None else start
    first = int(round(start / 100 * n))  # rank of the window's first row
    if not 0 <= first <= n - count:
        raise DataError(f"--start {start:g}: a block of {count} rows from that percentile runs past the ranking's end")
    return as_subset(ranking(scores)[first:first + count], n)


def shift_gsample(scores, count, rng, discard_top=None, mu=MU, sigma=SIGMA, **_):
    """Eq. 11: drop the first round(discard_top N / 100) rows of ranking(scores) (None: default_discard_top(count / N)),
    sample `count` of the rest by gumbel_top_k on log p(i) = -(q_i - mu)^2 / (2 sigma^2), q_i = 100 (r_i + 1/2) / N.
    check_pool refuses a pool smaller than `count`; returns as_subset(rows, N), sorted unique int64."""
    n = len(scores)
    discard_top = default_discard_top(count / n) if discard_top is None else discard_top
    first = int(round(discard_top / 100 * n))  # ranks [0, first) are the discarded top
    check_pool(count, n - first, f"after discarding the top {discard_top:g}%")
    pool = ranking(scores)[first:]  # (N - first,), best-rated first
    q = 100.0 * (np.arange(first, n) + 0.5) / n  # each pool row's percentile
    log_w = -(q - mu) ** 2 / (2 * sigma ** 2)  # Eq. 11, in log space
    return as_subset(pool[gumbel_top_k(log_w, count, rng)], n)


def gsample(scores, count, rng, sigma=SIGMA, **_):
    """The paper's Gsample: the same Gaussian centred on the middle (mu = 50), nothing discarded."""
    return shift_gsample(scores, count, rng, discard_top=0.0, mu=50.0, sigma=sigma)


def ccs(scores, count, rng, beta=None, strata=STRATA, **_):
    """CCS (Zheng et al. 2023): drop the hardest `beta` (the lowest-rated rows; default BETA, or 1 - keep where that is
    less), split the remaining score range into `strata` equal-width strata, spread the budget evenly over the
    non-empty strata, smallest first (what a small stratum cannot fill passes on to the larger ones), and sample at
    random inside each."""
    n = len(scores)
    beta = min(BETA, 1 - count / n) if beta is None else beta
    pool = ranking(scores)[:n - int(round(beta * n))]
    check_pool(count, len(pool), f"after dropping the hardest {beta:g}")
    s = scores[pool].astype(np.float64)
    width = (s.max() - s.min()) / strata or 1.0  # all scores equal: a single stratum
    stratum = np.minimum(((s - s.min()) / width).astype(np.int64), strata - 1)  # (len(pool),) in 0..strata-1
    groups = sorted((pool[stratum == k] for k in np.unique(stratum)), key=len)  # non-empty strata, smallest first
    picked, budget = [], count
    for left, group in zip(range(len(groups), 0, -1), groups):
        # ceil(budget / strata left): the shares add up to exactly `count`, and every stratum gets at least one row
        # whenever count >= the number of non-empty strata. (The paper's floor() can leave part of the budget unused.)
        take = min(len(group), -(-budget // left))
        picked.append(rng.choice(group, size=take, replace=False))
        budget -= take
    return as_subset(np.concatenate(picked), n)


STRATEGIES = {"random": random_subset, "top_k": top_k, "bottom_k": bottom_k, "block": block, "gsample": gsample,
              "shift_gsample": shift_gsample, "ccs": ccs}


# ----------------------------------------------------------------------------------------------------------------
# Heuristic scorers: uint8 images [B,3,H,W] -> [B], higher = better. They are the paper's image-quality baselines;
# each sees only pixels, so none can see a wrong caption.

def gray(images):
    """uint8 [B,3,H,W] -> luminance float [B,1,H,W] in [0, 1] (ITU-R 601 weights)."""
    return (images.float() / 255 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)


def clarity(images):
    """Variance of the 3x3 Laplacian response over the image. Sharp edges give a strong response, blur a weak one:
    higher = sharper = better. (Noise is "sharpest" of all: this heuristic rates noisy rows at the top.)"""
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return F.conv2d(gray(images), lap).flatten(1).var(1)


def frequency(images):
    """Share of the mean-removed power spectrum above a quarter cycle per pixel (half the Nyquist frequency): more
    fine detail = higher = better. A flat image scores 0."""
    g = gray(images)[:, 0]
    power = torch.fft.fft2(g - g.mean((1, 2), keepdim=True)).abs() ** 2  # (B, H, W)
    fy, fx = torch.fft.fftfreq(g.shape[1]), torch.fft.fftfreq(g.shape[2])  # cycles per pixel, in [-0.5, 0.5)
    high = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt() > 0.25  # (H, W)
    return (power * high).sum((1, 2)) / power.sum((1, 2)).clamp_min(1e-12)


def edge_density(images, bins=64):
    """Fraction of pixels whose Sobel gradient magnitude lies above the image's own Otsu threshold (the level that
    best splits its magnitude histogram into two classes): more edges = more content = higher = better."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    grad = F.conv2d(gray(images), torch.stack([kx, kx.T])[:, None])  # (B, 2, H-2, W-2): d/dx, d/dy
    mag = grad.pow(2).sum(1).sqrt().flatten(1)  # (B, P)
    top = mag.amax(1, keepdim=True).clamp_min(1e-3)  # the floor keeps rounding noise on a flat image at level 0
    level = (mag / top * (bins - 1)).round().long()  # (B, P) in 0..bins-1
    p = torch.zeros(len(mag), bins).scatter_add_(1, level, torch.ones_like(mag)) / mag.shape[1]  # (B, bins) histogram
    omega, m = p.cumsum(1), (p * torch.arange(bins)).cumsum(1)  # class-0 weight and first moment up to each level
    between = (m[:, -1:] * omega - m) ** 2 / (omega * (1 - omega)).clamp_min(1e-12)  # Otsu's between-class variance
    return (level > between.argmax(1, keepdim=True)).float().mean(1)


IMAGE_SCORERS = {"clarity": clarity, "frequency": frequency, "edge_density": edge_density}


# Model-based scorers: they read the proxy (proxy.py, imported here only, so that the scorers above work without it).
# Sign: a row the proxy finds hard -- noise, a wrong caption -- has a high loss and a large gradient, so both scores
# are minus that: easy rows rank at the top and broken rows at the bottom, the orientation of Alchemist's rater, and
# every strategy means the same thing on every scorer (bottom_k on grad_norm is Paul et al.'s "keep high GraNd").

def loss_scorer(model, draws, device):
    """loss: minus the proxy's rectified-flow loss averaged over K fixed (t, noise) draws, the same for every row."""
    from proxy import sample_loss
    return lambda images, tokens: -sample_loss(model, data.to_float(images).to(device), tokens.to(device), draws)


def grad_norm_scorer(model, draws, device):
    """grad_norm: minus GraNd (Paul et al. 2021) at the last layer, ||d/d(W, b) of mean_j L(x; t_j, eps_j)|| with
    y = h W^T + b the DiT's final Linear. Not EL2N: the norm of the prediction error is the square root of the loss
    scorer's number (per draw), so it would rank rows almost alike; GraNd also weighs the error by the features h."""
    from proxy import rf_loss
    layer, saved = model.out, {}

    def score(images, tokens):
        x0, tokens = data.to_float(images).to(device), tokens.to(device)
        t, noise = draws
        hook = layer.register_forward_hook(lambda mod, inp, out: saved.update(h=inp[0].detach(), y=out))
        g_w = g_b = 0.0
        try:
            for j in range(len(t)):
                loss = rf_loss(model, x0, tokens, t[j].expand(len(x0)).to(device), noise[j].expand_as(x0).to(device))
                # Row i's loss depends only on its own outputs y_i, so the gradient of the batch's summed loss w.r.t.
                # y holds every row's own dL_i/dy_i: one backward pass per batch instead of one per row.
                (g_y,) = torch.autograd.grad(loss.sum() / len(t), saved["y"])  # (B, T, P)
                g_w = g_w + torch.einsum("btp,btc->bpc", g_y, saved["h"])  # (B, P, C): dL_i/dW = sum_t g_y^T h
                g_b = g_b + g_y.sum(1)  # (B, P): dL_i/db
        finally:
            hook.remove()
        return -(g_w.pow(2).sum((1, 2)) + g_b.pow(2).sum(1)).sqrt()
    return score


# ----------------------------------------------------------------------------------------------------------------
# Plumbing: scoring every row, the report (what was kept, by defect type) and its picture, the command line

def score_all(fn, d, batch_size, desc):
    """fn(images uint8 [B,3,H,W], tokens int64 [B,L]) -> [B], over every row with a progress bar -> float32 [N]."""
    n = len(d["images"])
    out = [fn(d["images"][i:i + batch_size], d["tokens"][i:i + batch_size]).detach().float().cpu()
           for i in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False)]
    return torch.cat(out).numpy().astype(np.float32)


def percentiles(scores):
    """Each row's percentile in the ranking (0 = best-rated): float [N]."""
    q = np.empty(len(scores))
    q[ranking(scores)] = 100.0 * (np.arange(len(scores)) + 0.5) / len(scores)
    return q


def keep_rates(rows, defect, names):
    """[(code, name, kept, total)] for every defect type present."""
    kept = mask(rows, len(defect))
    return [(k, names[k] if k < len(names) else str(k), int(kept[defect == k].sum()), int((defect == k).sum()))
            for k in np.unique(defect)]


def draw_ranking(q, rows, defect, names, title, path, width=900, row_h=34):
    """One band per defect type, x = rank percentile: every row is a tick, kept rows dark above, dropped rows grey
    below. Pillow only."""
    kept, rates = mask(rows, len(q)), keep_rates(rows, defect, names)
    left, right, top = 190, 20, 40
    plot_w, height = width - left - right, top + row_h * len(rates) + 50
    img = Image.new("RGB", (width, height), (255, 255, 255))
    pen = ImageDraw.Draw(img)
    pen.text((10, 8), title, fill=(0, 0, 0))
    pen.text((10, 22), "ticks above the line: kept rows; below: dropped rows", fill=(90, 90, 90))
    column = np.minimum((q / 100 * plot_w).astype(np.int64), plot_w - 1)  # (N,) the pixel column of each row
    for band, (code, name, n_kept, total) in enumerate(rates):
        y, mid = top + band * row_h, top + band * row_h + row_h // 2
        pen.text((10, mid - 6), f"{name}: kept {100 * n_kept / total:.0f}% ({n_kept}/{total})", fill=(0, 0, 0))
        pen.line([(left, mid), (left + plot_w, mid)], fill=(200, 200, 200))
        # one tick per pixel column that holds such a row (not per row: a million rows draw as fast as a thousand)
        for x in np.unique(column[(defect == code) & kept]):
            pen.line([(left + x, y + 3), (left + x, mid - 1)], fill=(20, 90, 200))
        for x in np.unique(column[(defect == code) & ~kept]):
            pen.line([(left + x, mid + 1), (left + x, y + row_h - 3)], fill=(185, 185, 185))
    axis = top + row_h * len(rates) + 4
    pen.line([(left, axis), (left + plot_w, axis)], fill=(0, 0, 0))
    for tick in range(0, 101, 10):
        x = left + tick / 100 * plot_w
        pen.line([(x, axis), (x, axis + 4)], fill=(0, 0, 0))
        pen.text((x - 6, axis + 6), str(tick), fill=(0, 0, 0))
    pen.text((left, axis + 22), "rank percentile (0 = best-rated, 100 = worst-rated)", fill=(0, 0, 0))
    data.atomic_save(img, path)


def load_scores(path):
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such scores file; make one with rater.py or `prune.py --data D --scorer NAME`")
    try:
        s = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        raise DataError(f"{path}: not a readable .npy scores file") from None
    if not isinstance(s, np.ndarray) or s.ndim != 1 or s.dtype.kind not in "fi" or len(s) == 0:
        raise DataError(f"{path}: scores must be a non-empty 1-D float (or int) array, one per row of train.pt")
    bad = np.flatnonzero(~np.isfinite(s))
    if len(bad):
        raise DataError(f"{path}: {len(bad)} scores are NaN or infinite (the first at row {bad[0]})")
    return s


def ground_truth(path, n):
    """The defect labels of D/train.pt, or None where the set has none (all 0)."""
    d = data.load_dataset(path)
    if len(d["defect"]) != n:
        raise DataError(f"{path}: the dataset has {len(d['defect'])} rows but the scores have {n}; wrong --scores?")
    return (d["defect"].numpy(), d["defect_names"]) if d["defect"].any() else None


def prune(a):
    scores = load_scores(a.scores)
    n = len(scores)
    truth = ground_truth(a.data, n) if a.data else None
    if (a.keep is None) == (a.count is None):
        raise DataError("give exactly one of --keep FRACTION or --count K")
    if a.keep is not None and not 0 < a.keep <= 1:
        raise DataError(f"--keep {a.keep}: must lie in (0, 1]")
    count = int(round(a.keep * n)) if a.keep is not None else a.count
    if not 1 <= count <= n:
        raise DataError(f"cannot keep {count} rows of {n}: check --keep / --count")
    opts = dict(mu=a.mu, sigma=a.sigma, strata=a.strata,  # and the defaults that depend on keep, made explicit:
                start=50.0 - 50.0 * count / n if a.start is None else a.start,
                discard_top=default_discard_top(count / n) if a.discard_top is None else a.discard_top,
                beta=min(BETA, 1 - count / n) if a.beta is None else a.beta)
    data.check_out(a.out, folder=False)
    rows = STRATEGIES[a.strategy](scores, count, np.random.default_rng(a.seed), **opts)
    used = {"block": ["start"], "shift_gsample": ["discard_top", "mu", "sigma"], "gsample": ["sigma"],
            "ccs": ["beta", "strata"]}.get(a.strategy, [])
    settings = ", ".join(f"{k} {opts[k]:g}" for k in used)
    q = percentiles(scores)
    lo, hi = q[rows].min() - 50 / n, q[rows].max() + 50 / n  # the span of ranks covered, edges included
    print(f"{a.strategy}{' (' + settings + ')' if settings else ''}: kept {len(rows)} of {n} rows "
          f"({100 * len(rows) / n:.1f}%), seed {a.seed}")
    print(f"rank percentiles covered: {lo:.1f}-{hi:.1f} (0 = best-rated); mean {q[rows].mean():.1f}, "
          f"middle 80% of the kept rows {np.percentile(q[rows], 10):.1f}-{np.percentile(q[rows], 90):.1f}")
    wrote = a.out
    if truth is not None:
        defect, names = truth
        print("keep rate by defect type (ground truth from --data):")
        for _, name, n_kept, total in keep_rates(rows, defect, names):
            print(f"  {name:<12} {100 * n_kept / total:5.1f}%  ({n_kept}/{total})")
        png = os.path.splitext(a.out)[0] + ".png"
        draw_ranking(q, rows, defect, names, f"{a.strategy} ({settings or 'no options'}): kept {len(rows)} of {n} "
                     f"rows, scores {a.scores}", png)
        wrote += f" and {png}"
    elif a.data:
        print(f"{a.data} has no defect labels (all 0): no keep rates by type, no picture")
    data.atomic_save(rows, a.out)  # last: ablate.py takes the subset file as the sign that it is done
    print(f"wrote {wrote} ({len(rows)} sorted row indices)")


def score(a):
    if a.scorer not in [*IMAGE_SCORERS, "loss", "grad_norm"]:
        raise DataError(f"--scorer {a.scorer!r} is unknown; use {', '.join(IMAGE_SCORERS)}, loss or grad_norm")
    if not a.data:
        raise DataError("--scorer needs --data D (the dataset to score)")
    d = data.load_dataset(a.data)
    if a.scorer in IMAGE_SCORERS:
        fn, batch_size = (lambda images, tokens: IMAGE_SCORERS[a.scorer](images)), 512
    else:
        if not a.proxy or a.draws < 1 or a.batch_size < 1:
            raise DataError(f"--scorer {a.scorer} needs --proxy PROXY.pt (from proxy.py), --draws, --batch-size >= 1")
        from proxy import fixed_draws, load_proxy
        device = data.pick_device(a.device)
        model, _ = load_proxy(a.proxy, device, dataset=d)  # the image size and the vocabulary of this data
        draws = fixed_draws(a.draws, tuple(d["images"].shape[1:]), a.seed)
        fn = (loss_scorer if a.scorer == "loss" else grad_norm_scorer)(model, draws, device)
        batch_size = a.batch_size
        try:  # one row first: a proxy made for another image size or vocabulary fails here, with a clear message
            fn(d["images"][:1], d["tokens"][:1])
        except (RuntimeError, IndexError) as e:
            raise DataError(f"{a.proxy}: the proxy does not fit {a.data} ({str(e).splitlines()[0][:100]})") from None
    data.check_out(a.out, folder=False)
    scores = score_all(fn, d, batch_size, a.scorer)
    if not np.isfinite(scores).all():
        raise DataError(f"--scorer {a.scorer} gave non-finite scores on {a.data}")
    q, defect = percentiles(scores), d["defect"].numpy()
    if defect.any():
        print("mean rank percentile by defect type (0 = best-rated): " + ", ".join(
            f"{d['defect_names'][k]} {q[defect == k].mean():.0f}" for k in np.unique(defect)))
    data.atomic_save(scores, a.out)
    print(f"wrote {a.out} ({len(scores)} {a.scorer} scores, float32, higher = better)")


def main(argv=None):
    p = argparse.ArgumentParser(description="Select a training subset from per-row scores (Alchemist Eq. 11 and "
                                "baselines), or write heuristic scores. Percentiles: 0 = best-rated, 100 = worst.")
    p.add_argument("--scores", metavar="S.npy", help="scores to prune: float [N], one per row, higher = rated higher")
    p.add_argument("--strategy", metavar="NAME", help=f"one of {', '.join(STRATEGIES)}")
    p.add_argument("--keep", type=data.finite, metavar="FRACTION", help="fraction of the rows to keep, in (0, 1]")
    p.add_argument("--count", type=int, metavar="K", help="number of rows to keep (instead of --keep)")
    p.add_argument("--out", required=True, metavar="OUT.npy", help="the subset to write (sorted int64 rows; with "
                   "--data also OUT.png), or the scores with --scorer")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling strategies and of the proxy's draws")
    p.add_argument("--data", metavar="D", help="dataset folder (or train.pt): ground truth for the keep rates and "
                   "OUT.png; with --scorer, the rows to score")
    p.add_argument("--start", type=data.finite, metavar="PCT", help="block: first percentile (default: centred on 50)")
    p.add_argument("--discard-top", type=data.finite, metavar="PCT", help="shift_gsample: top percent discarded "
                   "(default by keep: 25 up to keep 50%%, 15 at 80%%, 5 at 90%%, 0 at 100%%, linear in between)")
    p.add_argument("--mu", type=data.finite, default=MU, metavar="PCT", help=f"shift_gsample: Gaussian centre ({MU:g})")
    p.add_argument("--sigma", type=data.finite, default=SIGMA, metavar="PCT",
                   help=f"shift_gsample, gsample: Gaussian width ({SIGMA:g})")
    p.add_argument("--beta", type=data.finite, metavar="FRACTION", help=f"ccs: fraction of the lowest-rated rows "
                   f"dropped (default {BETA:g}, or 1 - keep where that is less)")
    p.add_argument("--strata", type=int, default=STRATA, metavar="K", help=f"ccs: equal-width score strata ({STRATA})")
    p.add_argument("--scorer", metavar="NAME", help="scoring mode: score the rows of --data with clarity, frequency, "
                   "edge_density, loss or grad_norm (the last two need --proxy) and write them to --out")
    p.add_argument("--proxy", metavar="PROXY.pt", help="the proxy checkpoint for --scorer loss and grad_norm")
    p.add_argument("--draws", type=int, default=8, metavar="K", help="loss, grad_norm: fixed (t, noise) draws per row")
    p.add_argument("--batch-size", type=int, default=64, help="loss, grad_norm: rows per forward pass")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="loss, grad_norm: auto picks CUDA")
    p.error = data.arg_error
    a = p.parse_args(argv)
    try:
        if not a.out.endswith(".npy"):
            raise DataError(f"--out {a.out}: must end in .npy")
        if a.scorer:
            return score(a)
        if not a.scores or a.strategy not in STRATEGIES:
            raise DataError(f"give --scores S.npy and --strategy NAME, one of {', '.join(STRATEGIES)} "
                            f"(got {a.strategy}); or --data D --scorer NAME to make scores")
        if not (a.sigma > 0 and 0 <= (a.beta or 0) < 1 and a.strata >= 1 and 0 <= (a.discard_top or 0) < 100
                and 0 <= (a.start or 0) <= 100 and np.isfinite(a.mu)):
            raise DataError("need --sigma > 0, 0 <= --beta < 1, --strata >= 1, 0 <= --discard-top < 100, "
                            "0 <= --start <= 100 and a finite --mu")
        prune(a)
    except DataError as e:
        data.fail(str(e))


if __name__ == "__main__":
    main()
