"""Tiny models and batches shared by the graded tests and course/make_snapshots.py: random 8x8 pictures and random
captions (no data files), DiTs of a few thousand weights, float64 wherever a test differentiates. No exercise here."""
import copy

import torch

import proxy  # metagrad is imported where used: exercise 1's tests need proxy.py alone
from api import exercise_api

SIZE, LENGTH, VOCAB, FEATS = 8, 6, 12, 12  # image side, caption tokens, vocabulary, rater features


def captions(n, gen):
    """Random token rows [n, LENGTH]: 1-5 words (ids 3..VOCAB-1, after the three specials), then padding 0."""
    words = torch.randint(3, VOCAB, (n, LENGTH), generator=gen)
    length = torch.randint(1, LENGTH, (n, 1), generator=gen)
    return torch.where(torch.arange(LENGTH)[None] < length, words, torch.zeros_like(words))


def pictures(n, gen, dtype=torch.float64):
    """Random images [n, 3, SIZE, SIZE] in [-1, 1]."""
    return (2 * torch.rand((n, 3, SIZE, SIZE), generator=gen, dtype=dtype) - 1)


def dit(seed=0, nudge=0.05, dtype=torch.float64, **config):
    """A DiT at 8x8 (16 tokens, width 16, one block) with every weight nudged: adaLN-Zero starts as the identity
    with a zero output, and a model that predicts 0 everywhere would hide most mistakes."""
    torch.manual_seed(seed)
    model = proxy.DiT(**{**dict(image_size=SIZE, patch=2, width=16, depth=1, heads=2, text_depth=1,
                                vocab_size=VOCAB, max_tokens=LENGTH), **config})
    for p in model.parameters():
        p.data.add_(nudge * torch.randn_like(p))
    return model.to(dtype)


def meta_batch(B=4, seed=0, dtype=torch.float64):
    """A training and a validation batch with their (t, noise) draws and rater features: the keys of
    metagrad.draw_batch."""
    g = torch.Generator().manual_seed(seed)
    return dict(feats=torch.randn(B, FEATS, generator=g, dtype=dtype), x=pictures(B, g, dtype), tok=captions(B, g),
                t=torch.rand(B, generator=g, dtype=dtype),
                noise=torch.randn(B, 3, SIZE, SIZE, generator=g, dtype=dtype),
                x_val=pictures(B, g, dtype), tok_val=captions(B, g), t_val=torch.rand(B, generator=g, dtype=dtype),
                noise_val=torch.randn(B, 3, SIZE, SIZE, generator=g, dtype=dtype))


def new_rater(seed=2, **kw):
    Rater, *_ = exercise_api(3)
    torch.manual_seed(seed)
    return Rater(FEATS, **{**dict(width=8, hidden=8), **kw}).double()


def meta_state(r=None, lr=1e-3, seed=0):
    """What metagrad.main hands meta_step, in float64: a primary and a reference that differ (seeds 0 and 1)."""
    import metagrad
    primary, reference = dit(seed), dit(seed + 1)
    r = new_rater() if r is None else r
    return dict(primary=primary, reference=reference, rater=r, baseline=None, scale=None,
                opt_primary=metagrad.adamw(primary, lr), opt_ref=metagrad.adamw(reference, lr),
                opt_rater=torch.optim.AdamW(r.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05))


def plain_step(model, loss_fn, lr=1e-3, clip=1.0):
    """One AdamW step (betas 0.9, 0.95, no weight decay, gradient clip) on a copy of `model`: the copy after it."""
    model = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    loss_fn(model).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return model


def same_weights(a, b, atol=1e-12):
    return all(torch.allclose(p, q, rtol=0, atol=atol) for p, q in zip(a.parameters(), b.parameters()))


def sketch(model, k=8, seed=99):
    """k fixed random projections of all of a model's weights, float64: a small fingerprint for a snapshot."""
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    projections = torch.randn(k, len(flat), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (projections @ flat).tolist()


def meta_steps_snapshot(steps=2):
    """Two meta steps (alchemist, gamma 0.5) from meta_state on two batches: the rater's weights, sketches of the
    primary and the reference, the running scale and baseline, and what meta_step returned."""
    *_, meta_step = exercise_api(3)
    s, out = meta_state(), []
    for k in range(steps):
        out.append(meta_step(s, meta_batch(seed=10 + k)))
    return dict(rater={k: v.flatten().tolist() for k, v in s["rater"].state_dict().items()},
                primary=sketch(s["primary"]), reference=sketch(s["reference"]), scale=s["scale"],
                baseline=s["baseline"], returned=out)
