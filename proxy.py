"""proxy.py -- the small text-conditioned DiT, its rectified-flow loss, sampler and training loop; warms up a proxy.

Reads:   D/train.pt, D/val.pt. Writes: RUN/proxy.pt (resumable), proxy_log.csv (loss, and in ten bins of t),
         proxy_samples.png (samples over their prompts), proxy_report.json (losses by defect type)
Run:     python proxy.py --data data/shapes --out runs/x [--preset tiny|quick|paper --steps 3000 --resume]
The proxy of Alchemist (arXiv 2512.16905, Sec. 3, Eq. 4): a small model of the target's family whose per-sample
losses the rater learns from. Every other stage imports the model, the loss, the sampler and the loop from here.

The model (DiT, Peebles & Xie 2023, with cross-attention as in PixArt-alpha; docs/METHOD.md, section 5):
  image [B,3,H,W] -> patches of p x p -> tokens [B,T,C] + fixed 2-D sin-cos positions
  caption tokens [B,L] -> a 2-layer transformer text encoder -> text features [B,L,C] and their masked mean [B,C]
  each block:  x += gate1 * SelfAttn(modulate(LN(x)))         adaLN-Zero, conditioned on c = emb(t) + pooled text
               x += CrossAttn(LN(x), text features)         every image token looks up the caption's words
               x += gate2 * MLP(modulate(LN(x)))
  final layer: modulate(LN(x)) -> Linear (zero-initialised) -> unpatchify -> velocity [B,3,H,W]
"""
import argparse
import csv
import io
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

import data

# Presets, one vocabulary in every script: tiny (tests, one-minute trials), quick (the CPU grid), paper (the GPU grid)
PRESETS = {
    "tiny": dict(width=16, depth=1, heads=1, text_depth=1, patch=2, steps=40, batch_size=16, lr=5e-3),
    # 16x16, one head (on a CPU four heads of 16 channels cost 1.3x the time for no gain: docs/RESULTS.md)
    "quick": dict(width=64, depth=2, heads=1, text_depth=1, patch=2, steps=1000, batch_size=64, lr=5e-3),
    "paper": dict(width=128, depth=4, heads=4, text_depth=2, steps=3000, batch_size=64, lr=1e-3),
}
CFG_DROP = 0.1  # fraction of captions replaced by the null caption in training (classifier-free guidance)

# ----------------------------------------------------------------------------------------------------------------
# The model

