"""train_t2i.py -- train the target text-to-image DiT on a selected subset (offline), or select its batches online.

Reads:   D/train.pt and D/val.pt (via data.load_dataset), SUBSET.npy (optional, from prune.py), RUN/train_state.pt
         (with --resume), REF.pt (--online: the frozen reference model, by default RUN/guide.pt)
Writes:  RUN/model.pt           the EMA weights as "model" (+ config, step, vocab, args): what a reader samples and
                                evaluates; proxy.load_proxy(RUN/model.pt) and evaluate.py --model RUN/model.pt use it
         RUN/train_state.pt     everything --resume needs: raw weights, optimizer, EMA, RNG state, step, args
         RUN/log.csv            loss by step, overall and in ten bins of t; kept samples; with --online also the rows
                                scored, whether selection was on, the scoring seconds and both models' losses
         RUN/guide.pt           with --guide-at F: the EMA weights at step F * --steps, an autoguidance guide for
                                evaluate.py --guide and a reference for --online (loads with proxy.load_proxy)
         RUN/samples.png        EMA samples for the first 16 validation prompts above their real images, with prompts
         RUN/samples_step{N}.png every --grid-every steps; RUN/snapshots/step{N}.pt (EMA) every --snapshot-every steps
Run:     python train_t2i.py --data data/shapes --subset runs/x/shift50.npy --out runs/x/shift50 [--steps 3000]

Implements the last step of Alchemist (arXiv 2512.16905; its experiments train the target T2I model, STAR-0.3B, on
the pruned subset and compare with the full set and with random subsets). Here the target is the proxy's DiT
(proxy.py), made larger, trained with the same loss and the same loop (proxy.train): AdamW, linear warm-up, bf16
autocast on CUDA, an EMA of the weights for sampling, atomic checkpoints and exact resume.

Runs are compared at an equal number of steps (the paper's setting, equal compute): a 50% subset is seen twice as
often as the full set within the same --steps. The EMA snapshots are what evaluate.py / ablate.py turn into an
FID-versus-step curve; this file never imports them (the pipeline's data walks one way).

Online selection (--online; docs/METHOD.md section 4: JEST, Evans et al. 2024; RHO-LOSS, Mindermann et al. 2022;
AJEST, Pais et al. 2025): each step draws a super-batch of --super-batch-factor x --batch-size rows with their t,
noise and caption drop, scores every row without gradients, keeps --batch-size rows and trains on them with the very
draws they were scored on. Learnability = loss(learner) - loss(reference) on the SAME (t, noise); the learner is the
model being trained, the reference a frozen smaller and/or earlier model (the autoguidance guide). Such runs are
compared at equal kept samples (log.csv `samples`) and at equal wall-clock time (`seconds`, scoring included). The
three pieces (learnability, JEST's chunked sampling, the AJEST switch) are written here only; toy2d.py uses them too.
"""
import argparse
import copy
import math
import os
import sys
import time

import numpy as np
import torch

import data
import proxy

# ----------------------------------------------------------------------------------------------------------------
# Online batch selection (docs/METHOD.md section 4): learnability, JEST's chunked sampling, the AJEST switch (also
# toy2d.py's), and OnlineSelection, the hook through which proxy.train trains on the rows it keeps

ONLINE = ["none", "jest", "early_ajest", "late_ajest", "hard_learner", "easy_reference"]  # all but two need a reference


