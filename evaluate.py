"""evaluate.py -- FID, KID, CLIP score, a rule-based GenEval and defect rates for a trained text-to-image model.

Reads:   D/test.pt, MODEL.pt, D/evaluator.pt (when cached), D/val.pt (real-image sets), --inception and --guide files
Writes:  OUT (metrics.json), OUT's stem + "_samples.png" (samples with their prompts), D/evaluator.pt (the cache)
Run:     python evaluate.py --data data/shapes --model runs/x/shift50/model.pt --out runs/x/shift50/metrics.json
         [--guide runs/x/shift50/guide.pt --guidance 2 --cfg 1]     (autoguidance: Karras et al. 2024)

The paper's FID, CLIP score and GenEval rebuilt (docs/METHOD.md 6) for a tiny domain where Inception/CLIP mean nothing:
  evaluator   a small CLIP-style image/caption encoder pair trained here (symmetric InfoNCE) on clean scenes that
              data.py draws on a seed stream of its own (real-image sets: D/val.pt); cached in D/evaluator.pt.
  FID, KID    on its 256-d penultimate image features (or Inception-V3 pool features, --inception). They compare only
              with numbers from the same encoder at the same --n-samples (FID grows ~1/N).
  CLIP score  the evaluator's raw mean image-caption cosine (no clamp, no x100).
  GenEval     exact rule-based checks on the shapes set (object, colour, position, count, binding), no model.
  defects     the share of samples with noise or a watermark stamp, by pixel rules.
"""
import argparse
import functools
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw
from tqdm import tqdm

import data
from data import BACKGROUND, COLOURS, DataError, atomic_save, fail, load_dataset, load_pt, pick_device, to_float

# The evaluator's cached config (a change retrains it). 600 steps: a CPU minute at 32x32, top-1 ~0.95; raise on a GPU.
ENCODER = dict(steps=600, batch_size=128, lr=2e-3, n_train=20000, n_held_out=1000, width=64, feat_dim=256, emb_dim=64,
               seed=0)
EVAL_STREAM = 0xE7A1  # SeedSequence([EVAL_STREAM, seed]) shares no stream with data.py's SeedSequence(seed).spawn(3)
TASKS = ["object", "colour", "position", "count", "binding"]


# ----------------------------------------------------------------------------------------------------------------
# FID, KID and CLIP score on features (plain functions of arrays)

def frechet_distance(mu1, sigma1, mu2, sigma2):
    """FID = |mu1-mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) in float64, the trace of the root on the symmetric route
    of docs/METHOD.md section 6 (scipy's sqrtm is slow, with spurious imaginary parts; eigvalsh(S1 @ S2) is wrong)."""
    mu1, sigma1, mu2, sigma2 = (np.asarray(x, dtype=np.float64) for x in (mu1, sigma1, mu2, sigma2))
    lam, V = np.linalg.eigh(sigma1)                                   # S1 = V diag(lam) V^T
    R = (V * np.sqrt(np.clip(lam, 0, None))) @ V.T                    # R = S1^{1/2}
    M = R @ sigma2 @ R                                                # similar to S1 S2: same eigenvalues, but symmetric
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((M + M.T) / 2), 0, None)).sum()  # Tr (S1 S2)^{1/2}
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt)


def mean_cov(feats):
    """[N, D] -> mean [D] and covariance [D, D] (N-1 in the denominator), float64."""
    x = np.asarray(feats, dtype=np.float64)
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (len(x) - 1)


def fid(feats_a, feats_b):
    if min(len(feats_a), len(feats_b)) < 2:
        raise DataError("FID needs at least 2 samples on each side")
    return frechet_distance(*mean_cov(feats_a), *mean_cov(feats_b))


