"""toy2d.py -- the quick lab for the online methods: JEST/AJEST and autoguidance on a 2-D tree with an exact density.

Reads:   nothing (every point comes from an exact Gaussian mixture)
Writes:  OUT/toy_results.json (config; per seed: accounting, learning curves, metrics), OUT/toy_results.md (mean +-
         std over seeds, at equal samples and at equal compute), OUT/toy_samples.png (seed 0's samples over the outline)
Run:     python toy2d.py --out runs/toy [--preset quick --online none,jest,early_ajest --guidance 2 --seeds 3]
Implements the 2-D task of "Autoguided Online Data Curation for Diffusion Model Training" (arXiv 2509.15267) on the
"tree" of EDM2's toy_example.py (autoguidance, Karras et al., arXiv 2406.02507); background: docs/METHOD.md, section 4.
About 3 minutes on one CPU thread with the default preset: 3 seeds of 4096 steps (EDM2's count) at batch 512.

  tree      127 branches x 8 elongated Gaussians; noised by rectified flow it stays a mixture: all is exact.
  data      clean points from tree A, and bad ones: half from tree B (grown the opposite way), half uniform.
  models    MLP velocity predictors (as proxy.py); a smaller one with 1/8 the steps is the JEST reference and guide.
  online    train_t2i.py's: L_i = loss_i(learner) - loss_i(reference) on the same (t, eps); JEST; AJEST's switch.
  compare   over seeds; at equal samples and at equal compute (FLOPs with scoring, the stand-in for equal time).
  sampling  Euler from t = 1 to 0 with autoguidance v_w = w v_main + (1 - w) v_guide; exact metrics of the samples.
"""
import argparse
import copy
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageDraw
from tqdm import tqdm

import data
import train_t2i  # online selection: learnability, jest_select, AjestSwitch

# ----------------------------------------------------------------------------------------------------------------
# Presets: "quick" (default) is EDM2's toy schedule at 1/8 of its batch, "paper" EDM2's schedule, "tiny" for tests.
PRESETS = {
    "tiny": dict(steps=60, ref_steps=20, batch_size=64, width=16, ref_width=8, n_data=2048, n_eval=256, sample_steps=8),
    "quick": dict(steps=4096, ref_steps=512, batch_size=512, width=64, ref_width=32, n_data=65536, n_eval=4096, sample_steps=32),
    "paper": dict(steps=4096, ref_steps=512, batch_size=4096, width=64, ref_width=32, n_data=1 << 20, n_eval=16384, sample_steps=64),
}
ONLINE = train_t2i.ONLINE
ORIGIN, SCALE = np.array([0.0030, 0.0325]), np.array([1.3136, 1.3844])  # EDM2's placement of the tree
OUTLINE_LOGP = -2.12  # the tree's outline, the paper's toy metric: log p(x) >= -2.12, where ~99% of exact samples lie
GRID = 64  # coverage grid: GRID x GRID cells over tree A's bounding box


# ----------------------------------------------------------------------------------------------------------------
# The tree: an exact Gaussian mixture (phi [K], mu [K,2], Sigma [K,2,2], float64)

def build_tree(cls, seed=2):
    """EDM2's fractal tree. One numpy stream (seed 2) draws class A (first branch at pi/4), then goes on for B (5 pi/4).
    At depth d < 7 a branch of length dist = 0.292 * 0.8^d * (1 + 0.2 n) leaves the current point; 8 Gaussians sit
    on it at fractions linspace(0.07, 0.93, 8), weight dist * 0.5^d, std 0.06 dist along it, thick = 0.2 * 0.8^d / dist
    times that across; two children turn by +-0.7^d (1 + 0.2 n). Scaled by SCALE about ORIGIN, both trees' root."""
    rng, comps = np.random.RandomState(seed), []

    def grow(c, depth, pos, angle):
        if depth >= 7:
            return
        d = np.array([np.cos(angle), np.sin(angle)])
        dist = 0.292 * 0.8 ** depth * (rng.randn() * 0.2 + 1)
        thick, size = 0.2 * 0.8 ** depth / dist, SCALE * dist * 0.06
        cov = (np.outer(d, d) + (np.eye(2) - np.outer(d, d)) * thick ** 2) * np.outer(size, size)
        if c == cls:
            comps.extend((dist * 0.5 ** depth, ORIGIN + (pos + d * dist * f) * SCALE, cov)
                         for f in np.linspace(0.07, 0.93, 8))
        for sign in (1, -1):
            grow(c, depth + 1, pos + d * dist, angle + sign * 0.7 ** depth * (rng.randn() * 0.2 + 1))

    grow("A", 0, np.zeros(2), np.pi / 4)
    grow("B", 0, np.zeros(2), np.pi * 5 / 4)  # the same stream goes on: B's shape depends on A having been drawn
    phi, mu, cov = (torch.tensor(np.array(v), dtype=torch.float64) for v in zip(*comps))
    return phi / phi.sum(), mu, cov


