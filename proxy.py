"""proxy.py -- the small text-conditioned DiT, its rectified-flow loss and sampler; warms up a proxy model.

Reads:   D/train.pt (or D/val.pt with --split val), via data.load_dataset
Writes:  RUN/proxy.pt (model, config, step, optimizer, EMA, RNG state), RUN/proxy_log.csv (loss overall and in ten
         bins of t), RUN/proxy_samples.png (samples with their prompts), RUN/proxy_report.json (losses by defect type)
Run:     python proxy.py --data data/shapes --out runs/x [--steps 3000 --batch-size 64 --lr 1e-3 --resume]
Implements the proxy of Alchemist (arXiv 2512.16905, Sec. 3): a small model of the target's family whose per-sample
losses the rater learns from. Every other stage imports the model, the loss and the sampler from here.

The model (DiT, Peebles & Xie 2023, with cross-attention as in PixArt-alpha):
  image [B,3,H,W] -> patches of p x p -> tokens [B,T,C] + fixed 2-D sin-cos positions
  caption tokens [B,L] -> a 2-layer transformer text encoder -> text features [B,L,C] and their masked mean [B,C]
  each block:  x += gate1 * SelfAttn(modulate(LN(x)))         adaLN-Zero, conditioned on c = emb(t) + pooled text
               x += CrossAttn(LN(x), text features)         every image token looks up the caption's words
               x += gate2 * MLP(modulate(LN(x)))
  final layer: modulate(LN(x)) -> Linear (zero-initialised) -> unpatchify -> velocity [B,3,H,W]
Why cross-attention and not only a pooled caption: a pooled embedding blurs "red circle at the top left and blue
square at the bottom" into a bag of words; cross-attention lets the patch at the top left ask which words are about
it. That makes the caption move the loss a lot (README: misaligned captions cost > 1.25x clean), which is the signal
every later stage needs (../shared/FEASIBILITY.md, point 1).

Attention is written out by hand (softmax(q k^T / sqrt(d)) v): PyTorch's fused CPU kernel has no double backward,
and the exact hypergradient in metagrad.py differentiates through a gradient step.
"""
import argparse
import csv
import json
import math
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import data

# ----------------------------------------------------------------------------------------------------------------
# Presets: CPU-sized and GPU-sized. Change these, not the code, to scale up.
PRESETS = {
    "tiny": dict(width=16, depth=1, heads=1, text_depth=1, patch=2, steps=40, batch_size=16, lr=5e-3),  # tests, trials
    # ablate.py quick: 16x16, one head (on a CPU four heads of 16 channels cost 1.3x the time for no gain: README)
    "quick": dict(width=64, depth=2, heads=1, text_depth=1, patch=2, steps=1000, batch_size=64, lr=5e-3),
    "cpu": dict(width=128, depth=4, heads=4, text_depth=2, steps=3000, batch_size=64, lr=1e-3),
    "gpu": dict(width=256, depth=8, heads=8, text_depth=2, steps=20000, batch_size=256, lr=5e-4),
}