def kid(feats_a, feats_b, n_subsets=100, subset_size=1000, seed=0):
    """Unbiased MMD^2 (the within-set means leave out the diagonal), k(x,y) = (x.y/d + 1)^3 (Binkowski 2018): (mean,
    std) over n_subsets pairs of m = min(subset_size, len(a), len(b)) rows (a's, then b's) from default_rng(seed)."""
    a, b = np.asarray(feats_a, dtype=np.float64), np.asarray(feats_b, dtype=np.float64)
    m, d = min(subset_size, len(a), len(b)), a.shape[1]
    rng, mmd = np.random.default_rng(seed), []
    for _ in range(n_subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((p @ q.T / d + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))  # (m, m) each
        mmd.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return float(np.mean(mmd)), float(np.std(mmd))


def clip_score(img_emb, txt_emb):
    """Mean cosine of matched rows, raw as in the paper (0.23; shuffled < 0), not torchmetrics' 100 max(cos, 0)."""
    return float(F.cosine_similarity(torch.as_tensor(img_emb).double(), torch.as_tensor(txt_emb).double()).mean())


# ----------------------------------------------------------------------------------------------------------------
# The evaluation encoder: a conv net for images and a tiny transformer for captions, trained contrastively

class Evaluator(nn.Module):
    """Image -> (256-d features for FID/KID, unit 64-d embedding); caption tokens -> unit 64-d embedding."""

    def __init__(self, vocab_size, length, width=64, feat_dim=256, emb_dim=64):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.GELU(),                # (B, 16, H, W)
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GELU(),     # (B, 32, H/2, W/2)
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),     # (B, 64, H/4, W/4)
            nn.AdaptiveAvgPool2d(3), nn.Flatten(),                    # (B, 64*9): one vector per cell, keeps position
            nn.Linear(64 * 9, feat_dim), nn.GELU())                   # (B, 256): the penultimate features
        self.img_proj = nn.Linear(feat_dim, emb_dim)
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(0.02 * torch.randn(1, length, width))
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.text_enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.txt_proj = nn.Linear(width, emb_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # learned temperature, CLIP's start

    def image(self, x):  # float [B,3,H,W] in [-1, 1]
        f = self.conv(x)
        return f, F.normalize(self.img_proj(f), dim=-1)

    def text(self, tokens):  # int64 [B, L], 0 = padding
        pad = tokens == 0
        h = self.text_enc(self.tok(tokens) + self.pos[:, :tokens.shape[1]], src_key_padding_mask=pad)  # (B, L, width)
        keep = (~pad).unsqueeze(-1).float()
        h = (h * keep).sum(1) / keep.sum(1).clamp(min=1)              # (B, width): mean over the real tokens
        return F.normalize(self.txt_proj(h), dim=-1)


def clip_loss(model, images, tokens):
    """Symmetric InfoNCE (CLIP): each image must pick its caption out of the batch, and each caption its image."""
    zi, zt = model.image(images)[1], model.text(tokens)
    logits = model.logit_scale.exp().clamp(max=100) * zi @ zt.T       # (B, B) cosine / temperature
    labels = torch.arange(len(zi), device=zi.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def encoder_pairs(data_dir, test, cfg):
    """(train, held-out) pairs of (uint8 images, tokens): new clean scenes in the test's grammar, else val / test."""
    if test["meta"].get("generator") != "shapes":
        val = load_dataset(data_dir, "val")
        return (val["images"], val["tokens"]), (test["images"], test["tokens"])
    rng = np.random.default_rng(np.random.SeedSequence([EVAL_STREAM, cfg["seed"]]))
    images, captions, _, _ = data.generate(cfg["n_train"] + cfg["n_held_out"], cfg["size"], rng, {}, cfg["max_objects"])
    tokens, n = data.tokenize(captions, cfg["vocab"], cfg["length"]), cfg["n_train"]
    return (images[:n], tokens[:n]), (images[n:], tokens[n:])


def train_encoder(model, cfg, images, tokens, device):
    """AdamW on clip_loss; the learning rate warms up over 50 steps, then decays to 0 on a cosine."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01)
    lr_at = lambda s: min(1, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / cfg["steps"]))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    g, batch = torch.Generator().manual_seed(cfg["seed"]), min(cfg["batch_size"], len(images))
    for _ in tqdm(range(cfg["steps"]), desc="evaluator", leave=False):
        idx = torch.randperm(len(images), generator=g)[:batch]       # no repeats: a repeat would be a false negative
        loss = clip_loss(model, to_float(images[idx]).to(device), tokens[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


@torch.no_grad()
def encode_images(model, images, batch=500):
    """uint8 [N,3,H,W] -> (features [N,256], embeddings [N,64]) on the CPU."""
    out = [model.image(to_float(x).to(model.logit_scale.device)) for x in images.split(batch)]
    return tuple(torch.cat(z).cpu() for z in zip(*out))


@torch.no_grad()
def encode_text(model, tokens, batch=500):
    return torch.cat([model.text(t.to(model.logit_scale.device)) for t in tokens.split(batch)]).cpu()


def retrieval_top1(model, images, tokens, batch=100):
    """Image-to-caption top-1 accuracy inside groups of 100 pairs (chance: 1%), the evaluator's sanity figure."""
    zi, zt = encode_images(model, images)[1], encode_text(model, tokens)
    hits = [(a @ b.T).argmax(1) == torch.arange(len(a)) for a, b in zip(zi.split(batch), zt.split(batch))]
    return float(torch.cat(hits).float().mean())


def load_encoder(data_dir, test, device="cpu", **overrides):
    """(evaluator, its checkpoint less the weights): D/evaluator.pt when its config matches, else trained and cached."""
    shapes = test["meta"].get("generator") == "shapes"
    cfg = {**ENCODER, **overrides, "size": test["images"].shape[-1], "length": test["tokens"].shape[1],
           "vocab": list(test["vocab"]), "source": "generated shapes" if shapes else "val split",
           "max_objects": test["meta"].get("max_objects", 2)}
    path = os.path.join(data_dir, "evaluator.pt")
    try:
        ckpt = load_pt(path, "evaluator") if os.path.isfile(path) else {}
    except DataError:
        ckpt = {}  # an unreadable cache is simply rebuilt
    cached = ckpt.get("config") == cfg
    torch.manual_seed(cfg["seed"])  # the initial weights
    model = Evaluator(len(cfg["vocab"]), cfg["length"], cfg["width"], cfg["feat_dim"], cfg["emb_dim"]).to(device)
    if cached:
        model.load_state_dict(ckpt["model"])
    else:
        start = time.time()
        (images, tokens), held_out = encoder_pairs(data_dir, test, cfg)
        train_encoder(model, cfg, images, tokens, device)
        ckpt = {"model": model.eval().state_dict(), "config": cfg, "step": cfg["steps"],
                "retrieval_top1": retrieval_top1(model, *held_out), "train_seconds": round(time.time() - start, 1)}
        atomic_save(ckpt, path)
    print(f"evaluator {'loaded from' if cached else 'trained and saved to'} {path} ({cfg['source']}, {cfg['steps']} "
          f"steps in {ckpt['train_seconds']} s): image-to-caption top-1 {ckpt['retrieval_top1']:.3f} (chance 0.01)")
    return model.eval(), {k: v for k, v in ckpt.items() if k != "model"}


# ----------------------------------------------------------------------------------------------------------------
# Inception-V3 pool features from a local weights file (real-image sets; nothing is downloaded)

def load_inception(path):
    import torchvision
    sd = load_pt(path, "Inception-V3 weights file")
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    try:  # torchvision's released file also holds the auxiliary classifier, which pool features do not use
        net.load_state_dict({k: v for k, v in sd.get("model", sd).items() if not k.startswith("AuxLogits.")})
    except (RuntimeError, AttributeError):
        raise DataError(f"{path}: not an Inception-V3 state_dict (keys or shapes differ)") from None
    net.fc = nn.Identity()  # the output is now the 2048-d pool features
    return net.eval()


@torch.no_grad()
def inception_features(net, images, batch=32):
    """uint8 [N,3,H,W] -> [N, 2048]. Resized to 299; input in [-1, 1], which is what torchvision's transform_input
    would turn ImageNet-normalised input into, so the ported weights see the range they were trained on."""
    dev = next(net.parameters()).device
    return torch.cat([net(F.interpolate(to_float(images[i:i + batch]).to(dev), size=(299, 299), mode="bilinear",
                                        align_corners=False)).cpu() for i in range(0, len(images), batch)])


# ----------------------------------------------------------------------------------------------------------------
# GenEval on the shapes set: exact pixel rules, no learned model

SHAPE_RGB = np.array(list(COLOURS.values()), dtype=np.float64)  # (6, 3)
BG = np.array(BACKGROUND, dtype=np.float64)


def palette_fit(images):
    """Explain every pixel as background blended with one palette colour, pix = BG + alpha (colour - BG), as the
    box filter of data.draw makes them. uint8 [N,3,H,W] -> alpha and squared residual, each [N, 6, H, W]."""
    d = images.transpose(0, 2, 3, 1)[:, None].astype(np.float64) - BG    # (N, 1, H, W, 3)
    v = (SHAPE_RGB - BG)[None, :, None, None]                            # (1, 6, 1, 1, 3)
    alpha = np.clip((d * v).sum(-1) / (v * v).sum(-1), 0, 1)             # (N, 6, H, W)
    resid = ((d - alpha[..., None] * v) ** 2).sum(-1)
    return np.where(alpha > 0.1, alpha, 0.0), resid                      # faint alpha is background, not object


def cell_masks(size):
    """[9, H, W] one-hot: the 3x3 grid cell of each pixel, by the pixel's centre."""
    c = ((np.arange(size) + 0.5) * 3 / size).astype(int)
    return np.eye(9)[c[:, None] * 3 + c[None, :]].transpose(2, 0, 1)


@functools.lru_cache(maxsize=None)
def templates(size):
    """The alpha map of every (shape, scale) drawn alone in every cell, also moved by a pixel each way (a model may
    place an object a pixel off): [9 cells, 72 = (shape*2 + scale)*9 + move, H, W]."""
    drawn = np.stack([data.draw([(s, 0, z, c)], size) for c in range(9) for s in range(4) for z in range(2)])
    alpha = palette_fit(drawn)[0][:, 0]                                  # (72, H, W): drawn in red, so red's alpha
    moved = np.stack([np.roll(alpha, (dy, dx), axis=(1, 2)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], 1)
    return (moved.reshape(9, 72, size, size) * cell_masks(size)[:, None]).astype(np.float32)


def detect(images, chunk=64):
    """The object in each cell of uint8 images [N,3,H,W]: found, shape, colour, scale (each [N, 9])."""
    if len(images) > chunk:  # in chunks, to bound the [N, 9, 72, H, W] comparison below
        parts = [detect(images[i:i + chunk]) for i in range(0, len(images), chunk)]
        return tuple(np.concatenate(p) for p in zip(*parts))
    cells, T = cell_masks(images.shape[-1]), templates(images.shape[-1])
    alpha, resid = palette_fit(images)
    colour = np.einsum("nchw,khw->nkc", resid, cells).argmin(-1)         # (N, 9): best-fitting colour per cell
    a = (alpha[np.arange(len(images))[:, None], colour] * cells).astype(np.float32)  # (N, 9, H, W): its alpha
    # shape and scale: the template with the highest soft IoU, sum(min) / sum(max), in the same cell
    iou = np.minimum(a[:, :, None], T).sum((-1, -2)) / np.maximum(a[:, :, None], T).sum((-1, -2))  # (N, 9, 72)
    best = iou.argmax(-1) // 9                                           # (N, 9): shape*2 + scale
    # an object: more ink than half the smallest one, in a shape like one (not a sliver of a neighbour's object)
    found = (a.sum((-1, -2)) > 0.5 * T.sum((-1, -2)).min(-1)) & (iou.max(-1) > 0.6)
    return found, best // 2, colour, best % 2


def geneval_checks(images, objects):
    """Per task, (correct [N], applies [N]) for images and their prompts' labels objects [N,2,4] = (shape, colour,
    scale, cell), -1 where absent. object/colour/position: single-object prompts; count: all; binding: two-object."""
    found, shape, colour, _ = detect(np.asarray(images))
    objects = np.asarray(objects)
    n_obj = (objects[:, :, 0] >= 0).sum(1)
    s, c, k = objects[..., 0], objects[..., 1], objects[..., 3]          # (N, 2) each
    r = np.arange(len(objects))[:, None]
    in_cell = found[r, k] & (shape[r, k] == s)                           # (N, 2): the right shape in the named cell
    anywhere = found[:, None] & (shape[:, None] == s[..., None])         # (N, 2, 9): the right shape in any cell
    one, two = n_obj == 1, n_obj == 2
    return {"object": (anywhere[:, 0].any(-1), one),
            "colour": ((anywhere & (colour[:, None] == c[..., None]))[:, 0].any(-1), one),
            "position": (in_cell[:, 0], one),
            "count": (found.sum(1) == n_obj, np.ones_like(one)),
            "binding": ((in_cell & (colour[r, k] == c)).all(1), two)}


def geneval(images, objects):
    """Per-task accuracies (geneval_<task>) and their mean (geneval_overall), like GenEval's overall score."""
    acc = {f"geneval_{t}": float(ok[applies].mean()) for t, (ok, applies) in geneval_checks(images, objects).items()
           if applies.any()}
    return {**acc, "geneval_overall": float(np.mean(list(acc.values())))}


def defect_rates(images, shapes=True):
    """noise: over 30% of the pixels fit no palette blend (shapes set only); watermark: over 30% of the bottom-right
    corner (data.generate's stamp) bright in every channel, which no palette colour and no background is."""
    images = np.asarray(images)
    w = images.shape[-1] // 3
    out = {"watermark_rate": float(((images[:, :, -w:, -w:].min(1) >= 170).mean((1, 2)) > 0.3).mean())}
    if shapes:  # pixels off every palette blend by > 25 per channel, in chunks of 200 images: (N, H, W)
        off = [palette_fit(images[i:i + 200])[1].min(1) > 3 * 25 ** 2 for i in range(0, len(images), 200)]
        out["noise_rate"] = float((np.concatenate(off).mean((1, 2)) > 0.3).mean())
    return out


# ----------------------------------------------------------------------------------------------------------------
# Plumbing: every metric from already-generated images, the command line

def evaluate_images(images, test, encoder, rows=None, inception=None):
    """uint8 images [N,3,H,W] drawn from the prompts test[rows] (default 0..N-1) -> metrics against all of test."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    (feats, img_emb), (ref_feats, ref_emb) = encode_images(encoder, images), encode_images(encoder, test["images"])
    txt_emb = encode_text(encoder, test["tokens"])
    if inception is not None:
        feats, ref_feats = inception_features(inception, images), inception_features(inception, test["images"])
    subset = max(2, min(1000, len(images) // 2, len(ref_feats)))  # subsets smaller than N, so that std means something
    kid_mean, kid_std = kid(feats.numpy(), ref_feats.numpy(), subset_size=subset)
    m = {"fid": fid(feats.numpy(), ref_feats.numpy()), "kid_mean": kid_mean, "kid_std": kid_std,
         "kid_subset_size": subset, "clip_score": clip_score(img_emb, txt_emb[rows]),
         "clip_score_reference": clip_score(ref_emb, txt_emb), "n_samples": len(images), "n_reference": len(ref_emb)}
    if "objects" in test:  # the shapes set: its prompts' objects are known
        m.update(geneval(images.numpy(), test["objects"][rows].numpy()))
    return {**m, **defect_rates(images.numpy(), shapes="objects" in test)}


# ----------------------------------------------------------------------------------------------------------------
# Pictures that compare models: the same prompts drawn by each, and a metric over training

def compare_samples(models, labels, test, path, n=8, steps=16, cfg=1.0):
    """ablate.py's samples.png: n test prompts as captioned columns; real images, then a row per model (model.pt)."""
    from proxy import load_proxy, sample_images
    drawn = [sample_images(load_proxy(m)[0], test["tokens"][:n], steps=steps, cfg=cfg, seed=0) for m in models]
    rows = [test["images"][:n]] + [((x + 1) * 127.5).round().clamp(0, 255).byte() for x in drawn]
    data.captioned_grid([[r[i] for r in rows] for i in range(n)], test["captions"][:n], path, cols=n, cell_w=150,
                        labels=["real image"] + labels, footer=f"{steps} Euler steps, CFG {cfg:g}, sampling seed 0")


def line_plot(curves, path, title, xlabel="training step", width=640, height=360):
    """{label: {x: value}} -> a PNG line chart, one colour per label (Pillow only)."""
    pts = [(n, v) for c in curves.values() for n, v in c.items()]
    if not pts:
        return
    x1, y0, y1 = max(1, max(n for n, _ in pts)), min(v for _, v in pts), max(v for _, v in pts)
    y0, y1 = (y0, y1) if y1 > y0 else (y0 - 1, y1 + 1)
    key = max(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(str(k)) for k in curves)  # the legend's width
    L, T, W, H = 60, 30, width - 200, height - 70
    img = Image.new("RGB", (max(width, int(L + W + 24 + key)), height), "white")
    pen = ImageDraw.Draw(img)
    pen.text((L, 8), title, fill="black")
    pen.rectangle([L, T, L + W, T + H], outline="black")
    to = lambda n, v: (L + W * n / x1, T + H - H * (v - y0) / (y1 - y0))
    for v in np.linspace(y0, y1, 5):
        pen.text((4, to(0, v)[1] - 6), f"{v:.3f}", fill="black")
    shown = -1e9
    for n in sorted({n for n, _ in pts}):  # a label at least 40 px from the last one, so that none overlap
        if (x := to(n, y0)[0]) - shown >= 40:
            pen.text((x - 10, T + H + 6), str(n), fill="black")
            shown = x
    pen.text((L + W // 2 - 20, T + H + 22), xlabel, fill="black")
    for i, (label, c) in enumerate(curves.items()):
        colour, xy = list(COLOURS.values())[i % len(COLOURS)], [to(n, c[n]) for n in sorted(c)]
        pen.line(xy, fill=colour, width=2) if len(xy) > 1 else None
        for x, y in xy:
            pen.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        pen.text((L + W + 12, T + 16 * i), label, fill=colour)
    atomic_save(img, path)


def main(argv=None):
    p = argparse.ArgumentParser(description="FID, KID, CLIP score, GenEval and defect rates of a model's samples.")
    p.add_argument("--data", required=True, help="data folder with test.pt; the evaluator is cached there")
    p.add_argument("--model", required=True, help="model checkpoint to sample (model.pt or proxy.pt)")
    p.add_argument("--out", required=True, help="metrics file, e.g. runs/x/metrics.json (a sample grid goes beside it)")
    p.add_argument("--n-samples", type=int, default=1000, help="one image per test prompt; equal N in compared runs")
    p.add_argument("--repeat", action="store_true", help="cycle the test prompts when --n-samples exceeds them")
    p.add_argument("--cfg", type=data.finite, default=3.0, help="classifier-free guidance weight (1 = no guidance)")
    p.add_argument("--guide", metavar="GUIDE.pt", help="autoguidance (Karras et al. 2024): D = w D_model + (1 - w) "
                   "D_guide, a smaller or earlier model (train_t2i.py --guide-at); --cfg applies in each model first")
    p.add_argument("--guidance", type=data.finite, help="autoguidance weight w with --guide (default 2; 1 = none)")
    p.add_argument("--steps", type=int, default=32, help="sampler steps")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (batch starting at row i uses seed + i)")
    p.add_argument("--batch-size", type=int, default=250, help="prompts per sampling batch")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.add_argument("--encoder-steps", type=int, default=ENCODER["steps"], help="evaluator steps (a change retrains)")
    p.add_argument("--inception", metavar="PATH", help="FID/KID on Inception-V3 features, weights from this file")
    p.error = data.arg_error  # argparse's own errors also come out as one line and exit 2
    a = p.parse_args(argv)
    started = time.time()
    try:
        if not os.path.isdir(a.data):
            raise DataError(f"{a.data}: no such data folder; make one with `python data.py --out {a.data}`")
        test = load_dataset(a.data, "test")
        if a.n_samples < 2 or a.batch_size < 1 or a.steps < 1 or a.encoder_steps < 1:
            raise DataError("--n-samples must be at least 2; --batch-size, --steps and --encoder-steps at least 1")
        if a.n_samples > len(test["images"]) and not a.repeat:
            raise DataError(f"--n-samples {a.n_samples} is more than the {len(test['images'])} test prompts; "
                            "lower it or pass --repeat to cycle the prompts")
        device = pick_device(a.device)
        from proxy import load_proxy, sample_images  # here, so that evaluate.py imports without proxy.py
        model, ckpt = load_proxy(a.model, device, dataset=test)  # image size, caption length and vocabulary
        guide, guidance = None, 1.0
        if a.guide:  # mixed with the model's: same image size, caption length and vocabulary; width, depth may differ
            guide, g = load_proxy(a.guide, device)
            mine, its = ([c["config"].get(k) for k in ["image_size", "vocab_size", "max_tokens"]] for c in (ckpt, g))
            if its != mine or g.get("vocab") != ckpt.get("vocab"):
                raise DataError(f"{a.guide}: the guide does not match the model (image size, vocabulary size, caption "
                                f"length: {its} vs {mine}, or another vocabulary)")
            guidance = 2.0 if a.guidance is None else a.guidance
        elif a.guidance is not None:
            raise DataError("--guidance needs --guide (the model to guide with)")
        inception = load_inception(a.inception).to(device) if a.inception else None
        grid = os.path.splitext(a.out)[0] + "_samples.png"
        data.check_out(a.out, folder=False)
        data.check_out(grid, folder=False)
    except (DataError, ImportError) as e:  # ImportError: no proxy.py beside this file
        fail(str(e))
    encoder, enc = load_encoder(a.data, test, device, steps=a.encoder_steps)
    rows = np.arange(a.n_samples) % len(test["images"])
    x = torch.cat([sample_images(model, test["tokens"][rows[i:i + a.batch_size]].to(device), steps=a.steps,
                                 cfg=a.cfg, seed=a.seed + i, guide=guide, guidance=guidance).float().cpu()
                   for i in tqdm(range(0, len(rows), a.batch_size), desc="sampling")])
    images = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # [-1, 1] -> uint8
    metrics = evaluate_images(images, test, encoder, rows, inception)
    encoder_name = (f"inception-v3 pool 2048-d ({a.inception})" if inception is not None else
                    f"evaluator penultimate {enc['config']['feat_dim']}-d ({os.path.join(a.data, 'evaluator.pt')}, "
                    f"{enc['config']['source']}, {enc['step']} steps)")
    data.captioned_grid([[img] for img in images[:16]], [test["captions"][r] for r in rows[:16]], grid)
    metrics.update(encoder=encoder_name, encoder_retrieval_top1=enc["retrieval_top1"], seed=a.seed, cfg=a.cfg,
                   guidance=guidance, guide=os.path.abspath(a.guide) if a.guide else None, steps=a.steps,
                   data=os.path.abspath(a.data), model=os.path.abspath(a.model), eval_seconds=time.time() - started)
    atomic_save(metrics, a.out)  # last, after its picture: the sign (ablate.py's too) that the evaluation is done
    print(f"FID {metrics['fid']:.3f}  KID {metrics['kid_mean']:.4f} +- {metrics['kid_std']:.4f}  "
          f"CLIP score {metrics['clip_score']:.4f}  GenEval {metrics.get('geneval_overall', float('nan')):.3f}  "
          f"(N = {len(images)}, encoder: {encoder_name})\nwrote {a.out} and {grid}")


if __name__ == "__main__":
    main()