def _components(tree, x, t):
    """Each component noised to time t: x_t | k ~ N(a mu_k, C_k), a = 1 - t, C_k = a^2 Sigma_k + t^2 I.
    x [N,2] -> log(phi_k N(x; a mu_k, C_k)) [N,K] and the two coordinates of C_k^-1 (x - a mu_k), each [N,K]."""
    phi, mu, cov = tree
    a = 1.0 - t
    C = a * a * cov + t * t * torch.eye(2, dtype=cov.dtype)  # (K, 2, 2)
    det = C[:, 0, 0] * C[:, 1, 1] - C[:, 0, 1] ** 2
    p00, p01, p11 = C[:, 1, 1] / det, -C[:, 0, 1] / det, C[:, 0, 0] / det  # C^-1, written out for 2 x 2
    rx, ry = x[:, :1] - a * mu[:, 0], x[:, 1:] - a * mu[:, 1]  # (N, K) each
    Crx, Cry = p00 * rx + p01 * ry, p01 * rx + p11 * ry
    return phi.log() - 0.5 * det.log() - math.log(2 * math.pi) - 0.5 * (rx * Crx + ry * Cry), Crx, Cry


def _chunked(fn, x, size=4096):
    return torch.cat([fn(x[i:i + size]) for i in range(0, len(x), size)])


def log_density(tree, x, t=0.0):
    """log p_t(x) of the noised mixture [N]. t = 0 is the data density; at RF time t the EDM noise level is
    sigma = t / (1 - t), since x_t / (1 - t) = x0 + sigma eps."""
    return _chunked(lambda xs: _components(tree, xs, t)[0].logsumexp(1), x)


def velocity(tree, x, t):
    """The ideal rectified-flow velocity E[eps - x0 | x_t = x] = (-t grad log p_t(x) - x) / (1 - t) (Tweedie), finite
    at t = 1: with w the posterior over components, E[eps | x, k] = t C^-1 r and E[x0 | x, k] = mu + a Sigma C^-1 r,
    so v = sum_k w_k ((t I - a Sigma_k) C_k^-1 r_k - mu_k)."""
    _, mu, cov = tree
    M = t * torch.eye(2, dtype=cov.dtype) - (1 - t) * cov  # (K, 2, 2)

    def one(xs):
        logw, Crx, Cry = _components(tree, xs, t)
        w = logw.softmax(1)
        return torch.stack([(w * (M[:, i, 0] * Crx + M[:, i, 1] * Cry - mu[:, i])).sum(1) for i in (0, 1)], 1)
    return _chunked(one, x.double()).to(x.dtype)


def sample_tree(tree, n, gen):
    """Exact samples [n,2] (float64): a component k ~ phi, then mu_k + L_k z with L_k L_k^T = Sigma_k."""
    phi, mu, cov = tree
    k = torch.multinomial(phi, n, replacement=True, generator=gen)
    z = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return mu[k] + torch.einsum("nij,nj->ni", torch.linalg.cholesky(cov)[k], z)


def tree_box(tree, margin=0.1):
    """A square [lo, hi] (2 numbers) around the component means."""
    return tree[1].min().item() - margin, tree[1].max().item() + margin