def patch_for(size, cfg):
    """The patch side of a preset at an image size: the preset's own `patch`, else 8 x 8 tokens (size // 8, at least 2)."""
    return cfg.get("patch") or max(2, size // 8)


def cpu_has_bf16():
    """Whether this CPU multiplies bf16 in hardware (x86 AVX512-BF16 or AMX, from /proc/cpuinfo; elsewhere: no)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def autocast(device, precision="auto"):
    """Training's autocast: bf16 matrix products (weights, the loss and the optimiser stay float32) on CUDA, and on
    a CPU with bf16 hardware, where it trains the quick model 1.4x faster at the same quality (README); float32
    elsewhere, or with precision "fp32". The choice depends only on the machine, so a seed still fixes the result."""
    bf16 = precision == "bf16" or (precision == "auto" and (device.type == "cuda" or cpu_has_bf16()))
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


CFG_DROP = 0.1  # fraction of captions replaced by the null caption in training (classifier-free guidance)


# ----------------------------------------------------------------------------------------------------------------
# Embeddings

def timestep_embedding(t, dim):
    """Sinusoidal embedding of t in [0, 1]: [B] -> [B, dim] (frequencies as in DDPM/DiT, t scaled by 1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    args = 1000 * t[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_2d(grid, dim):
    """Fixed 2-D sin-cos positions (DiT/MAE): [grid*grid, dim], half the channels for rows, half for columns."""
    def one_d(pos, d):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d // 2))
        out = pos.double()[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.cat([one_d(ys.flatten(), dim // 2), one_d(xs.flatten(), dim // 2)], dim=1).float()


# ----------------------------------------------------------------------------------------------------------------
# Blocks

def attention(q, k, v, key_mask=None):
    """softmax(q k^T / sqrt(d)) v, written out so that double backward works on every device.
    q [B,h,T,d], k,v [B,h,S,d], key_mask [B,S] (True = attend) -> [B,h,T,d]."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, T, S)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1) @ v


class Attention(nn.Module):
    """Multi-head attention; self-attention when `context` is None, cross-attention otherwise."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.q, self.kv, self.out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x, context=None, key_mask=None):
        B, T, C = x.shape
        context = x if context is None else context
        split = lambda y: y.reshape(B, y.shape[1], self.heads, C // self.heads).transpose(1, 2)  # (B, h, T, d)
        k, v = self.kv(context).chunk(2, dim=-1)
        y = attention(split(self.q(x)), split(k), split(v), key_mask)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


def mlp(dim):
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class TextEncoder(nn.Module):
    """Word embeddings + learned positions + a few pre-LN transformer layers; pads are masked out."""

    def __init__(self, vocab_size, max_tokens, dim, depth, heads):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(1, max_tokens, dim) * 0.02)
        self.layers = nn.ModuleList(nn.ModuleList([nn.LayerNorm(dim), Attention(dim, heads), nn.LayerNorm(dim), mlp(dim)])
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens):
        mask = tokens != 0  # (B, L); every caption has at least one token (<null> or <unk>)
        h = self.embed(tokens) + self.pos[:, :tokens.shape[1]]
        for ln1, attn, ln2, ff in self.layers:
            h = h + attn(ln1(h), key_mask=mask)
            h = h + ff(ln2(h))
        h = self.norm(h)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, C) mean over real words
        return h, pooled, mask


class DiTBlock(nn.Module):
    """adaLN-Zero self-attention and MLP (DiT), plus a plain residual cross-attention to the caption."""

    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm_x = nn.LayerNorm(dim)
        self.cross = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = mlp(dim)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x, c, text, text_mask):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)  # each (B, C)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        x = x + self.cross(self.norm_x(x), context=text, key_mask=text_mask)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiT(nn.Module):
    """Text-conditioned DiT predicting the rectified-flow velocity. The constructor's arguments are its `config`."""

    def __init__(self, image_size=32, patch=4, width=128, depth=4, heads=4, text_depth=2, vocab_size=24, max_tokens=20):
        super().__init__()
        self.config = dict(image_size=image_size, patch=patch, width=width, depth=depth, heads=heads,
                           text_depth=text_depth, vocab_size=vocab_size, max_tokens=max_tokens)
        self.patch, self.grid = patch, image_size // patch
        self.patchify = nn.Conv2d(3, width, patch, stride=patch)
        self.register_buffer("pos", sincos_2d(self.grid, width)[None], persistent=False)  # (1, T, C), fixed
        self.t_embed = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.text = TextEncoder(vocab_size, max_tokens, width, text_depth, heads)
        self.text_to_c = nn.Linear(width, width)
        self.blocks = nn.ModuleList(DiTBlock(width, heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, patch * patch * 3)
        for layer in (self.ada_out[1], self.out):  # zero-initialised output: the model starts predicting 0
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x, t, tokens):
        """x [B,3,H,W] noisy image, t [B] in [0,1], tokens int64 [B,L] -> velocity [B,3,H,W]."""
        B, _, H, W = x.shape
        h = self.patchify(x).flatten(2).transpose(1, 2) + self.pos  # (B, T, C), T = (H/p)*(W/p)
        text, pooled, mask = self.text(tokens)  # (B, L, C), (B, C), (B, L)
        c = self.t_embed(timestep_embedding(t, h.shape[-1])) + self.text_to_c(pooled)  # (B, C)
        for block in self.blocks:
            h = block(h, c, text, mask)
        shift, scale = self.ada_out(c).chunk(2, dim=-1)
        h = self.out(modulate(self.norm_out(h), shift, scale))  # (B, T, p*p*3)
        p, g = self.patch, self.grid
        h = h.reshape(B, g, g, p, p, 3).permute(0, 5, 1, 3, 2, 4)  # (B, 3, g, p, g, p)
        return h.reshape(B, 3, H, W)


# ----------------------------------------------------------------------------------------------------------------
# Rectified flow (Liu et al. 2022; Esser et al. 2024): x_t = (1 - t) x0 + t eps, the model predicts v = eps - x0

def sample_t(n, generator=None, device="cpu"):
    """Training timesteps t ~ U(0, 1) (minRF's alternative to SD3's logit-normal). Uniform keeps weight on high t,
    where the image is mostly noise and only the caption says what to draw: that is where captions are learned."""
    return torch.rand(n, generator=generator).to(device)


def rf_loss(model, x0, tokens, t=None, noise=None, drop_prob=0.0, generator=None):
    """Per-sample rectified-flow loss, [B]: the mean over (C, H, W) of (v - (noise - x0))^2, v = model(x_t, t, tokens)
    at x_t = (1 - t) x0 + t noise. Pass `t` [B] and `noise` [B,3,H,W] to compare models on the same draws; leave them
    None to draw fresh ones from `generator` (on the CPU, so that a seed fixes them on any device), in this order: t
    (sample_t), then noise (torch.randn of x0's shape), then, if drop_prob > 0, torch.rand(B) < drop_prob: the rows
    whose caption becomes the null caption (data.null_tokens). The loss keeps x0's dtype and the model's graph."""
    B = x0.shape[0]
    if t is None:
        t = sample_t(B, generator, x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    if drop_prob > 0:  # classifier-free guidance: train on the null caption a fraction of the time
        drop = (torch.rand(B, generator=generator) < drop_prob).to(x0.device)
        tokens = torch.where(drop[:, None], data.null_tokens(B, tokens.shape[1]).to(x0.device), tokens)
    tb = t.view(B, 1, 1, 1)
    x_t = (1 - tb) * x0 + tb * noise
    v = model(x_t, t, tokens)
    return (v.to(x0.dtype) - (noise - x0)).pow(2).mean(dim=(1, 2, 3))  # (B,), in float32 even under bf16 autocast


def fixed_draws(k, shape, seed=0):
    """K shared (t, noise) draws: t at the K mid-quantiles of the uniform training density (stratified: K draws
    cover the whole range, t_j = (j + 1/2) / K), noise from `seed`. Returns t [k], noise [k, *shape]."""
    t = (torch.arange(k, dtype=torch.float32) + 0.5) / k
    noise = torch.randn((k, *shape), generator=torch.Generator().manual_seed(seed))
    return t, noise


@torch.no_grad()
def sample_loss(model, x0, tokens, draws):
    """Mean loss of each sample over the K fixed draws (the same draws for every sample and every model): [B]."""
    t, noise = draws
    B = x0.shape[0]
    losses = [rf_loss(model, x0, tokens, t[j].expand(B).to(x0.device), noise[j].expand_as(x0).to(x0.device))
              for j in range(len(t))]
    return torch.stack(losses).mean(0)


@torch.no_grad()
def sample_images(model, tokens, steps=32, cfg=3.0, seed=0, guide=None, guidance=1.0):
    """Euler sampler from t=1 (noise) to t=0 with classifier-free guidance, v = v_null + cfg (v_text - v_null), and
    with a `guide` autoguidance (Karras et al. 2024): D_w = w D_main + (1 - w) D_guide, the guide a smaller and/or
    earlier model of the same task, w = `guidance`; CFG acts inside each model first (cfg=1: autoguidance alone, as
    in the paper). D = x_t - t v is affine in v, so mixing velocities mixes denoisers.
    Start: x = torch.randn((B, 3, S, S), generator=torch.Generator().manual_seed(seed)) (on the CPU, then moved),
    S = model.config["image_size"]; step i = 0 .. steps-1 at t_i = 1 - i / steps (one t for the whole batch):
    x <- x - v(x, t_i) / steps. The result is clamped to [-1, 1]. guidance 1 (or no guide) never runs the guide.
    tokens int64 [B,L] on the model's device -> images float [B,3,H,W] in [-1, 1]."""
    device, B, size = tokens.device, tokens.shape[0], model.config["image_size"]
    x = torch.randn((B, 3, size, size), generator=torch.Generator().manual_seed(seed)).to(device)
    null = data.null_tokens(B, tokens.shape[1]).to(device)

    def velocity(net, x, t):
        if cfg == 1.0:
            return net(x, t, tokens)
        v_text, v_null = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([tokens, null])).float().chunk(2)
        return v_null + cfg * (v_text - v_null)
    for i in range(steps):
        t = torch.full((B,), 1 - i / steps, device=device)
        v = velocity(model, x, t)
        if guide is not None and guidance != 1.0:  # in code, guide(x).lerp(main(x), w)
            v = velocity(guide, x, t).float().lerp(v.float(), guidance)
        x = x - v / steps  # dt = 1/steps towards t = 0
    return x.clamp(-1, 1)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints: the one writer and the one reader for every model file (proxy.pt, model.pt)

def save_checkpoint(path, model, step, vocab, **extra):
    data.atomic_save({"model": model.state_dict(), "config": dict(model.config), "step": step, "vocab": list(vocab),
                      **extra}, path)


def load_proxy(path, device="cpu", dataset=None):
    """Rebuild a DiT from a checkpoint; with `dataset`, also check that image size and vocabulary match it."""
    ckpt = data.load_pt(path, "model checkpoint")
    if not {"model", "config"} <= set(ckpt) or not isinstance(ckpt["config"], dict):
        raise data.DataError(f"{path}: not a model checkpoint (needs 'model' and 'config'); pass a proxy.pt or model.pt")
    try:
        model = DiT(**ckpt["config"])
        model.load_state_dict(ckpt["model"])
    except (TypeError, RuntimeError) as e:
        raise data.DataError(f"{path}: weights do not fit the DiT config {ckpt['config']} ({str(e).splitlines()[0][:80]})") from None
    if dataset is not None:
        check_fits(model, dataset, path)
    return model.to(device).eval(), ckpt


def check_fits(model, dataset, path):
    size = dataset["images"].shape[-1]
    if model.config["image_size"] != size:
        raise data.DataError(f"{path}: model is for {model.config['image_size']}px images, the data has {size}px")
    if model.config["vocab_size"] != len(dataset["vocab"]) or dataset["tokens"].shape[1] > model.config["max_tokens"]:
        raise data.DataError(f"{path}: model was built for another vocabulary or caption length than this data")


# ----------------------------------------------------------------------------------------------------------------
# Training: a plain loop over random batches, shared by the proxy warm-up here and train_t2i.py

def train(model, images, tokens, out_path, vocab, steps, batch_size, lr, seed, device, resume=False,
          ckpt_every=500, log_path=None, warmup=100, ema_decay=0.0, desc="train", extra=None, on_log=None,
          hook_every=None, select=None, precision="auto"):
    """Train `model` on rows (images uint8 [N,3,H,W], tokens [N,L]) for `steps` steps of AdamW; checkpoint to
    `out_path` every `ckpt_every` steps; with `resume`, continue from it so the end equals an uninterrupted run.
    `on_log(step, model, ema)` is called every `hook_every` steps and at the end (sample grids, snapshots).
    The EMA's decay warms up as min(ema_decay, (1 + step) / (10 + step)), so short runs do not average in the
    random initialisation whatever `steps` is.
    `select` (online selection, train_t2i.py) has `size` (rows to draw), select(step, model, images, tokens, t, noise,
    gen) -> the batch_size positions to train on, log() (extra log columns), state_dict() and load_state_dict().
    Under torchrun (torch.distributed initialised) every rank draws the same global batch from the shared generator
    and takes its slice; DistributedDataParallel averages the gradients, so N ranks compute what one process would."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if batch_size % world:
        raise data.DataError(f"--batch-size {batch_size} must be divisible by the {world} processes")
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = lambda s: min(1.0, (s + 1) / warmup)  # linear warm-up, then constant
    gen = torch.Generator().manual_seed(seed)  # every random draw (batches, t, noise, caption drop) comes from here
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if ema_decay > 0 else None
    start, spent = 0, 0.0  # spent: wall-clock seconds of the run before this process (resume)
    if resume and os.path.exists(out_path):
        ckpt = data.load_pt(out_path, "checkpoint")
        if ckpt.get("config") != model.config:
            raise data.DataError(f"{out_path}: checkpoint is from another model size {ckpt.get('config')}; "
                                 "remove it or drop --resume")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["rng"])
        if ema is not None:
            if "ema" not in ckpt:
                raise data.DataError(f"{out_path}: checkpoint has no EMA weights to resume; remove it or drop --resume")
            ema = {k: v.to(device) for k, v in ckpt["ema"].items()}
        if (select is not None) != ("select" in ckpt):
            raise data.DataError(f"{out_path}: checkpoint was trained {'with' if 'select' in ckpt else 'without'} "
                                 "online selection; resume with the same flags or drop --resume")
        if select is not None:
            select.load_state_dict(ckpt["select"])
        start, spent = ckpt["step"], ckpt.get("seconds", 0.0)
    mixed = autocast(device, precision)
    if log_path and rank == 0 and start > 0 and os.path.exists(log_path):  # drop rows logged after the checkpoint
        with open(log_path) as f:
            rows = [r for i, r in enumerate(f) if i == 0 or int(r.split(",")[0]) <= start]
        data.atomic_save("".join(rows), log_path)
    log = open(log_path, "a" if start > 0 else "w", newline="") if log_path and rank == 0 else None
    writer = csv.writer(log) if log else None
    if writer and start == 0:
        writer.writerow(["step", "loss", "seconds"] + [f"loss_t{b / 10:.1f}" for b in range(10)] + ["samples"] +
                        (list(select.log()) if select else []))
    model.train()
    t0, losses, bins = time.time() - spent, [], [[] for _ in range(10)]
    mine = slice(rank, None, world)  # this rank's share of the global batch
    bar = tqdm(range(start, steps), desc=desc, initial=start, total=steps, dynamic_ncols=True, disable=rank > 0)
    for step in bar:
        n = select.size if select else batch_size  # online selection draws a super-batch and keeps batch_size of it
        idx = torch.randint(len(images), (n,), generator=gen)  # the global batch, identical on every rank
        t = sample_t(n, gen)
        noise = torch.randn((n, *images.shape[1:]), generator=gen)
        drop = torch.rand(n, generator=gen) < CFG_DROP  # classifier-free guidance: null caption 10%
        tok = torch.where(drop[:, None], data.null_tokens(n, tokens.shape[1]), tokens[idx])
        if select is not None:  # train on the kept rows with the very (t, noise, caption) they were scored on
            with mixed:
                keep = select(step, model, images[idx], tok, t, noise, gen)  # (batch_size,) positions in 0..n-1
            idx, t, noise, tok = idx[keep], t[keep], noise[keep], tok[keep]
        x0 = data.to_float(images[idx[mine]]).to(device)
        with mixed:
            loss_i = rf_loss(net, x0, tok[mine].to(device), t=t[mine].to(device), noise=noise[mine].to(device))
        loss = loss_i.mean()
        if not torch.isfinite(loss):
            raise data.DataError(f"non-finite loss at step {step}; lower --lr (last good checkpoint: {out_path})")
        for g in opt.param_groups:
            g["lr"] = lr * sched(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if ema is not None:
            decay = min(ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    ema[k].lerp_(v, 1 - decay) if v.dtype.is_floating_point else ema[k].copy_(v)
        losses.append(loss.item())
        for b, l in zip((t[mine] * 10).long().clamp(max=9).tolist(), loss_i.detach().tolist()):  # minRF: by t bin
            bins[b].append(l)
        if (step + 1) % 50 == 0 or step + 1 == steps:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            if writer:
                writer.writerow([step + 1, f"{np.mean(losses[-50:]):.5f}", f"{time.time() - t0:.1f}"] +
                                [f"{np.mean(b):.5f}" if b else "" for b in bins] + [(step + 1) * batch_size] +
                                (list(select.log().values()) if select else []))
                log.flush()
            bins = [[] for _ in range(10)]
        if rank == 0 and ((step + 1) % ckpt_every == 0 or step + 1 == steps):
            save_checkpoint(out_path, model, step + 1, vocab, optimizer=opt.state_dict(), rng=gen.get_state(),
                            seconds=time.time() - t0, **({"ema": ema} if ema is not None else {}),
                            **({"select": select.state_dict()} if select else {}), **(extra or {}))
        if rank == 0 and on_log and ((step + 1) % (hook_every or ckpt_every) == 0 or step + 1 == steps):
            on_log(step + 1, model, ema)
    if log:
        log.close()
    model.eval()
    return model


# ----------------------------------------------------------------------------------------------------------------
# Reports: losses by defect type on fixed draws, and a grid of samples with their prompts

@torch.no_grad()
def loss_by_rows(model, images, tokens, draws, device, batch_size=256, desc="losses"):
    """sample_loss over many rows in batches: [N] on the CPU."""
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc=desc, leave=False, disable=len(images) <= batch_size):
        out.append(sample_loss(model, data.to_float(images[i:i + batch_size]).to(device),
                               tokens[i:i + batch_size].to(device), draws).cpu())
    return torch.cat(out)


def sample_grid(model, dataset, path, n=16, cfg=3.0, seed=0, device="cpu"):
    """Samples for the first n prompts of `dataset`, each above its real image, with the prompt written under it."""
    imgs = sample_images(model, dataset["tokens"][:n].to(device), cfg=cfg, seed=seed).cpu()
    fake = ((imgs + 1) * 127.5).round().clamp(0, 255).byte()
    data.captioned_grid([[fake[i], dataset["images"][i]] for i in range(n)], dataset["captions"][:n], path,
                        footer=f"top: samples (cfg {cfg}), bottom: real")


# ----------------------------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description="Warm up the DiT proxy (Alchemist Eq. 4) and report its losses by defect type.")
    p.add_argument("--data", required=True, help="data folder made by data.py")
    p.add_argument("--out", required=True, help="run folder; writes proxy.pt, proxy_log.csv, proxy_samples.png")
    p.add_argument("--preset", choices=list(PRESETS), default="cpu", help="model and schedule size (cpu | gpu)")
    p.add_argument("--steps", type=int, help="training steps (default: preset)")
    p.add_argument("--batch-size", type=int, help="batch size (default: preset)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default: preset)")
    p.add_argument("--split", choices=["train", "val"], default="train",
                   help="warm up on the training set (the reference, Eq. 4) or the clean validation set")
    p.add_argument("--clean-only", action="store_true", help="train only on rows with defect 0 (ground-truth oracle)")
    p.add_argument("--subset", help="train only on these rows (an int64 .npy from prune.py)")
    p.add_argument("--draws", type=int, default=8, help="K fixed (t, noise) draws for the per-type loss report")
    p.add_argument("--report", choices=["full", "val"], default="full",
                   help="full: validation loss and the training set's loss by defect type; val: validation loss only")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, batches and noise")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.add_argument("--resume", action="store_true", help="continue from RUN/proxy.pt if it exists")
    p.add_argument("--ckpt-every", type=int, default=500, help="checkpoint every N steps")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bf16 autocast on CUDA and on CPUs with bf16 hardware (AVX512-BF16, AMX), else fp32")
    a = p.parse_args(argv)
    cfg = dict(PRESETS[a.preset])
    pick = lambda flag, name: cfg[name] if flag is None else flag
    steps, batch_size, lr = pick(a.steps, "steps"), pick(a.batch_size, "batch_size"), pick(a.lr, "lr")
    if min(steps, batch_size, a.draws) < 1 or lr <= 0:
        data.fail("--steps, --batch-size, --draws and --lr must be positive")
    device = data.pick_device(a.device)
    try:
        d = data.load_dataset(a.data, a.split)
        rows = torch.arange(len(d["images"]))
        if a.clean_only:
            rows = rows[d["defect"] == 0]
        if a.subset:
            rows = torch.from_numpy(load_subset(a.subset, len(d["images"])))
        if len(rows) == 0:
            raise data.DataError("no rows left to train on (empty subset or no clean rows)")
    except data.DataError as e:
        data.fail(str(e))
    size = d["images"].shape[-1]
    torch.manual_seed(a.seed)
    model = DiT(image_size=size, patch=patch_for(size, cfg), width=cfg["width"], depth=cfg["depth"], heads=cfg["heads"],
                text_depth=cfg["text_depth"], vocab_size=len(d["vocab"]), max_tokens=d["tokens"].shape[1]).to(device)
    out = os.path.join(a.out, "proxy.pt")
    os.makedirs(a.out, exist_ok=True)
    print(f"proxy: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {len(rows)} rows of "
          f"{a.split}, {steps} steps of {batch_size} on {device}")
    try:
        train(model, d["images"][rows], d["tokens"][rows], out, d["vocab"], steps, batch_size, lr, a.seed, device,
              resume=a.resume, ckpt_every=a.ckpt_every, log_path=os.path.join(a.out, "proxy_log.csv"), desc="proxy",
              precision=a.precision,
              extra={"args": {k: v for k, v in vars(a).items() if v is not None}})
    except data.DataError as e:
        data.fail(str(e))
    # Report: validation loss and the training set's loss by defect type, on the same K fixed draws.
    draws = fixed_draws(a.draws, (3, size, size), seed=1234)
    val = data.load_dataset(a.data, "val")
    report = {"val_loss": loss_by_rows(model, val["images"], val["tokens"], draws, device).mean().item(),
              "steps": steps, "draws": a.draws}
    train_all = d if a.split == "train" else data.load_dataset(a.data, "train")
    per_row = loss_by_rows(model, train_all["images"], train_all["tokens"], draws, device) if a.report == "full" else None
    for k, name in enumerate(train_all["defect_names"]):
        if per_row is not None and (train_all["defect"] == k).any():
            report[f"loss_{name}"] = per_row[train_all["defect"] == k].mean().item()
    if "loss_misaligned" in report:
        report["misaligned_over_clean"] = report["loss_misaligned"] / report["loss_clean"]
    data.atomic_save(report, os.path.join(a.out, "proxy_report.json"))
    sample_grid(model, val, os.path.join(a.out, "proxy_samples.png"), device=device)
    print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items()))
    print(f"wrote {out}, proxy_log.csv, proxy_report.json, proxy_samples.png in {a.out}")


def load_subset(path, n):
    """A subset file: sorted unique int64 row indices into a dataset of n rows (DESIGN.md)."""
    try:
        rows = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        raise data.DataError(f"{path}: not a readable .npy subset file") from None
    if rows.size == 0:
        raise data.DataError(f"{path}: the subset is empty")
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        raise data.DataError(f"{path}: a subset must be a 1-D integer array, found {rows.dtype} {rows.shape}")
    if rows.min() < 0 or rows.max() >= n:
        raise data.DataError(f"{path}: row indices outside 0..{n - 1}; was it made for another dataset?")
    if len(np.unique(rows)) != len(rows):
        raise data.DataError(f"{path}: the subset has duplicate rows")
    return rows.astype(np.int64)


if __name__ == "__main__":
    main()
