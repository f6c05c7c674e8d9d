"""rater.py -- the Alchemist rater (instance and group heads on the frozen proxy's view of a sample), and scoring.

Reads:   D/train.pt, RUN/rater.pt (written by metagrad.py: the rater, its frozen trunk, the draws it was fitted on)
Writes:  OUT (scores.npy: float32 [N], higher = rated higher), and where the data has ground truth
         OUT_report.json (AUROC and mean percentile by defect type) and OUT_hist.png (scores by defect type)
Run:     python rater.py --data data/shapes --rater runs/x/rater.pt --out runs/x/scores.npy [--shuffles 4]
Implements the rater of Alchemist (arXiv 2512.16905, Sec. 3, Eq. 7/8); metagrad.py trains it.

What the rater sees. A rater learnt from scratch on raw pixels and tokens must discover image-caption agreement from
a weak, noisy meta-signal, and a first prototype did not (docs/METHOD.md, Sec. 2). Alchemist's own rater
is a transformer of its proxy's family; ours goes one step further and looks through the proxy itself. Its trunk is
a FROZEN copy of the warmed primary model (metagrad.py), and for each training row it computes once, with no grad:
  log L(x_i, caption) at K fixed (t, noise) draws          K numbers   how well the proxy fits the sample
  log L(x_i, null caption) at the same K draws             K numbers   their difference is the "caption gain"
  mean over image tokens of the last DiT block's output     C numbers   the proxy's picture of (x_t, t, caption)
standardised over the training set (mean/std kept as buffers). The trunk never changes, so the features of all N rows
are computed once before the meta-gradient loop, and a meta step costs almost nothing extra for the rater: it is a
few small MLPs on a [B, 2K + C] table.

On top, the trainable part (Eq. 7/8):
  e_i      = GELU(Linear(D, C) f_i)                        adapter: the sample's embedding, [B, C]
  z_i      = Linear(64, 1) GELU Linear(C, 64) e_i          instance logit
  w_inst_i = softmax_i( sigmoid(z_i) / tau )               sums to 1 over the batch
  z_group  = MLP( [mean_i e_i, var_i e_i] )                the group head's logit: one number for the whole batch
  W_batch  = sigmoid(z_group)
  W_i      = w_inst_i * W_batch                            Eq. 7/8
The temperature tau (default 0.2) is ours: sigmoid-then-softmax caps the largest/smallest weight ratio at e^(1/tau),
which is only 2.7 at tau = 1.

Scoring. A row's weight W_i depends on which rows share its batch and saturates, so it is a poor ranking. We rank by
  score_i = z_i + mean over K random batchings of z_group of the batch that holds i
z_i is the instance head's verdict before the sigmoid: inside any batch W_i is monotone in z_i, z_i does not
saturate, and it does not depend on the batch. The group term adds the group head's verdict on the company a row
keeps, averaged over K random batchings so that it does not depend on file order (the released scorer uses fixed
batches of 256 in file order). Both are logits, so they add on one unbounded scale, like
log W_i = log w_inst_i + log W_batch. Without the group head the score is z_i alone.
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageDraw

import data
import proxy

K_DRAWS = 4  # fixed (t, noise) draws per row for the features
DRAWS_SEED = 1234  # the noise of those draws; stored in rater.pt so that scoring sees the very same features
INPUTS = ["losses", "content"]  # what the rater sees of a row (metagrad.py --rater-input); stored in rater.pt
CONTENT_BLOCKS, CONTENT_T = 1, 0.0  # content: the trunk's first block, at t = 0 (the clean image, no noise)


# ----------------------------------------------------------------------------------------------------------------
# The proxy's view of a sample: the frozen trunk's features

@torch.no_grad()
def trunk_features(trunk, x0, tokens, draws):
    """x0 [B,3,H,W] in [-1,1], tokens [B,L], draws (t [K], noise [K,3,H,W]) -> raw features [B, 2K + C]."""
    t, noise = draws
    B, K = x0.shape[0], len(t)
    null = data.null_tokens(B, tokens.shape[1]).to(x0.device)
    last = {}  # a forward hook reads the last block's output, so that proxy.py stays untouched
    hook = trunk.blocks[-1].register_forward_hook(lambda module, inputs, out: last.update(h=out))
    try:
        with_caption, without = [], []
        for j in range(K):
            tj, nj = t[j].expand(B).to(x0.device), noise[j].expand_as(x0).to(x0.device)
            with_caption.append(proxy.rf_loss(trunk, x0, tokens, tj, nj))  # (B,) L(x_i, caption)
            if j == K // 2:
                hidden = last["h"].mean(1)  # (B, T, C) -> (B, C): pooled over image tokens at the middle draw
            without.append(proxy.rf_loss(trunk, x0, null, tj, nj))  # (B,) L(x_i, null caption), same draw
    finally:
        hook.remove()
    log_loss = lambda cols: torch.stack(cols, dim=1).clamp_min(1e-8).log()  # (B, K)
    return torch.cat([log_loss(with_caption), log_loss(without), hidden], dim=1)  # (B, 2K + C)


@torch.no_grad()
def content_features(trunk, x0, tokens, blocks=CONTENT_BLOCKS, t=CONTENT_T):
    """The sample itself through the trunk's first layers, with no noise draw: x0 [B,3,H,W] in [-1,1] (the clean
    image is x_t at t = 0), tokens [B,L] -> the mean over image tokens of block `blocks`' output, [B, C].
    Patch embedding, text encoder and the first `blocks` DiT blocks, conditioned on t and the caption as in
    proxy.DiT.forward: one partial forward pass per row (Alchemist's rater: a small network of the proxy's family
    over image tokens that attend to the caption, mean-pooled)."""
    B = x0.shape[0]
    h = trunk.patchify(x0).flatten(2).transpose(1, 2) + trunk.pos  # (B, T, C)
    text, pooled, mask = trunk.text(tokens)  # (B, L, C), (B, C), (B, L)
    tt = torch.full((B,), float(t), device=x0.device)
    c = trunk.t_embed(proxy.timestep_embedding(tt, h.shape[-1])) + trunk.text_to_c(pooled)  # (B, C)
    for block in trunk.blocks[:blocks]:
        h = block(h, c, text, mask)
    return h.mean(1)  # (B, C)


# ----------------------------------------------------------------------------------------------------------------
# The rater: adapter, instance head, group head (Eq. 7/8)

class Rater(nn.Module):
    """Instance and group heads on standardised trunk features; forward(f [B,D]) -> (W [B], z [B], W_batch [])."""

    def __init__(self, in_dim, width=128, hidden=64, temperature=0.2, use_group=True):
        super().__init__()
        self.config = dict(in_dim=in_dim, width=width, hidden=hidden, temperature=temperature, use_group=use_group)
        self.temperature, self.use_group = temperature, use_group
        self.register_buffer("feat_mean", torch.zeros(in_dim))  # standardisation over the training set
        self.register_buffer("feat_std", torch.ones(in_dim))
        self.adapter = nn.Sequential(nn.Linear(in_dim, width), nn.GELU())
        self.instance = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, 1))
        # the group MLP ends in a Sigmoid, applied in forward() so that scoring can read its logit exactly
        self.group = nn.Sequential(nn.Linear(2 * width, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def fit_standardisation(self, raw):
        """Set the buffers from the raw features of the whole training set, [N, D]."""
        self.feat_mean.copy_(raw.mean(0))
        self.feat_std.copy_(raw.std(0).clamp_min(1e-6))

    def standardise(self, raw):
        return (raw - self.feat_mean) / self.feat_std  # (N, D)

    def logits(self, f):
        """f [B, D] -> instance logits z [B] and z_group, the group head's logit (W_batch before the sigmoid, a
        scalar; None without the group head)."""
        e = self.adapter(f)  # (B, C) the samples' embeddings
        z = self.instance(e).squeeze(-1)  # (B,)
        if not self.use_group:
            return z, None
        stats = torch.cat([e.mean(0), e.var(0, unbiased=False)])  # (2C,): what the batch looks like as a whole
        return z, self.group(stats).squeeze(-1)  # (B,), ()

    def instance_weights(self, z):
        """w_inst = softmax over the batch of sigmoid(z) / tau: [B], sums to 1 (Eq. 7)."""
        return torch.softmax(torch.sigmoid(z) / self.temperature, dim=0)

    def forward(self, f):
        """Eq. 8: f [B, D] -> (W, z, W_batch): z, z_group = self.logits(f); W_batch = sigmoid(z_group), or a 1 of f's
        dtype and device without the group head; W_i = instance_weights(z)_i * W_batch [B], with its graph."""
        z, z_group = self.logits(f)
        w_inst = self.instance_weights(z)  # (B,)  Eq. 7
        W_batch = torch.sigmoid(z_group) if self.use_group else torch.ones((), dtype=f.dtype, device=f.device)
        return w_inst * W_batch, z, W_batch  # Eq. 8: W_i = w_inst_i * W_batch


# ----------------------------------------------------------------------------------------------------------------
# Scoring: one number per row, for the ranking

@torch.no_grad()
def score_rows(rater, feats, shuffles=4, batch_size=64, seed=0):
    """score_i = z_i + mean over `shuffles` random batchings of z_group of i's batch: [N] (module docstring)."""
    z, _ = rater.logits(feats)  # (N,): the instance head sees one row at a time
    if not rater.use_group:
        return z
    gen = torch.Generator().manual_seed(seed)
    group = torch.zeros_like(z)
    n_batches = max(1, len(z) // batch_size)  # near-equal batches of batch_size or a little more, none tiny
    for _ in range(shuffles):
        for rows in torch.randperm(len(z), generator=gen).tensor_split(n_batches):
            group[rows.to(z.device)] += rater.logits(feats[rows.to(feats.device)])[1] / shuffles
    return z + group


# ----------------------------------------------------------------------------------------------------------------
# Plumbing: the features of many rows, rater.pt, the reports by defect type, the direction check, the
# histogram and the command line

@torch.no_grad()
def features_of_rows(trunk, images, tokens, draws, device, batch_size=256):
    """trunk_features over many rows: images uint8 [N,3,H,W], tokens [N,L] -> float32 [N, 2K + C] on the CPU."""
    out = []
    for i in range(0, len(images), batch_size):
        x0 = data.to_float(images[i:i + batch_size]).to(device)
        out.append(trunk_features(trunk, x0, tokens[i:i + batch_size].to(device), draws).cpu())
    return torch.cat(out)


@torch.no_grad()
def input_features(trunk, images, tokens, device, kind="losses", draws=None, blocks=CONTENT_BLOCKS, batch_size=256):
    """What the rater sees of many rows, by kind: "losses" -> features_of_rows, [N, 2K + C] (needs `draws`);
    "content" -> content_features, [N, C]. images uint8 [N,3,H,W], tokens [N,L]; float32 on the CPU."""
    if kind == "losses":
        return features_of_rows(trunk, images, tokens, draws, device, batch_size)
    return torch.cat([content_features(trunk, data.to_float(images[i:i + batch_size]).to(device),
                                       tokens[i:i + batch_size].to(device), blocks).cpu()
                      for i in range(0, len(images), batch_size)])


def features_for(trunk, ckpt, images, tokens, device):
    """input_features with the kind, draws and blocks stored in a rater.pt (`ckpt`): the very view it was trained on."""
    kind, size = ckpt.get("input", "losses"), images.shape[-1]
    draws = proxy.fixed_draws(ckpt["K"], (3, size, size), seed=ckpt["draws_seed"]) if kind == "losses" else None
    return input_features(trunk, images, tokens, device, kind, draws, ckpt.get("content_blocks", CONTENT_BLOCKS))


# rater.pt: the rater with its trunk, written through proxy.py's one checkpoint writer

def save_rater(path, rater, trunk, step, vocab, k=K_DRAWS, draws_seed=DRAWS_SEED, **extra):
    """rater.pt = model, config, step, vocab, trunk (the frozen proxy's state_dict), trunk_config, K, draws_seed."""
    proxy.save_checkpoint(path, rater, step, vocab, trunk=trunk.state_dict(), trunk_config=dict(trunk.config),
                          K=k, draws_seed=draws_seed, **extra)


def load_rater(path, device="cpu", dataset=None):
    """Rebuild (rater, trunk, ckpt) from rater.pt; with `dataset`, check image size and vocabulary against it."""
    ckpt = data.load_pt(path, "rater")
    need = {"model", "config", "trunk", "trunk_config", "vocab", "K", "draws_seed"}
    if not need <= set(ckpt):
        missing = sorted(need - set(ckpt))
        raise data.DataError(f"{path}: not a rater file (missing {missing}); make one with metagrad.py")
    if ckpt.get("input", "losses") not in INPUTS:
        raise data.DataError(f"{path}: rater input {ckpt['input']!r} is not one of {INPUTS}; make it with metagrad.py")
    try:
        trunk = proxy.DiT(**ckpt["trunk_config"])
        trunk.load_state_dict(ckpt["trunk"])
        rater = Rater(**ckpt["config"])
        rater.load_state_dict(ckpt["model"])
    except (TypeError, RuntimeError) as e:
        raise data.DataError(f"{path}: weights do not fit the stored configs ({str(e).splitlines()[0][:80]})") from None
    if dataset is not None:
        size = dataset["images"].shape[-1]
        if trunk.config["image_size"] != size:
            raise data.DataError(f"{path}: rater was trained on {trunk.config['image_size']}px images, "
                                 f"the data has {size}px")
        if list(ckpt["vocab"]) != list(dataset["vocab"]) or dataset["tokens"].shape[1] > trunk.config["max_tokens"]:
            raise data.DataError(f"{path}: rater was trained with another vocabulary than this data's")
    return rater.to(device).eval(), trunk.to(device).eval().requires_grad_(False), ckpt


# How a ranking treats each defect type

def average_ranks(x):
    """Ranks 1..n of x [n], ties sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts + 1  # the lowest rank of each distinct value
    return (first + (counts - 1) / 2.0)[inverse]


def auroc(scores, labels_pos, labels_neg):
    """P(score of a positive row > score of a negative row), ties counting 1/2: Mann-Whitney U / (n_pos n_neg).
    labels_pos, labels_neg: boolean masks over scores. With positive = clean, low score = defective scores 1."""
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[np.asarray(labels_pos, bool)], s[np.asarray(labels_neg, bool)]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = average_ranks(np.concatenate([pos, neg]))
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0  # positives' rank sum minus its minimum
    return float(u / (len(pos) * len(neg)))


def aurocs_by_type(scores, defect, names):
    """{defect name: AUROC of clean vs that type} for every defect type present (low score = defective)."""
    defect = np.asarray(defect)
    return {names[k]: auroc(scores, defect == 0, defect == k) for k in range(1, len(names)) if (defect == k).any()}


def ranking_report(scores, defect, names):
    """Flat dict: auroc_<type> for each defect type, mean_percentile_<type> for every type (100 = top)."""
    defect = np.asarray(defect)
    percentile = 100.0 * (average_ranks(scores) - 1) / max(1, len(scores) - 1)  # (N,) 0 = lowest, 100 = highest
    report = {f"auroc_{name}": a for name, a in aurocs_by_type(scores, defect, names).items()}
    for k, name in enumerate(names):
        if (defect == k).any():
            report[f"mean_percentile_{name}"] = float(percentile[defect == k].mean())
    return report


def seen_unseen_report(scores, defect, names, rated):
    """seen_auroc_<type> and unseen_auroc_<type>: AUROC (clean vs type) on the rows the rater was meta-trained on
    (`rated`, row indices) and separately on the others, each against the clean rows of its own part."""
    seen = np.zeros(len(scores), dtype=bool)
    seen[np.asarray(rated, dtype=np.int64)] = True
    report = {}
    for part, rows in [("seen", seen), ("unseen", ~seen)]:
        if rows.any():
            for name, a in aurocs_by_type(np.asarray(scores)[rows], np.asarray(defect)[rows], names).items():
                report[f"{part}_auroc_{name}"] = a
    return report


def corrupted_copies(images, tokens, seed=0):
    """Two known-bad copies of rows: each caption swapped for the next row's (misaligned), and each image swamped
    by 70% uniform noise as data.py's noise defect (noise). uint8 [n,3,H,W], int64 [n,L] -> two (images, tokens)."""
    noise = torch.randint(0, 256, images.shape, generator=torch.Generator().manual_seed(seed))
    noisy = (0.3 * images.double() + 0.7 * noise.double()).round().to(torch.uint8)
    return {"misaligned": (images, tokens.roll(1, dims=0)), "noise": (noisy, tokens)}


@torch.no_grad()
def canary_report(rater, trunk, ckpt, val, train_z, device, n=256):
    """A check of the rater's direction that needs no labels. Val rows are meant to be clean: the rater should rate
    them above corrupted copies of themselves (canary_<kind>: AUROC of the first n val rows against their copies, 1 =
    every copy below every original) and above most training rows (val_percentile: their instance logits' mean
    percentile among the training rows' `train_z`, 50 = no cleaner than the training set). A val set as dirty as
    the training rows teaches the primary what "good" means, and the rater can learn to prefer the defects."""
    z = lambda im, tk: rater.logits(rater.standardise(features_for(trunk, ckpt, im, tk, device).to(device)))[0].cpu()
    images, tokens = val["images"][:n], val["tokens"][:n]
    z_val = z(images, tokens).numpy()
    clean = np.r_[np.ones(len(z_val), bool), np.zeros(len(z_val), bool)]
    report = {f"canary_{kind}": auroc(np.r_[z_val, z(*copy).numpy()], clean, ~clean)
              for kind, copy in corrupted_copies(images, tokens).items()}
    train_z = np.sort(np.asarray(train_z, dtype=np.float64))
    below = (np.searchsorted(train_z, z_val, "left") + np.searchsorted(train_z, z_val, "right")) / 2  # ties half
    report["val_percentile"] = float(100.0 * below.mean() / len(train_z))
    return report


def canary_warning(report, threshold=0.75):
    """One warning line when the rater prefers a corrupted copy of val rows to the rows themselves; else None."""
    bad = {k[7:]: v for k, v in report.items() if k.startswith("canary_") and v < threshold}
    if not bad:
        return None
    return (f"warning: the rater does not rate val rows above corrupted copies of them (" +
            ", ".join(f"{k} AUROC {v:.2f}" for k, v in bad.items()) + f"; val rows' mean percentile among training "
            f"rows {report['val_percentile']:.0f}): it may keep such defects at the top. Is val clean? "
            f"(data.py --val-from a curated folder)")


TYPE_COLOURS = [(60, 60, 60), (220, 50, 50), (40, 110, 230), (240, 150, 20), (150, 60, 200), (30, 160, 90), (0, 160, 170)]


def histogram_png(scores, defect, names, path, bins=40, width=720, row_h=64):
    """One histogram row per defect type on a shared score axis, each scaled to its own peak; written to `path`."""
    scores, defect = np.asarray(scores, dtype=np.float64), np.asarray(defect)
    lo, hi = float(scores.min()), float(scores.max())
    hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    types = [k for k in range(len(names)) if (defect == k).any()]
    left, top, plot_w = 150, 26, width - 170
    img = Image.new("RGB", (width, top + row_h * len(types) + 44), "white")
    pen = ImageDraw.Draw(img)
    pen.text((left, 6), "rater score (higher = rated higher); each row scaled to its own peak; "
              "AUROC = clean vs that type", fill="black")
    for r, k in enumerate(types):
        counts, _ = np.histogram(scores[defect == k], edges)
        base, colour = top + (r + 1) * row_h - 6, TYPE_COLOURS[k % len(TYPE_COLOURS)]
        pen.text((8, base - row_h // 2 - 8), names[k], fill=colour)
        pen.text((8, base - row_h // 2 + 6), f"n = {int((defect == k).sum())}", fill="gray")
        if k > 0 and (defect == 0).any():
            pen.text((8, base - row_h // 2 + 20), f"AUROC {auroc(scores, defect == 0, defect == k):.3f}", fill="gray")
        for b, c in enumerate(counts):
            if c:
                x0, h = left + b * plot_w / bins, (row_h - 14) * c / counts.max()
                pen.rectangle([x0, base - h, x0 + plot_w / bins - 1, base], fill=colour)
        pen.line([left, base, left + plot_w, base], fill=(200, 200, 200))
    axis = top + row_h * len(types) + 4
    pen.line([left, axis, left + plot_w, axis], fill="black")
    for v in np.linspace(lo, hi, 7):  # ticks with their values
        x = left + (v - lo) / (hi - lo) * plot_w
        pen.line([x, axis, x, axis + 5], fill="black")
        pen.text((x - 14, axis + 8), f"{v:.2f}", fill="black")
    data.atomic_save(img, path)


# The command line

def main(argv=None):
    p = argparse.ArgumentParser(description="Score every training row with a rater trained by metagrad.py.")
    p.add_argument("--data", required=True, help="data folder made by data.py (its train.pt is scored)")
    p.add_argument("--rater", required=True, help="rater.pt written by metagrad.py")
    p.add_argument("--out", required=True, help="scores file, e.g. runs/x/scores.npy (float32 [N], higher = better)")
    p.add_argument("--shuffles", type=int, default=4, help="random batchings averaged for the group head's term")
    p.add_argument("--batch-size", type=int, default=64, help="batch size of those batchings (the training one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random batchings")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.error = data.arg_error
    a = p.parse_args(argv)
    if a.shuffles < 1 or a.batch_size < 1:
        data.fail("--shuffles and --batch-size must be positive")
    if not a.out.endswith(".npy"):
        data.fail(f"--out {a.out}: the scores file must end in .npy")
    device = data.pick_device(a.device)
    try:
        d = data.load_dataset(a.data, "train")
        rater, trunk, ckpt = load_rater(a.rater, device, d)
        data.check_out(a.out, folder=False)
    except data.DataError as e:
        data.fail(str(e))
    raw = features_for(trunk, ckpt, d["images"], d["tokens"], device)  # (N, D), the view metagrad.py trained on
    feats = rater.standardise(raw.to(device))
    scores = score_rows(rater, feats, a.shuffles, a.batch_size, a.seed)
    scores = scores.cpu().numpy().astype(np.float32)  # (N,)
    if not np.isfinite(scores).all():
        data.fail(f"{a.rater}: the rater gives non-finite scores for {int((~np.isfinite(scores)).sum())} rows")
    stem, truth = a.out[:-len(".npy")], bool((d["defect"] != 0).any())  # truth: the data knows its defects
    report = dict(n_samples=len(scores), rater=a.rater, data=a.data, shuffles=a.shuffles, batch_size=a.batch_size,
                  rater_step=int(ckpt["step"]), rater_input=ckpt.get("input", "losses"))
    if truth:  # how the ranking treats each defect type, on all rows and on the rows the rater never trained on
        report.update(ranking_report(scores, d["defect"].numpy(), d["defect_names"]), **held_out_report(scores, d, ckpt))
        histogram_png(scores, d["defect"].numpy(), d["defect_names"], stem + "_hist.png")
    check = sanity_check(rater, trunk, ckpt, a.data, feats, device)  # {} without a val split
    report.update(check)
    data.atomic_save(report, stem + "_report.json")
    if truth:
        print(auroc_line(report))
    if check and canary_warning(check):
        print(canary_warning(check), file=sys.stderr)
    elif check:
        print("direction check: val rows above their corrupted copies (" + ", ".join(f"{k[7:]} AUROC {v:.3f}" for k, v
              in check.items() if k.startswith("canary_")) + f"), their mean percentile among training rows "
              f"{check['val_percentile']:.0f}")
    data.atomic_save(scores, a.out)  # last: ablate.py takes the scores file as the sign that rating is done
    written = [a.out, stem + "_report.json"] + ([stem + "_hist.png"] if truth else [])
    print(f"scored {len(scores)} rows (scores {scores.min():.3f} .. {scores.max():.3f}); wrote {', '.join(written)}")


def held_out_report(scores, d, ckpt):
    """seen_unseen_report for a rater trained on part of the rows (metagrad.py --rate-on); {} otherwise, or when the
    scored data has another number of rows than the data it was trained on."""
    rated = ckpt.get("rated_rows")
    if rated is None or ckpt.get("n_rows") != len(scores) or len(rated) in (0, len(scores)):
        return {}
    return seen_unseen_report(scores, d["defect"].numpy(), d["defect_names"], rated)


def auroc_line(report):
    """'AUROC clean vs misaligned 0.985 (seen 0.990, unseen 0.981), noise ...' from a report."""
    cells = []
    for key, v in report.items():
        if key.startswith("auroc_"):
            name = key[6:]
            split = [f"{part} {report[f'{part}_auroc_{name}']:.3f}" for part in ("seen", "unseen")
                     if f"{part}_auroc_{name}" in report]
            cells.append(f"{name} {v:.3f}" + (f" ({', '.join(split)})" if split else ""))
    return "AUROC clean vs " + ", ".join(cells)


def sanity_check(rater, trunk, ckpt, data_path, feats, device):
    """canary_report on the data's val split ({} when there is none); train z from the standardised features."""
    try:
        val = data.load_dataset(data_path, "val") if os.path.isdir(data_path) else None
    except data.DataError:
        val = None
    if val is None:
        return {}
    with torch.no_grad():
        train_z = rater.logits(feats)[0].cpu().numpy()
    return canary_report(rater, trunk, ckpt, val, train_z, device)


if __name__ == "__main__":
    main()