def make_data(tree_a, tree_b, n, bad_frac, gen):
    """n training points [n,2] (float32) and their labels [n]: 0 = clean (tree A), 1 = the wrong tree (B),
    2 = uniform background over the box of both trees. bad_frac of the points are bad, half of each kind."""
    n_bad, n_b = round(bad_frac * n), round(bad_frac * n) // 2  # n_b from tree B, n_bad - n_b uniform
    lo, hi = min(tree_box(tree_a)[0], tree_box(tree_b)[0]), max(tree_box(tree_a)[1], tree_box(tree_b)[1])
    x = torch.cat([sample_tree(tree_a, n - n_bad, gen), sample_tree(tree_b, n_b, gen),
                   lo + (hi - lo) * torch.rand(n_bad - n_b, 2, generator=gen, dtype=torch.float64)])
    label = torch.cat([torch.zeros(n - n_bad), torch.ones(n_b), torch.full((n_bad - n_b,), 2.0)]).long()
    order = torch.randperm(n, generator=gen)  # shuffled, so that the first rows are a fair sample
    return x[order].float(), label[order]


# ----------------------------------------------------------------------------------------------------------------
# The denoiser: an MLP predicting the rectified-flow velocity (proxy.py's loss, on points instead of images)

class MLP(nn.Module):
    """v_theta(x_t, t): [N,2], [N] -> [N,2]. Inputs as EDM's preconditioning: x_t / std(x_t) (sigma_data = 0.5)
    and the noise level log(sigma) / 4 with sigma = t / (1 - t); `depth` hidden layers of `width` with SiLU."""

    def __init__(self, width=64, depth=4):
        super().__init__()
        self.config = dict(width=width, depth=depth)
        layers = [m for i in range(depth) for m in (nn.Linear(3 if i == 0 else width, width), nn.SiLU())]
        self.net = nn.Sequential(*layers, nn.Linear(width, 2))  # input: (x / std, log sigma / 4), 3 numbers

    def forward(self, x, t):
        t = t.clamp(1e-6, 1 - 1e-6)[:, None]  # (N, 1)
        c_in = ((1 - t) ** 2 * 0.25 + t ** 2).rsqrt()
        return self.net(torch.cat([x * c_in, (t / (1 - t)).log() / 4], dim=1))


def sample_t(n, gen):
    """Training times: logit(t) = log(sigma) ~ N(-2.3, 1.5^2), EDM2's toy noise distribution in RF time."""
    return torch.sigmoid(-2.3 + 1.5 * torch.randn(n, generator=gen))


def rf_loss(model, x0, t, noise):
    """Per-point loss |v_theta(x_t, t) - (eps - x0)|^2 / 2 with x_t = (1 - t) x0 + t eps: [N]."""
    x_t = (1 - t[:, None]) * x0 + t[:, None] * noise
    return (model(x_t, t) - (noise - x0)).pow(2).mean(1)


# ----------------------------------------------------------------------------------------------------------------
# Training, with online selection (train_t2i.py's learnability, jest_select and AjestSwitch)