def timestep_embedding(t, dim):
    """Sinusoidal embedding of t in [0, 1]: [B] -> [B, dim] (frequencies as in DDPM/DiT, t scaled by 1000)."""
    freqs = torch.exp(-math.log(10000) * torch.arange(dim // 2, device=t.device, dtype=t.dtype) / (dim // 2))
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


def attention(q, k, v, key_mask=None):
    """softmax(q k^T / sqrt(d)) v, written out: PyTorch's fused CPU kernel has no double backward, which metagrad.py's
    exact hypergradient needs. q [B,h,T,d], k,v [B,h,S,d], key_mask [B,S] (True = attend) -> [B,h,T,d]."""
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
        split = lambda y: y.reshape(B, y.shape[1], self.heads, C // self.heads).transpose(1, 2)  # (B, h, T, d)
        k, v = self.kv(x if context is None else context).chunk(2, dim=-1)
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
        self.layers = nn.ModuleList(nn.ModuleList([nn.LayerNorm(dim), Attention(dim, heads), nn.LayerNorm(dim),
                                                   mlp(dim)]) for _ in range(depth))
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
        self.norm1, self.attn = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6), Attention(dim, heads)
        self.norm_x, self.cross = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6), mlp(dim)
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

    def __init__(self, image_size=32, patch=None, width=128, depth=4, heads=4, text_depth=2, vocab_size=24,
                 max_tokens=20):
        super().__init__()
        patch = patch or max(2, image_size // 8)  # default: 8 x 8 patches (a preset may fix its own)
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


def rf_loss(model, x0, tokens, t=None, noise=None, generator=None):
    """Per-sample rectified-flow loss mean_CHW (v(x_t, t, tokens) - (eps - x0))^2 [B], x_t = (1 - t) x0 + t eps. Pass
    `t` [B] and `noise` [B,3,H,W] to compare models on the same draws; left None, t = sample_t(B) and then noise =
    randn(x0.shape) are drawn from `generator` on the CPU (a seed fixes them on any device), then moved to x0's."""
    B = x0.shape[0]
    t = sample_t(B, generator, x0.device) if t is None else t
    noise = torch.randn(x0.shape, generator=generator).to(x0.device) if noise is None else noise
    tb = t.view(B, 1, 1, 1)
    v = model((1 - tb) * x0 + tb * noise, t, tokens)
    return (v.to(x0.dtype) - (noise - x0)).pow(2).mean(dim=(1, 2, 3))  # (B,), in float32 even under bf16 autocast


def fixed_draws(k, shape, seed=0):
    """K shared (t, noise) draws: t_j = (j + 1/2) / K (stratified U(0, 1)), noise from `seed`: t [k], noise [k, ...]."""
    t = (torch.arange(k, dtype=torch.float32) + 0.5) / k
    return t, torch.randn((k, *shape), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def sample_loss(model, x0, tokens, draws):
    """Mean loss of each sample over the K fixed draws (the same draws for every sample and every model): [B]."""
    t, noise = draws
    return torch.stack([rf_loss(model, x0, tokens, t[j].expand(len(x0)).to(x0.device),
                                noise[j].expand_as(x0).to(x0.device)) for j in range(len(t))]).mean(0)


@torch.no_grad()
def sample_images(model, tokens, steps=32, cfg=3.0, seed=0, guide=None, guidance=1.0):
    """Euler from x = randn((B,3,S,S), generator=torch.Generator().manual_seed(seed)) at t=1, S = config['image_size']:
    x <- x - v / steps at t = 1, 1 - 1/steps, ..., 1/steps, then clamped to [-1, 1]. CFG inside each model first,
    v = v_null + cfg (v_text - v_null) (null caption: data.null_tokens; cfg=1: v_text alone), then autoguidance by a
    smaller/earlier `guide`: D_w = w D_main + (1 - w) D_guide (Karras 2024) as velocities, w = `guidance` (1: none)."""
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
        if guide is not None and guidance != 1.0:  # D = x_t - t v is affine in v: mixing velocities mixes denoisers
            v = velocity(guide, x, t).float().lerp(v.float(), guidance)  # guide(x).lerp(main(x), w)
        x = x - v / steps  # dt = 1/steps towards t = 0
    return x.clamp(-1, 1)


# ----------------------------------------------------------------------------------------------------------------
# Training (Eq. 4, with AdamW): a plain loop over random batches, for proxy.py, metagrad.py and train_t2i.py

def train(model, images, tokens, steps, batch_size, lr, seed, device, run, warmup=100, ema_decay=0.0, select=None,
          sampler=None, precision="auto"):
    """`steps` steps of AdamW on the mean rf_loss of rows (images uint8 [N,3,H,W], tokens [N,L]); `run` (a Run)
    resumes, checkpoints, logs. `select(step, model, images, tokens, t, noise, gen)` (online selection) -> positions
    to keep of the select.size rows drawn; `sampler(step, n, gen)` -> int64 [n] rows, not uniform (--curriculum)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)  # every random draw (batches, t, noise, caption drop) comes from here
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()} if ema_decay > 0 else None
    same = dict(data=data.fingerprint(images, tokens, run.vocab), seed=seed, batch_size=batch_size, ema_decay=ema_decay,
                warmup=warmup, select=select.settings if select else None, bf16=data.uses_bf16(device, precision))
    start = run.begin(steps, same, model, opt, gen, ema, select)  # 0, or where the resumed checkpoint stopped
    mixed = torch.autocast(device.type, dtype=torch.bfloat16, enabled=same["bf16"])  # bf16 products, float32 weights
    model.train()
    for step in range(start, steps):
        n = select.size if select else batch_size  # online selection draws a super-batch and keeps batch_size of it
        idx = torch.randint(len(images), (n,), generator=gen) if sampler is None else sampler(step, n, gen)
        t = sample_t(n, gen)  # t ~ U(0, 1)
        noise = torch.randn((n, *images.shape[1:]), generator=gen)  # eps ~ N(0, I)
        drop = torch.rand(n, generator=gen) < CFG_DROP  # classifier-free guidance: null caption 10%
        tok = torch.where(drop[:, None], data.null_tokens(n, tokens.shape[1]), tokens[idx])
        if select is not None:  # train on the kept rows with the very (t, noise, caption) they were scored on
            with mixed:
                keep = select(step, model, images[idx], tok, t, noise, gen)  # (batch_size,) positions in 0..n-1
            idx, t, noise, tok = idx[keep], t[keep], noise[keep], tok[keep]
        x0 = data.to_float(images[idx]).to(device)
        with mixed:  # L_i = ||v(x_t, t, c) - (eps - x0)||^2, x_t = (1 - t) x0 + t eps
            loss_i = rf_loss(model, x0, tok.to(device), t=t.to(device), noise=noise.to(device))
        loss = loss_i.mean()
        if not torch.isfinite(loss):
            raise run.diverged(step + 1)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / warmup)  # linear warm-up, then constant
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()  # Eq. 4 (AdamW for plain SGD): theta <- theta - b grad L(theta; batch)
        if ema is not None:  # theta_ema <- decay theta_ema + (1 - decay) theta; a short run forgets its random start
            decay = min(ema_decay, (1 + step) / (10 + step))
            for k, v in model.state_dict().items():  # detached tensors: no graph
                ema[k].lerp_(v, 1 - decay) if v.dtype.is_floating_point else ema[k].copy_(v)
        run.record(step + 1, loss, loss_i, t)  # the log; the hooks and the checkpoint when due
    model.eval()
    return model


# ----------------------------------------------------------------------------------------------------------------
# Plumbing: the run's files (Run), checkpoints, bf16, reports, the command line

class Run:
    """All of a train() run but the loop: the checkpoint at `path` every `ckpt_every` steps and at the end (`resume`
    continues it to the uninterrupted run's end), the log at `log_path` (a row every 50 steps: mean loss, loss in ten
    bins of t, samples seen, the selection's log()), the progress bar, and on_log(step, model, ema) every `hook_every`
    steps and at the end (train_t2i.py: model.pt, snapshots, grids)."""

    def __init__(self, path, vocab, resume=False, ckpt_every=500, log_path=None, desc="train", extra=None,
                 on_log=None, hook_every=None):
        self.path, self.vocab, self.resume, self.ckpt_every, self.log_path = path, vocab, resume, ckpt_every, log_path
        self.desc, self.extra, self.on_log, self.hook_every = desc, extra or {}, on_log, hook_every or ckpt_every

    def begin(self, steps, same, model, optimizer, rng, ema, select):
        """Hold what a checkpoint saves and, with --resume, load the checkpoint if its model config and `same` (the
        rows, their words, the run's settings) are this run's. Writes the log so far; returns the first step."""
        self.steps, self.same, self.model, self.optimizer, self.rng = steps, same, model, optimizer, rng
        self.ema, self.select, self.losses, self.bins = ema, select, [], [[] for _ in range(10)]
        self.rows = [["step", "loss", "seconds"] + [f"loss_t{b / 10:.1f}" for b in range(10)] + ["samples"] +
                     (list(select.log()) if select else [])]
        start, spent = 0, 0.0  # spent: the run's seconds before this process
        if self.resume and os.path.exists(self.path):  # the same `same` means the same EMA and selection to load
            ckpt = data.load_pt(self.path, "checkpoint")
            if ckpt.get("config") != model.config:
                raise data.DataError(f"{self.path}: checkpoint is from another model size; remove it or drop --resume")
            old = ckpt["same"] if isinstance(ckpt.get("same"), dict) else {}
            changed = [k if k != "data" else "data (the rows trained on)" for k in same if old.get(k) != same[k]]
            if changed:
                raise data.DataError(f"{self.path}: checkpoint was made with other {', '.join(changed)}; pass the same "
                                     "data and flags, or remove it and drop --resume")
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            rng.set_state(ckpt["rng"])
            for k, v in (ckpt["ema"].items() if ema is not None else ()):
                self.ema[k].copy_(v)
            if select is not None:
                select.load_state_dict(ckpt["select"])
            self.rows, self.losses, self.bins = ckpt["log"]["rows"], ckpt["log"]["losses"], ckpt["log"]["bins"]
            start, spent = ckpt["step"], ckpt.get("seconds", 0.0)
        self.t0, self.last_ckpt = time.time() - spent, start or None
        if self.log_path:  # the header and the rows up to the checkpoint; one row at a time after
            buf = io.StringIO()
            csv.writer(buf).writerows(self.rows)
            data.atomic_save(buf.getvalue(), self.log_path)
        self.bar = tqdm(desc=self.desc, initial=start, total=steps, dynamic_ncols=True)
        return start

    def record(self, step, loss, loss_i, t):
        """After `step` steps: a log row every 50 steps, then on_log and the checkpoint (a kill between them redoes
        on_log), each when due and at the end."""
        self.bar.update()
        self.losses.append(loss.item())
        for b, l in zip((t * 10).long().clamp(max=9).tolist(), loss_i.detach().tolist()):  # minRF: by t bin
            self.bins[b].append(l)
        last = step == self.steps
        if step % 50 == 0 or last:
            self.rows.append([step, f"{np.mean(self.losses[-50:]):.5f}", f"{time.time() - self.t0:.1f}"] +
                             [f"{np.mean(b):.5f}" if b else "" for b in self.bins] + [step * self.same["batch_size"]] +
                             (list(self.select.log().values()) if self.select else []))
            self.bar.set_postfix(loss=self.rows[-1][1])
            if self.log_path:
                with open(self.log_path, "a", newline="") as f:
                    csv.writer(f).writerow(self.rows[-1])
            self.bins = [[] for _ in range(10)]
        if self.on_log and (step % self.hook_every == 0 or last):
            self.on_log(step, self.model, self.ema)
        if step % self.ckpt_every == 0 or last:
            save_checkpoint(self.path, self.model, step, self.vocab, optimizer=self.optimizer.state_dict(),
                            rng=self.rng.get_state(), seconds=time.time() - self.t0, same=self.same, **self.extra,
                            log={"rows": self.rows, "losses": self.losses[-50:], "bins": self.bins},
                            **({"ema": self.ema} if self.ema is not None else {}),
                            **({"select": self.select.state_dict()} if self.select else {}))
            self.last_ckpt = step
        if last:
            self.bar.close()

    def diverged(self, step):
        self.bar.close()  # the error then starts a line of its own
        kept = f"last checkpoint: {self.path}, step {self.last_ckpt}" if self.last_ckpt else "no checkpoint written"
        return data.DataError(f"non-finite loss at step {step}; lower --lr ({kept})")


def save_checkpoint(path, model, step, vocab, **extra):
    """The one writer of model files (proxy.pt, model.pt, train_state.pt, snapshots); load_proxy is the one reader."""
    data.atomic_save(dict(model=model.state_dict(), config=model.config, step=step, vocab=list(vocab), **extra), path)


def load_proxy(path, device="cpu", dataset=None):
    """Rebuild a DiT from a checkpoint; with `dataset`, also check that image size and vocabulary match it."""
    ckpt = data.load_pt(path, "model checkpoint")
    try:
        model = DiT(**ckpt["config"])
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise data.DataError(f"{path}: not a model checkpoint (proxy.pt, model.pt) or its weights do not fit its "
                             f"config ({str(e).splitlines()[0][:80]})") from None
    c, d = model.config, dataset
    if d is not None and c["image_size"] != d["images"].shape[-1]:
        raise data.DataError(f"{path}: model is for {c['image_size']}px images, the data has {d['images'].shape[-1]}px")
    if d is not None and (c["vocab_size"] != len(d["vocab"]) or d["tokens"].shape[1] > c["max_tokens"]
                          or list(ckpt.get("vocab", d["vocab"])) != list(d["vocab"])):
        raise data.DataError(f"{path}: model was made for another vocabulary or caption length than this data's")
    return model.to(device).eval(), ckpt


def loss_by_rows(model, images, tokens, draws, device, batch_size=256, desc="losses"):
    """sample_loss over many rows in batches: [N] on the CPU."""
    starts = tqdm(range(0, len(images), batch_size), desc=desc, leave=False, disable=len(images) <= batch_size)
    return torch.cat([sample_loss(model, data.to_float(images[i:i + batch_size]).to(device),
                                  tokens[i:i + batch_size].to(device), draws).cpu() for i in starts])


def sample_grid(model, dataset, path, n=16, cfg=3.0, seed=0, device="cpu"):
    """Samples for the first n prompts of `dataset` above their real images, with the prompts under them."""
    fake = ((sample_images(model, dataset["tokens"][:n].to(device), cfg=cfg, seed=seed).cpu() + 1) * 127.5)
    data.captioned_grid([[x, real] for x, real in zip(fake.round().clamp(0, 255).byte(), dataset["images"])],
                        dataset["captions"][:n], path, footer=f"top: samples (cfg {cfg}), bottom: real")


def main(argv=None):
    p = argparse.ArgumentParser(description="Warm up the DiT proxy (Alchemist Eq. 4); its losses by defect type.")
    p.add_argument("--data", required=True, help="data folder made by data.py")
    p.add_argument("--out", required=True, help="run folder; writes proxy.pt, proxy_log.csv, proxy_samples.png")
    p.add_argument("--preset", choices=list(PRESETS), default="paper", help="tiny (tests), quick (CPU), paper (GPU)")
    p.add_argument("--steps", type=int, help="training steps (default: preset)")
    p.add_argument("--batch-size", type=int, help="batch size (default: preset)")
    p.add_argument("--lr", type=data.finite, help="AdamW learning rate (default: preset)")
    p.add_argument("--draws", type=int, default=8, help="K fixed (t, noise) draws for the per-type loss report")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, batches and noise")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.add_argument("--resume", action="store_true", help="continue from RUN/proxy.pt if it exists")
    p.add_argument("--ckpt-every", type=int, default=500, help="checkpoint every N steps")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="auto: on CUDA and bf16 CPUs")
    p.error = data.arg_error
    a = p.parse_args(argv)
    cfg = PRESETS[a.preset]
    steps, batch_size, lr = (cfg[k] if getattr(a, k) is None else getattr(a, k) for k in ("steps", "batch_size", "lr"))
    if min(steps, batch_size, a.draws, a.ckpt_every) < 1 or lr <= 0:
        data.fail("--steps, --batch-size, --draws, --ckpt-every and --lr must be positive")
    device = data.pick_device(a.device)
    try:  # every input and the output folder before the first step; then a --resume mismatch, a non-finite loss
        d, val = data.load_splits(a.data, "train", "val")
        data.check_out(a.out)
        torch.manual_seed(a.seed)
        model = DiT(image_size=d["images"].shape[-1], patch=cfg.get("patch"), width=cfg["width"], depth=cfg["depth"],
                    heads=cfg["heads"], text_depth=cfg["text_depth"], vocab_size=len(d["vocab"]),
                    max_tokens=d["tokens"].shape[1]).to(device)
        print(f"proxy: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {len(d['images'])} rows, "
              f"{steps} steps of {batch_size} on {device}")
        args = {k: v for k, v in vars(a).items() if v is not None}
        train(model, d["images"], d["tokens"], steps, batch_size, lr, a.seed, device, precision=a.precision,
              run=Run(os.path.join(a.out, "proxy.pt"), d["vocab"], resume=a.resume, ckpt_every=a.ckpt_every,
                      log_path=os.path.join(a.out, "proxy_log.csv"), desc="proxy", extra={"args": args}))
    except data.DataError as e:
        data.fail(str(e))
    draws = fixed_draws(a.draws, d["images"].shape[1:], seed=1234)  # the report's K draws, the same for every row
    report = {"val_loss": loss_by_rows(model, val["images"], val["tokens"], draws, device).mean().item(),
              "steps": steps, "draws": a.draws}
    per_row = loss_by_rows(model, d["images"], d["tokens"], draws, device)
    report.update({f"loss_{name}": per_row[d["defect"] == k].mean().item()
                   for k, name in enumerate(d["defect_names"]) if (d["defect"] == k).any()})
    if "loss_misaligned" in report:
        report["misaligned_over_clean"] = report["loss_misaligned"] / report["loss_clean"]
    sample_grid(model, val, os.path.join(a.out, "proxy_samples.png"), device=device)
    data.atomic_save(report, os.path.join(a.out, "proxy_report.json"))  # last: ablate.py's sign that the proxy is done
    print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items()))
    print(f"wrote proxy.pt, proxy_log.csv, proxy_report.json, proxy_samples.png in {a.out}")


if __name__ == "__main__":
    main()