@torch.no_grad()
def learnability(loss, learner, reference, mode="jest", both=False):
    """Per-row scores of a super-batch [n]. loss(model) -> the model's per-row losses [n] on draws the caller fixed:
    both models see the SAME t and noise, so two equal models score exactly 0 (the paper's public code draws them
    apart for images, which buries the score in noise).
        jest, early_ajest, late_ajest:  L_i = loss_i(learner) - loss_i(reference)  (RHO-LOSS; high = not learned
                                        yet, yet learnable)
        hard_learner:                   loss_i(learner)       (hard examples; no reference needed)
        easy_reference:                 -loss_i(reference)    (examples a good model finds easy)
    Returns (score, learner loss, reference loss); a loss the mode does not use is None, never computed, unless
    `both` (toy2d.py records for every mode when the learner first beats the reference)."""
    learner_loss = loss(learner) if both or mode != "easy_reference" else None
    reference_loss = loss(reference) if both or mode != "hard_learner" else None
    if mode == "hard_learner":
        return learner_loss, learner_loss, reference_loss
    if mode == "easy_reference":
        return -reference_loss, learner_loss, reference_loss
    return learner_loss - reference_loss, learner_loss, reference_loss


def jest_select(score, keep, chunks=16, temperature=0.1, generator=None):
    """Positions of `keep` of the n rows of a super-batch, sampled chunk by chunk without replacement from
    softmax(score / temperature) over the rows not yet chosen (JEST). Each chunk is a Gumbel-top-k (Kool et al.
    2019): the top k of score / temperature + Gumbel noise is an exact sample of k rows without replacement, and a
    tiny temperature turns it into the deterministic top-`keep` (temperature 0: RHO-LOSS's top-k). For a per-example
    loss the chunks change nothing in distribution (the whole is one Plackett-Luce draw of `keep`); JEST needs them
    where a row's score depends on the rows chosen. score float [n] on the CPU -> int64 [keep]."""
    n = len(score)
    z = score.double() / temperature if temperature > 0 else score.double()
    chosen, picks = torch.zeros(n, dtype=torch.bool), []
    for size in [len(c) for c in torch.arange(keep).tensor_split(min(chunks, keep))]:
        u = torch.rand(n, generator=generator, dtype=torch.float64).clamp(min=1e-300)
        gumbel = -torch.log(-torch.log(u)) if temperature > 0 else torch.zeros(n, dtype=torch.float64)
        top = (z + gumbel).masked_fill(chosen, float("-inf")).topk(size).indices  # (size,) rows not chosen before
        chosen[top] = True
        picks.append(top)
    return torch.cat(picks)


class AjestSwitch:
    """Whether selection is on. none: never; jest, hard_learner, easy_reference: always. early_ajest: from step 0
    until the first super-batch on which the learner's mean loss falls below the reference's, then off for good;
    late_ajest: off until that super-batch, then on for good. The super-batch that crosses is already on the new side."""

    def __init__(self, mode):
        self.mode, self.crossed_at = mode, None  # crossed_at: the step at which the learner first beat the reference

    @property
    def watching(self):
        """AJEST (early or late) before the crossing: both losses are needed on every super-batch."""
        return self.mode in ("early_ajest", "late_ajest") and self.crossed_at is None

    @property
    def on(self):
        """Whether this step selects, by mode and crossed_at, as in the class's docstring."""
        if self.mode == "early_ajest":
            return self.crossed_at is None
        return self.crossed_at is not None if self.mode == "late_ajest" else self.mode != "none"

    @property
    def scoring(self):
        """Whether the super-batch is scored: while selecting, and by AJEST until its switch (early: never after)."""
        return self.on or self.watching

    def update(self, step, learner_mean, reference_mean):
        """While watching, a super-batch with learner_mean < reference_mean sets crossed_at = step; returns self.on."""
        if self.watching and learner_mean < reference_mean:
            self.crossed_at = step
        return self.on