def train(model, x, label, steps, batch_size, lr, seed, device, reference=None, rule="none", factor=5.0,
          chunks=16, temperature=1.0, val=None, desc="train"):
    """Adam (0.9, 0.99), lr / sqrt(max(step / 512, 1)) (EDM2's toy); each step keeps batch_size points, uniform or
    chosen by train_t2i.jest_select from a uniform super-batch of batch_size * factor. Returns the accounting (FLOPs =
    2 x params per point forward, 3x that with the backward; seconds; a learning curve on clean held-out draws) and, for
    a selecting rule, (a copy of the model, its accounting) after its last step within the uniform run's FLOPs: the
    lr depends on the step alone and all draws come from one stream, so that is the run trained for so many steps."""
    gen, x = torch.Generator().manual_seed(seed), x.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    switch, big = train_t2i.AjestSwitch(rule), max(batch_size, round(batch_size * factor))
    n_par, n_ref = (sum(p.numel() for p in m.parameters()) if m is not None else 0 for m in (model, reference))
    cost = (6 * batch_size * n_par, 6 * batch_size * n_par + 2 * big * (n_par + n_ref))  # a step's FLOPs [scoring]
    log, equal = dict(steps=0, kept=0, kept_bad=0, flops=0, seconds=0.0, scoring_steps=0, scoring_seconds=0.0,
                      selecting_steps=0, score_std=0.0, switch_step=None, step_flops=cost, curve=[]), None
    for step in tqdm(range(steps), desc=desc, dynamic_ncols=True, leave=False):
        scoring = switch.scoring
        if rule != "none" and equal is None and log["flops"] + cost[scoring] > steps * cost[0]:
            equal = copy.deepcopy(model), copy.deepcopy(log)  # the equal-compute run ends before this step
        tick = time.perf_counter()
        m = big if scoring else batch_size  # a super-batch, or just a uniform batch
        idx, t, noise = torch.randint(len(x), (m,), generator=gen), sample_t(m, gen), torch.randn(m, 2, generator=gen)
        if scoring:  # both losses on the same draws, for every rule: the switch step is reported for all of them
            x0, t0, eps = x[idx], t.to(device), noise.to(device)
            point_loss = lambda net: rf_loss(net, x0, t0, eps)  # noqa: E731 (per point, on this super-batch's draws)
            s, l_learn, l_ref = train_t2i.learnability(point_loss, model, reference, rule, both=True)
            means = l_learn.mean().item(), l_ref.mean().item()
            if log["switch_step"] is None and means[0] < means[1]:
                log["switch_step"] = step  # the first super-batch on which the learner beats the reference
            keep = torch.arange(batch_size)  # a uniform draw already: its first batch_size points are a uniform batch
            if switch.update(step, *means):
                keep = train_t2i.jest_select(s.cpu(), batch_size, chunks, temperature, gen)
                log["selecting_steps"] += 1
                log["score_std"] += (s.std().item() - log["score_std"]) / log["selecting_steps"]  # running mean
            idx, t, noise = idx[keep], t[keep], noise[keep]
        loss = rf_loss(model, x[idx], t.to(device), noise.to(device)).mean()
        opt.param_groups[0]["lr"] = lr / math.sqrt(max(step / 512, 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - tick
        log.update(steps=step + 1, kept=(step + 1) * batch_size, flops=log["flops"] + cost[scoring],
                   kept_bad=log["kept_bad"] + int((label[idx] > 0).sum()), seconds=log["seconds"] + dt,
                   scoring_steps=log["scoring_steps"] + scoring, scoring_seconds=log["scoring_seconds"] + scoring * dt)
        if val is not None and ((step + 1) % max(1, steps // 10) == 0 or step + 1 == steps):  # the learning curve
            log["curve"].append(dict(step=step + 1, kept=log["kept"], flops=log["flops"],
                                     seconds=round(log["seconds"], 3), val_loss=rf_loss(model, *val).mean().item()))
    return log, equal


# ----------------------------------------------------------------------------------------------------------------
# Sampling with autoguidance and exact metrics

def autoguided(main, guide=None, w=1.0):
    """v_w(x, t) = w v_main + (1 - w) v_guide (autoguidance, Karras et al. 2024, written there for the denoiser
    D; v = (x - D) / t is affine in D at fixed (x, t), so mixing velocities is the same guidance)."""
    if guide is None or w == 1:
        return main
    return lambda x, t: guide(x, t).lerp(main(x, t), w)  # = guide + w (main - guide)


def time_grid(steps):
    """t_0 = 1 > t_1 > ... > t_steps = 0: EDM's rho = 7 spacing of sigma in [0.002, 80], mapped by t = s / (1 + s),
    with pure noise (t = 1) first and the data (t = 0) last; most steps go to small t, where the branches form."""
    ramp = torch.linspace(0, 1, steps - 1, dtype=torch.float64)
    sigma = (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    return torch.cat([torch.ones(1, dtype=torch.float64), sigma / (1 + sigma), torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def sample(v, n, steps, seed, device="cpu"):
    """Euler on dx/dt = v(x, t) from x_1 = eps ~ N(0, I) (seeded) down to t = 0: x_next = x + (t_next - t) v."""
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)).to(device)
    ts = time_grid(steps).tolist()
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * v(x, torch.full((n,), t, device=device))
    return x.cpu()


def metrics(tree, x, target_mass):
    """Mean log p(x) under the clean density; fraction inside the outline (log p >= OUTLINE_LOGP); coverage = the
    fraction of grid cells holding >= 1/len(x) of the true mass (one exact sample or more expected) that get one."""
    logp, meaningful = log_density(tree, x.double()), target_mass >= 1 / len(x)
    covered = (grid_counts(tree, x) > 0) & meaningful
    return dict(loglik=logp.mean().item(), inside=(logp >= OUTLINE_LOGP).double().mean().item(),
                coverage=covered.sum().item() / max(1, meaningful.sum().item()))


def grid_counts(tree, x):
    """Points per cell of a GRID x GRID grid over tree A's box, [GRID*GRID]; points outside fall in no cell."""
    lo, hi = tree_box(tree)
    ij = ((x.double() - lo) / (hi - lo) * GRID).floor().long()
    ok = ((ij >= 0) & (ij < GRID)).all(1)
    return torch.bincount(ij[ok, 0] * GRID + ij[ok, 1], minlength=GRID * GRID)


# ----------------------------------------------------------------------------------------------------------------
# Plumbing: the picture, one seed's runs, the tables over seeds, the command line

def picture(tree, panels, path, cols, size=220):
    """One PNG: each panel the tree's outline (light green, log p >= OUTLINE_LOGP on a size x size pixel grid of
    tree A's box), its points as dark dots (bad training points red) and a title above."""
    lo, hi = tree_box(tree)
    c = lo + (torch.arange(size, dtype=torch.float64) + 0.5) * (hi - lo) / size
    xy = torch.stack(torch.meshgrid(c, c.flip(0), indexing="xy"), -1).reshape(-1, 2)  # row 0 = top = high y
    inside = (log_density(tree, xy) >= OUTLINE_LOGP).view(size, size).numpy()
    bg = np.where(inside[..., None], np.array([200, 235, 200], np.uint8), np.array([255, 255, 255], np.uint8))
    canvas = Image.new("RGB", (cols * (size + 8), (len(panels) + cols - 1) // cols * (size + 22)), "white")
    pen = ImageDraw.Draw(canvas)
    for i, (title, x, bad) in enumerate(panels):
        ox, oy = (i % cols) * (size + 8), (i // cols) * (size + 22)
        canvas.paste(Image.fromarray(bg.astype(np.uint8)), (ox, oy + 18))
        px = ((x.double() - lo) / (hi - lo) * size).floor().long()
        for (u, v), b in zip(px.tolist(), bad.tolist()):
            if 0 <= u < size and 0 <= v < size:
                pen.point((ox + u, oy + 18 + size - 1 - v), fill=(220, 30, 30) if b else (20, 40, 90))
        pen.text((ox + 2, oy + 3), title, fill="black")
    data.atomic_save(canvas, path)


def run_seed(a, cfg, rules, tree_a, x, label, val, target_mass, seed, device):
    """The reference/guide, then per rule a main model (all from one init and batch seed) and its equal-compute copy,
    each sampled with w = 1 and w = --guidance from the same noise; the picture for the first seed."""
    k = 10 * seed  # seeds: k + 1 guide, k + 2 main models, k + 3 exact samples, k + 4 sampling noise
    torch.manual_seed(k + 1)
    models = {"reference/guide": MLP(cfg["ref_width"]).to(device)}
    guide = models["reference/guide"]
    logs = {"reference/guide": train(guide, x, label, cfg["ref_steps"], cfg["batch_size"], a.lr, k + 1, device,
                                     val=val, desc=f"reference, seed {seed}")[0]}
    for rule in rules:
        torch.manual_seed(k + 2)
        models[rule] = MLP(cfg["width"]).to(device)
        logs[rule], equal = train(models[rule], x, label, cfg["steps"], cfg["batch_size"], a.lr, k + 2, device, guide,
                                  rule, a.factor, a.chunks, a.temperature, val, desc=f"{rule}, seed {seed}")
        if equal is not None:
            models[rule + " @ equal compute"], logs[rule + " @ equal compute"] = equal
    n, steps, clean = cfg["n_eval"], cfg["sample_steps"], torch.zeros(cfg["n_eval"])
    ideal = sample(lambda xs, t: velocity(tree_a, xs, t[0].item()), n, steps, k + 4)  # the sampler's ceiling
    exact = sample_tree(tree_a, n, torch.Generator().manual_seed(k + 3))
    rows = [dict(model=name, training="-", w=None, **metrics(tree_a, pts, target_mass))
            for name, pts in [("exact samples", exact), ("exact velocity + Euler", ideal)]]
    top, bottom = [("training data (bad in red)", x[:n], label[:n])], [("exact velocity, Euler", ideal, clean)]
    for name, model in models.items():
        for w in [1.0] if model is guide else sorted({1.0, a.guidance}):
            pts, log = sample(autoguided(model, guide, w), n, steps, k + 4, device), logs[name]
            rows.append(dict(model=f"w{model.config['width']}", training=name, w=w, steps=log["steps"],
                             **metrics(tree_a, pts, target_mass), bad_kept=log["kept_bad"] / log["kept"],
                             gflop=log["flops"] / 1e9, seconds=log["seconds"], switch_step=log["switch_step"]))
            if name in rules:  # top row unguided, bottom row autoguided
                (top if w == 1 else bottom).append((f"{name}, w={w:g}", pts, clean))
    if seed == a.seed:  # the picture: the first seed only
        picture(tree_a, top + bottom, os.path.join(a.out, "toy_samples.png"), cols=len(top))
    return dict(seed=seed, rows=rows, logs=logs)


COLUMNS = [("mean log p", "loglik", "{:.2f}"), ("inside outline", "inside", "{:.1%}"), ("coverage", "coverage",
           "{:.1%}"), ("bad kept", "bad_kept", "{:.1%}"), ("steps", "steps", "{:.0f}"), ("GFLOP", "gflop", "{:.1f}"),
           ("train s", "seconds", "{:.1f}"), ("switch step", "switch_step", "{:.0f}")]  # (header, row key, format)


def tables(results):
    """The markdown: the rows of all seeds grouped by (model, training, w), each cell mean ± sample std over seeds,
    at equal samples and at equal compute; the seconds per optimizer step with and without selection; notes."""
    groups, cfg, seeds = {}, results["config"], [s["seed"] for s in results["per_seed"]]
    for r in (r for s in results["per_seed"] for r in s["rows"]):
        groups.setdefault((r["model"], r["training"], "-" if r["w"] is None else f"{r['w']:g}"), []).append(r)

    def cell(v, fmt):  # mean ± sample std; one number where all seeds agree, "-" where a seed has none
        std = f" ± {fmt.format(np.std(v, ddof=1))}" if None not in v and np.ptp(v) else ""
        return "-" if None in v else fmt.format(np.mean(v)) + std

    def table(keep):  # the groups whose training name passes keep
        out = "| model | training | w | " + " | ".join(h for h, _, _ in COLUMNS) + " |\n|" + "---|" * (3 + len(COLUMNS))
        for key, rs in groups.items():
            if keep(key[1]):
                out += "\n| " + " | ".join([*key] + [cell([r.get(k) for r in rs], f) for _, k, f in COLUMNS]) + " |"
        return out + "\n"

    runs = [log for s in results["per_seed"] for name, log in s["logs"].items() if name in cfg["rules"]]
    t = np.array([[r["scoring_seconds"], r["scoring_steps"], r["seconds"], r["steps"]] for r in runs]).sum(0)
    sel, uni = t[0] / max(1, t[1]) * 1e3, (t[2] - t[0]) / max(1, t[3] - t[1]) * 1e3  # ms per step, all main runs
    flops = runs[0]["step_flops"]  # (without, with scoring)
    return "\n".join([
        f"### At equal samples ({cfg['steps']} steps of {cfg['batch_size']} points)\n", table(lambda n: "@" not in n),
        "### At equal compute (FLOPs, scoring included; ~ equal time)\n", table(lambda n: n == "none" or "@" in n),
        f"Selection overhead: {sel:.2f} ms per optimizer step with scoring and selection vs {uni:.2f} ms without "
        f"({sel / uni:.1f}x; {flops[1] / flops[0]:.1f}x in FLOPs), over every step of every run and seed.\n",
        f"Cells: mean ± sample std over seeds {', '.join(map(str, seeds))}. FLOPs: 2 x params per point forward, 6 x "
        "with the backward, + 2 x (learner + reference params) per point scored. Switch step: the first super-batch "
        f"with the learner's loss below the reference's. Total {results['total_seconds']:.0f} s.\n"])


def main(argv=None):
    p = argparse.ArgumentParser(description="2-D tree lab: online selection and autoguidance with exact metrics.")
    p.add_argument("--out", required=True, help="output folder; writes toy_results.json, .md and toy_samples.png")
    p.add_argument("--preset", choices=list(PRESETS), default="quick", help="sizes and schedule (tiny | quick | paper)")
    p.add_argument("--online", default="none,jest,early_ajest", help=f"comma-separated rules to compare, of {ONLINE}")
    for key, what in [("steps", "optimizer steps of each main model"), ("ref_steps", "steps of the reference/guide"),
                      ("batch_size", "points kept per step, B"), ("width", "hidden width of the main model"),
                      ("ref_width", "hidden width of the reference/guide"), ("n_data", "training points"),
                      ("n_eval", "samples per evaluated model"), ("sample_steps", "Euler steps of the sampler")]:
        p.add_argument("--" + key.replace("_", "-"), type=int, help=what + " (default: preset)")
    p.add_argument("--lr", type=data.finite, default=1e-2, help="Adam learning rate before its 1/sqrt decay")
    p.add_argument("--factor", type=data.finite, default=5.0,
                   help="super-batch = B * factor = B / (1 - f); 5 is f = 0.8")
    p.add_argument("--chunks", type=int, default=16, help="JEST chunks per selection")
    p.add_argument("--temperature", type=data.finite, default=1.0,
                   help="softmax temperature (vs score_std in the json)")
    p.add_argument("--guidance", type=data.finite, default=2.0,
                   help="autoguidance weight w (1 = none) for the guided rows")
    p.add_argument("--bad-frac", type=data.finite, default=0.2, help="bad training points: half tree B, half uniform")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, and the first run seed")
    p.add_argument("--seeds", type=int, default=3, help="runs with seeds --seed .. --seed + N - 1")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.error = data.arg_error
    a = p.parse_args(argv)
    cfg = {k: v if getattr(a, k) is None else getattr(a, k) for k, v in PRESETS[a.preset].items()}
    rules = [r.strip() for r in a.online.split(",") if r.strip()]
    if not rules or any(r not in ONLINE for r in rules) or len(set(rules)) != len(rules):
        data.fail(f"--online {a.online!r}: give distinct rules from {ONLINE}, separated by commas")
    if min(cfg.values()) < 1 or a.seeds < 1 or min(cfg["sample_steps"], cfg["n_eval"]) < 2:
        data.fail("sizes, steps and --seeds must be positive, --n-eval and --sample-steps at least 2")
    if not (a.lr > 0 and a.factor >= 1 and a.temperature > 0 and 0 <= a.bad_frac < 1 and a.guidance > 0
            and 1 <= a.chunks <= cfg["batch_size"]):
        data.fail("--lr, --temperature and --guidance must be positive, --factor >= 1, 0 <= --bad-frac < 1, and "
                  f"--chunks between 1 and the batch size {cfg['batch_size']}")
    try:
        data.check_out(a.out)  # before the work, not after it
    except data.DataError as e:
        data.fail(str(e))
    device, started = data.pick_device(a.device), time.perf_counter()

    # The same for every seed: the trees, the training set, held-out draws for the curves, true mass per grid cell.
    tree_a, tree_b, gen = build_tree("A"), build_tree("B"), torch.Generator().manual_seed(a.seed)
    x, label = make_data(tree_a, tree_b, cfg["n_data"], a.bad_frac, gen)  # x [n,2], label [n]
    val = (sample_tree(tree_a, 2048, gen).float().to(device), sample_t(2048, gen).to(device),
           torch.randn(2048, 2, generator=gen).to(device))
    target_mass = grid_counts(tree_a, sample_tree(tree_a, 1 << 18, gen)).double() / (1 << 18)

    per_seed = [run_seed(a, cfg, rules, tree_a, x, label, val, target_mass, seed, device)
                for seed in range(a.seed, a.seed + a.seeds)]
    results = dict(config=dict(vars(a), **cfg, rules=rules), per_seed=per_seed,
                   bad_frac_in_data=(label > 0).float().mean().item(), total_seconds=time.perf_counter() - started)
    data.atomic_save(results, os.path.join(a.out, "toy_results.json"))
    data.atomic_save(tables(results), os.path.join(a.out, "toy_results.md"))
    print(tables(results) + f"\nwrote toy_results.json, .md and toy_samples.png in {a.out}")
    return results


if __name__ == "__main__":
    main()