class OnlineSelection:
    """proxy.train's `select` hook: score the drawn super-batch, keep batch_size rows; accounts rows and seconds."""

    def __init__(self, mode, reference, batch_size, factor=5.0, chunks=16, temperature=0.1):
        self.mode, self.batch_size = mode, batch_size
        self.reference = reference.eval().requires_grad_(False) if reference is not None else None  # hard_learner: none
        self.super_size = max(batch_size, round(batch_size * factor))
        self.chunks, self.temperature, self.switch = chunks, temperature, AjestSwitch(mode)
        self.scored, self.score_seconds, self.last = 0, 0.0, {}
        self.settings = dict(mode=mode, super_size=self.super_size, chunks=chunks, temperature=temperature)  # resume

    @property
    def size(self):  # rows to draw: the super-batch while it is scored; early AJEST after its switch, the batch alone
        return self.super_size if self.switch.scoring else self.batch_size

    def __call__(self, step, model, images, tokens, t, noise, gen):
        if not self.switch.scoring:
            return torch.arange(self.batch_size)  # a plain uniform batch, no scoring
        tic, dev = time.time(), next(model.parameters()).device
        x0, tokens, t, noise = data.to_float(images).to(dev), tokens.to(dev), t.to(dev), noise.to(dev)
        score, learner, reference = learnability(lambda m: proxy.rf_loss(m, x0, tokens, t=t, noise=noise),
                                                 model, self.reference, self.mode)
        self.last = {"learner_loss": learner.mean().item() if learner is not None else "",
                     "reference_loss": reference.mean().item() if reference is not None else "",
                     "score_std": score.float().std().item()}
        if self.switch.watching:
            self.switch.update(step, self.last["learner_loss"], self.last["reference_loss"])
        keep = (jest_select(score.float().cpu(), self.batch_size, self.chunks, self.temperature, gen)
                if self.switch.on else torch.arange(self.batch_size))  # late AJEST before its switch: uniform
        self.scored += len(images)  # the learner's forward over the whole super-batch is spent, kept or not
        self.score_seconds += time.time() - tic
        return keep

    def log(self):
        """Extra log.csv columns (about the last super-batch)."""
        fmt = lambda v: f"{v:.5f}" if isinstance(v, float) else v
        return {"scored": self.scored, "selecting": int(self.switch.on), "score_seconds": f"{self.score_seconds:.2f}",
                **{k: fmt(self.last.get(k, "")) for k in ["learner_loss", "reference_loss", "score_std"]}}

    def state_dict(self):  # the reference's weights too: a resumed run goes on with the very same reference
        ref = self.reference
        return {"mode": self.mode, "crossed_at": self.switch.crossed_at, "scored": self.scored, "last": self.last,
                "score_seconds": self.score_seconds, **({} if ref is None else {"reference_config": dict(ref.config),
                "reference": {k: v.cpu() for k, v in ref.state_dict().items()}})}

    def load_state_dict(self, state):
        if state["mode"] != self.mode:
            raise data.DataError(f"the checkpoint was trained with --online {state['mode']}, not {self.mode}; "
                                 "pass the same flags to --resume")
        if self.reference is not None:
            dev = next(self.reference.parameters()).device
            self.reference = proxy.DiT(**state["reference_config"]).to(dev).eval().requires_grad_(False)
            self.reference.load_state_dict(state["reference"])
        self.switch.crossed_at, self.scored, self.score_seconds = state["crossed_at"], state["scored"], state["score_seconds"]
        self.last = state.get("last", {})  # the log's loss columns after an AJEST switch-off repeat the last scoring


# ----------------------------------------------------------------------------------------------------------------
# The rank-bin curriculum of Alchemist's released code: an alternative to training on a fixed Shift-Gsample subset

CURRICULUM_BINS = 10


class Curriculum:
    """proxy.train's `sampler`: rows ranked by score (highest first) and cut into 10 equal bins, b = 0 the top-rated;
    at training progress p = step / steps (= epoch / epochs, counting fractional epochs) bin b weighs
        w_b(p) = 0.5 (1 + cos(pi (p - peak_b))),  peak_b = b / 9,
    so the emphasis slides from the top-rated bins at the start (w_0 = 1, w_9 = 0) to the lowest-rated at the end; a
    bin weighs 1 at its peak and 0 a whole run away from it. Each batch draws its rows with replacement with
    P(row i) proportional to w_bin(i)(p), from the run's generator: deterministic with the seed, and a function of the
    step alone, so --resume (with the same --steps) draws what an uninterrupted run would. scores float [N] (higher =
    rated higher)."""

    def __init__(self, scores, steps, bins=CURRICULUM_BINS):
        n = len(scores)
        order = torch.from_numpy(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"))  # best first
        self.bin = torch.empty(n, dtype=torch.int64)
        self.bin[order] = torch.arange(n) * bins // n  # (N,) rank r -> bin floor(r bins / N)
        self.peaks = torch.linspace(0.0, 1.0, bins, dtype=torch.float64)  # peak_b = b / (bins - 1)
        self.steps = steps

    def weights(self, progress):
        """w_b at progress p in [0, 1]: float64 [bins]."""
        return 0.5 * (1.0 + torch.cos(math.pi * (progress - self.peaks)))

    def __call__(self, step, n, gen):
        p = self.weights(step / self.steps)[self.bin]  # (N,) each row's bin weight
        return torch.multinomial(p, n, replacement=True, generator=gen)  # (n,) row indices


# ----------------------------------------------------------------------------------------------------------------
# Plumbing: the presets, --curriculum's file, the command line, the run (checkpoints, snapshots, grids)

# Presets, one vocabulary with proxy.py and toy2d.py: tiny (tests, one-minute trials), quick (ablate.py's CPU grid),
# paper (the GPU grid). Each is larger than proxy.PRESETS' preset of the same name (the target outgrows its proxy, as
# in the paper). The paper preset keeps 64 image tokens (patch 2 at 16x16, patch 4 at 32x32); README gives its speed.
PRESETS = {
    "tiny": dict(width=16, depth=1, heads=1, text_depth=1, patch=2, steps=40, batch_size=16, lr=5e-3, warmup=10),
    # ablate.py quick (16x16 one-object scenes): as large as its proxy; 1000 steps of 64, ~1 min on one core
    "quick": dict(width=64, depth=2, heads=1, text_depth=1, patch=2, steps=1000, batch_size=64, lr=5e-3, warmup=50),
    "paper": dict(width=160, depth=6, heads=4, text_depth=2, steps=3000, batch_size=64, lr=1e-3, warmup=100),
}
EMA_DECAY = 0.999  # proxy.train warms the decay up as min(0.999, (1 + step) / (10 + step))


def load_curriculum(path, n, rows, steps):
    """--curriculum SCORES.npy: one finite score for each of the n training rows (rater.py's scores.npy); the bins
    are cut over the rows trained on (`rows`, e.g. a --subset)."""
    try:
        scores = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        raise data.DataError(f"--curriculum {path}: not a readable .npy scores file") from None
    if scores.ndim != 1 or scores.dtype.kind not in "fiu" or not np.isfinite(scores).all():
        raise data.DataError(f"--curriculum {path}: scores must be a 1-D array of finite numbers (rater.py's output)")
    if len(scores) != n:
        raise data.DataError(f"--curriculum {path}: {len(scores)} scores for {n} training rows; score this data's "
                             "train.pt with rater.py")
    return Curriculum(scores[rows.numpy()], steps)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Train the target text-to-image DiT on a subset (--subset) or on the whole training set. Runs "
                    "are compared at an equal number of --steps (equal compute): a smaller subset is simply seen "
                    "more often. With --online, each batch is selected from a larger scored one (JEST / AJEST); "
                    "log.csv then allows comparisons at equal kept samples and at equal wall-clock time.")
    p.add_argument("--data", required=True, help="data folder made by data.py (reads train.pt and val.pt)")
    p.add_argument("--subset", help="train only on these rows of train.pt (a sorted unique int64 .npy from prune.py); "
                                    "default: all rows")
    p.add_argument("--out", required=True, help="run folder; writes model.pt (EMA weights), train_state.pt, log.csv, "
                                                "samples*.png, snapshots/")
    p.add_argument("--preset", choices=list(PRESETS), default="paper",
                   help="model and schedule size: tiny (tests) | quick (width 64, depth 2; the CPU grid) | paper "
                        "(width 160, depth 6)")
    p.add_argument("--steps", type=int, help="training steps, the same for every subset compared (default: preset)")
    p.add_argument("--batch-size", type=int, help="batch size (default: preset)")
    p.add_argument("--lr", type=data.finite, help="AdamW learning rate after the linear warm-up (default: preset)")
    p.add_argument("--width", type=int, help="override the preset's model width (must divide by its heads)")
    p.add_argument("--depth", type=int, help="override the preset's number of DiT blocks")
    p.add_argument("--ema", type=data.finite, default=EMA_DECAY,
                   help="EMA decay of the weights that model.pt holds, warmed up as min(decay, (1+step)/(10+step)) so a "
                        "short run's EMA forgets its random start; 0 = no EMA (model.pt holds the raw weights)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, batches, t, noise, caption drop")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.add_argument("--resume", action="store_true",
                   help="continue from RUN/train_state.pt; the end equals an uninterrupted run (same flags)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only; ignored on the CPU)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bf16 autocast on CUDA and on CPUs with bf16 hardware (AVX512-BF16, AMX), else fp32")
    p.add_argument("--ckpt-every", type=int, default=500,
                   help="write train_state.pt and model.pt every N steps (and at every grid, snapshot or guide step)")
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="save the EMA weights as RUN/snapshots/step{N}.pt every N steps, for an FID-versus-step "
                        "curve (0 = off)")
    p.add_argument("--grid-every", type=int, default=500,
                   help="write RUN/samples_step{N}.png (EMA samples for 16 validation prompts) every N steps (0 = off)")
    p.add_argument("--guide-at", type=data.finite, default=0.0, metavar="F",
                   help="save the EMA weights at step round(F * --steps) as RUN/guide.pt: an earlier snapshot of this "
                        "model, for autoguidance (evaluate.py --guide) and as an --online reference; EDM2 trains its "
                        "guide to 1/16 of the schedule (0 = off)")
    p.add_argument("--curriculum", metavar="SCORES.npy",
                   help="draw each batch by the rank-bin curriculum of Alchemist's released code: 10 bins of the "
                        "ranking, the emphasis sliding from the top-rated bins to the lowest over training (see "
                        "Curriculum); SCORES.npy holds one score per training row (rater.py); works with --subset")
    o = p.add_argument_group("online batch selection (JEST / AJEST; docs/METHOD.md section 4)")
    o.add_argument("--online", choices=ONLINE, default="none",
                   help="none: uniform batches. jest: keep rows by learnability = loss(learner) - loss(reference) on "
                        "the same (t, noise). early_ajest: jest from step 0 until the learner's mean loss on a "
                        "super-batch first falls below the reference's, then uniform for good. late_ajest: uniform "
                        "until then, jest after. hard_learner: score = the learner's loss (no reference needed). "
                        "easy_reference: score = minus the reference's loss")
    o.add_argument("--reference", metavar="REF.pt",
                   help="the frozen reference (a model.pt, guide.pt or snapshot with this data's image size and "
                        "vocabulary; it may be smaller); default: RUN/guide.pt if it exists, e.g. from an earlier "
                        "--guide-at run in the same folder. Stored in train_state.pt, so --resume reuses it")
    o.add_argument("--super-batch-factor", type=data.finite, default=5.0,
                   help="score factor x --batch-size rows per step and keep --batch-size: 1/(1-f) for JEST's filtering "
                        "ratio f (5 = keep 20%%)")
    o.add_argument("--chunks", type=int, default=16,
                   help="JEST samples the kept rows in this many chunks, each without replacement")
    o.add_argument("--temperature", type=data.finite, default=0.1,
                   help="rows are sampled from softmax(score / temperature); compare it with log.csv's score_std: "
                        "much larger is nearly uniform, 0 = the deterministic top rows (RHO-LOSS)")
    p.error = data.arg_error
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    cfg = dict(PRESETS[a.preset])
    cfg.update({k: v for k, v in dict(width=a.width, depth=a.depth).items() if v is not None})
    pick = lambda flag, name: cfg[name] if flag is None else flag  # None = the preset's; 0 is refused below
    steps, batch_size, lr = pick(a.steps, "steps"), pick(a.batch_size, "batch_size"), pick(a.lr, "lr")
    if min(steps, batch_size, cfg["width"], cfg["depth"]) < 1 or lr <= 0:
        data.fail("--steps, --batch-size, --lr, --width and --depth must be positive")
    if cfg["width"] % cfg["heads"]:
        data.fail(f"--width {cfg['width']} must be divisible by the preset's {cfg['heads']} attention heads")
    if a.ckpt_every < 1 or a.snapshot_every < 0 or a.grid_every < 0 or not 0 <= a.ema < 1:
        data.fail("--ckpt-every must be positive, --snapshot-every and --grid-every >= 0, --ema in [0, 1)")
    if not 0 <= a.guide_at <= 1 or a.super_batch_factor < 1 or a.chunks < 1 or a.temperature < 0:
        data.fail("--guide-at must be in [0, 1], --super-batch-factor >= 1, --chunks >= 1, --temperature >= 0")
    needs_reference = a.online not in ("none", "hard_learner")
    if a.reference and not needs_reference:
        data.fail(f"--online {a.online} uses no --reference")
    if a.curriculum and a.online != "none":
        data.fail("--curriculum and --online both choose the batches; use one of them")
    device = data.pick_device(a.device)

    # Everything that can be wrong with the input is checked before the first file is written.
    try:
        d, val = data.load_splits(a.data, "train", "val")
        rows = torch.arange(len(d["images"]))
        if a.subset:
            rows = torch.from_numpy(load_subset(a.subset, len(d["images"])))  # sorted, unique, in range
        reference = None
        if needs_reference:
            ref_path = a.reference or os.path.join(a.out, "guide.pt")
            if not os.path.exists(ref_path):
                raise data.DataError(f"--online {a.online} needs a reference model: pass --reference REF.pt (e.g. the "
                                     f"guide.pt of a run with --guide-at 0.125){'' if a.reference else f'; no {ref_path}'}")
            reference, _ = proxy.load_proxy(ref_path, "cpu", dataset=d)  # same image size and vocabulary as the data
        data.check_out(a.out)
        sampler = load_curriculum(a.curriculum, len(d["images"]), rows, steps) if a.curriculum else None
    except data.DataError as e:
        data.fail(str(e))

    run(a, cfg, steps, batch_size, lr, device, d, val, rows, reference, sampler)


def run(a, cfg, steps, batch_size, lr, device, d, val, rows, reference, sampler=None):
    size = d["images"].shape[-1]
    torch.manual_seed(a.seed)
    model = proxy.DiT(image_size=size, patch=cfg.get("patch"), width=cfg["width"], depth=cfg["depth"],
                      heads=cfg["heads"], text_depth=cfg["text_depth"], vocab_size=len(d["vocab"]),
                      max_tokens=d["tokens"].shape[1]).to(device)
    ema_model = copy.deepcopy(model).eval()  # holds the EMA weights for writing and sampling
    if a.compile and device.type != "cuda":
        print("warning: --compile needs CUDA; ignored on the CPU", file=sys.stderr)
    elif a.compile:
        model.compile()  # in place: the state_dict keeps its plain names, so checkpoints load anywhere
    decay = a.ema
    state_path, model_path = os.path.join(a.out, "train_state.pt"), os.path.join(a.out, "model.pt")
    if a.resume and not os.path.exists(state_path):
        print(f"note: --resume but no {state_path} yet; starting from step 0")
    args = {k: v for k, v in vars(a).items() if v is not None}
    extra = {"weights": "ema" if decay > 0 else "raw", "ema_decay": decay, "args": args}
    print(f"target: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {len(rows)} of "
          f"{len(d['images'])} training rows, {steps} steps of {batch_size} on {device}, EMA decay {decay:.4f}")
    select = None
    if a.online != "none":
        select = OnlineSelection(a.online, reference.to(device) if reference is not None else None, batch_size,
                                 a.super_batch_factor, a.chunks, a.temperature)
        print(f"online selection {a.online}: keep {batch_size} of {select.super_size} rows per step, temperature "
              f"{a.temperature}" + (f", reference {sum(p.numel() for p in reference.parameters()) / 1e6:.2f}"
                                    "M parameters" if reference is not None else ""))
    guide_step = max(1, round(a.guide_at * steps)) if a.guide_at > 0 else 0

    def on_log(step, model, ema):
        """Called by proxy.train (see hook_every): model.pt, snapshots and grids, all from the EMA."""
        ema_model.load_state_dict(ema if ema is not None else model.state_dict())
        proxy.save_checkpoint(model_path, ema_model, step, d["vocab"], **extra)
        if a.snapshot_every and step % a.snapshot_every == 0:
            proxy.save_checkpoint(os.path.join(a.out, "snapshots", f"step{step}.pt"), ema_model, step, d["vocab"], **extra)
        if a.grid_every and step % a.grid_every == 0:
            proxy.sample_grid(ema_model, val, os.path.join(a.out, f"samples_step{step}.png"), device=device)
        if step == guide_step:  # autoguidance: the same model, trained for a fraction of the schedule
            proxy.save_checkpoint(os.path.join(a.out, "guide.pt"), ema_model, step, d["vocab"], **extra)

    # on_log runs at every checkpoint and wherever a grid, a snapshot or the guide is due (and at the end)
    hook_every = math.gcd(a.ckpt_every, a.snapshot_every, a.grid_every, guide_step)
    os.makedirs(a.out, exist_ok=True)
    try:
        files = proxy.Run(state_path, d["vocab"], resume=a.resume, ckpt_every=a.ckpt_every, hook_every=hook_every,
                          log_path=os.path.join(a.out, "log.csv"), desc="target", extra=extra, on_log=on_log)
        proxy.train(model, d["images"][rows], d["tokens"][rows], steps, batch_size, lr, a.seed, device, files,
                    warmup=cfg["warmup"], ema_decay=decay, select=select, precision=a.precision, sampler=sampler)
        final, ckpt = proxy.load_proxy(model_path, device)  # exactly what evaluate.py will read
    except data.DataError as e:  # a --resume checkpoint of another model size, a non-finite loss
        data.fail(str(e))
    proxy.sample_grid(final, val, os.path.join(a.out, "samples.png"), device=device)
    grids = sorted(f for f in os.listdir(a.out) if f.startswith("samples_step"))
    snaps = os.listdir(os.path.join(a.out, "snapshots")) if os.path.isdir(os.path.join(a.out, "snapshots")) else []
    print(f"wrote {model_path} ({ckpt['weights']} weights, step {ckpt['step']}), train_state.pt, log.csv, samples.png"
          f"{f', {len(grids)} samples_step*.png' if grids else ''}{f', {len(snaps)} snapshots/' if snaps else ''}"
          f"{', guide.pt' if guide_step else ''} in {a.out}")


def load_subset(path, n):
    """A subset file: unique int64 row indices into a dataset of n rows (prune.py writes them sorted)."""
    try:
        rows = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        raise data.DataError(f"{path}: not a readable .npy subset file") from None
    if rows.ndim != 1 or rows.dtype.kind not in "iu" or rows.size == 0:
        raise data.DataError(f"{path}: a subset must be a non-empty 1-D integer array, found {rows.dtype} {rows.shape}")
    if rows.min() < 0 or rows.max() >= n or len(np.unique(rows)) != len(rows):
        raise data.DataError(f"{path}: duplicate rows or rows outside 0..{n - 1}; was it made for another dataset?")
    return rows.astype(np.int64)


if __name__ == "__main__":
    main()
