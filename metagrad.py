"""metagrad.py -- train the rater by meta-gradients: Alchemist's explicit bilevel loop, or the exact hypergradient.

Reads:   D/train.pt, D/val.pt (clean), RUN/proxy.pt (the reference proxy, warmed on the training set by proxy.py)
Writes:  RUN/rater.pt (the rater with its frozen trunk; scored by rater.py), RUN/metagrad_log.csv,
         RUN/metagrad_state.pt (everything needed to --resume), RUN/primary_warm.pt (the primary after its warm-up)
Run:     python metagrad.py --data data/shapes --proxy runs/x/proxy.pt --out runs/x [--method alchemist|exact]
Implements the rating stage of Alchemist (arXiv 2512.16905, Sec. 3, Eq. 4-10) and, for comparison, the exact
one-step hypergradient of Learning-to-Reweight (Ren et al. 2018) and DataRater (Calian et al. 2025).

Bilevel problem: mu* = argmin_mu E_val L(theta*(mu)),  theta*(mu) = argmin_theta sum_i W_i(mu) L(theta; x_i).

Setup. The reference theta_ref is the loaded proxy (Eq. 4's warm-up on the training set is proxy.py's job). The
primary theta starts as a copy of it and is then warmed on the clean validation split (--primary-warmup steps). Why:
a model that learns from clean data relies on the captions, one that learns from misaligned captions learns to
distrust them, so L(theta; x) - L(theta_ref; x) is large exactly where the training data is bad (FEASIBILITY.md,
"where the signal is"). A frozen copy of the warmed primary becomes the rater's trunk (rater.py), and the features
of every training row are computed once.

--method alchemist, one step (released code: one training and one validation batch per step):
  W = rater(features of the batch); one (t, noise) per sample, shared by both models (FEASIBILITY.md, point 5)
  Eq. 5   theta     <- step on  g L_val(theta) + (1 - g) sum_i W_i L(theta; x_i)      (W detached)
  Eq. 4   theta_ref <- step on  mean_i L(theta_ref; x_i)
  Eq. 6   mu        <- step on  sum_i W_i(mu) (gap_i - b),  gap_i = L(theta; x_i) - L(theta_ref; x_i)  (detached)
  --simplified (Eq. 9) takes gap_i = L(theta; x_i): the reference is neither needed nor trained.
  The baseline b is our deviation from the paper (see alchemist_rater_loss).
--method exact, one step: a virtual SGD step theta'(W) = theta - eta sum_i W_i grad L(theta; x_i), built with
  create_graph=True; h_i = d L_val(theta'(W)) / d W_i by back-propagating through it, and mu <- step on
  sum_i W_i(mu) (h_i - b), whose gradient is exactly d L_val(theta'(W(mu))) / d mu up to the baseline (chain rule);
  then the primary takes its real Eq. 5 step. No reference model: the validation loss itself judges the weights.
Every method: the signal h is divided by a running scale s_k (so that the logit prior, --logit-decay, means the same
  for every method), and the rater's loss carries an L2 prior on its logits (logit_penalty, our deviation).
Cost per step, in plain training steps (bench/metagrad_cost.py): about 3 (alchemist), 2 (simplified), 4-5 (exact).

Optimisers: AdamW betas (0.9, 0.95) everywhere; the rater with weight decay 0.05 and grad clip 2.0 (released code),
the two models with grad clip 1.0, continuing the optimiser moments stored with their warm-ups. Everything runs in
float32 (no autocast), so that the exact method's double backward is as precise as its finite-difference test.
"""
import argparse
import copy
import csv
import os
import time

import numpy as np
import torch
from torch.func import functional_call
from tqdm import tqdm

import data
import proxy
import rater as rating  # the module; "rater" names the network itself below

SIGNAL_DECAY = 0.9  # EMAs of the signal's scale s_k and of the weighted batch signal (the REINFORCE baseline b_k)
RATER_CLIP, MODEL_CLIP = 2.0, 1.0


# ----------------------------------------------------------------------------------------------------------------
# The rater's loss: Eq. 6 with a baseline, and the exact hypergradient

def alchemist_rater_loss(W, signal, baseline):
    """Eq. 6 with a baseline: sum_i W_i (h_i - b). W [B] from the rater (with grad), h [B] detached (the loss gap, or
    any per-row signal where lower = better row), b a float.

    Why a baseline (our deviation from the paper). Eq. 6 as written, sum_i W_i gap_i = W_batch sum_i w_inst_i gap_i,
    multiplies the whole gap by W_batch: while the mean gap is positive the cheapest move is W_batch -> 0, and a first
    prototype's W_batch underflowed to 0 in 24 steps (FEASIBILITY.md, point 2). Subtracting a baseline b_k, the
    running mean of the weighted batch signal sum_i w_inst_i h_i, is the REINFORCE trick (Williams 1992):
      - the instance head is unchanged: sum_i w_inst_i = 1, so sum_i grad w_inst_i = 0 and the term
        -b W_batch sum_i grad w_inst_i vanishes, whatever b is;
      - the group head sees d/dW_batch = sum_i w_inst_i h_i - b_k: it raises W_batch for batches better than usual
        (a lower weighted signal) and lowers it for worse ones, instead of collapsing.
    (The shared adapter under both heads sees the group head's part too.)"""
    return (W * (signal - baseline)).sum()


def logit_penalty(z, group_logit, decay):
    """decay * (mean_i z_i^2 + g^2): an L2 prior that keeps the logits where the sigmoid still answers.

    Our second deviation (FEASIBILITY.md, point 3). Without it Adam pushes the rows it likes to z = +inf, where
    sigmoid'(z) = 0: they stop learning, and their order, which is what pruning uses, is left to chance. With it the
    pull of the signal on z_i, about W_batch w_inst_i h_i sigmoid'(z_i) / tau, is balanced at a finite z_i that
    grows with how good the row is: a regression of the ranking on the signal. The same prior on the group logit g
    keeps W_batch inside (0, 1) against the drift of a signal whose mean moves while the rater learns."""
    penalty = z.pow(2).mean()
    return decay * (penalty + group_logit.pow(2) if group_logit is not None else penalty)


def exact_rater_loss(primary, W, x, tok, t, noise, x_val, tok_val, t_val, noise_val, eta, loss_train=None):
    """L_val(theta'(W)) with theta'(W) = theta - eta sum_i W_i grad_theta L(theta; x_i): a scalar whose gradient
    with respect to the weights W [B] is the exact one-step hypergradient (Ren 2018; Calian 2025), and through W(mu)
    the rater's. x [B,3,H,W], tok [B,L], t [B], noise [B,3,H,W]; the same for the validation batch. loss_train:
    L(theta; x_i) [B] with its graph, when the caller has it already (meta_step), so that it is not computed twice."""
    names, params = zip(*[(n, p) for n, p in primary.named_parameters()])
    if loss_train is None:
        loss_train = proxy.rf_loss(primary, x, tok, t, noise)
    inner = (W * loss_train).sum()  # Eq. 10: sum_i W_i L(theta; x_i)
    grads = torch.autograd.grad(inner, params, create_graph=True)  # each a function of W
    theta_new = {n: p - eta * g for n, p, g in zip(names, params, grads)}  # the virtual SGD step theta'(W)
    virtual = lambda x_t, tt, tk: functional_call(primary, theta_new, (x_t, tt, tk))
    # proxy.attention is written out, so this double backward works on the CPU too
    return proxy.rf_loss(virtual, x_val, tok_val, t_val, noise_val).mean()  # L_val(theta'(W))


def exact_signal(primary, W, eta, loss_train=None, **b):
    """h_i = d L_val(theta'(W)) / d W_i [B], detached: what raising row i's weight does to the validation loss
    after the virtual step (about -eta grad L_val . grad L(x_i)). sum_i W_i(mu) h_i then has exactly the gradient
    d L_val(theta'(W(mu))) / d mu (the chain rule), so the exact method shares Eq. 6's form below.
    b: the batch's x, tok, t, noise, x_val, tok_val, t_val, noise_val (draw_batch; its feats are ignored). The
    primary's .grad and W's are left untouched: the gradient is taken with respect to a detached copy of W."""
    W = W.detach().requires_grad_(True)
    loss = exact_rater_loss(primary, W, **{k: v for k, v in b.items() if k != "feats"}, eta=eta, loss_train=loss_train)
    return torch.autograd.grad(loss, W)[0]


# ----------------------------------------------------------------------------------------------------------------
# One meta step

def update(opt, loss, params, clip):
    """One optimiser step on `loss` for `params` only (no gradient leaks into the other models)."""
    opt.zero_grad(set_to_none=True)
    loss.backward(inputs=params)
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def stratified_t(n, gen):
    """n timesteps covering [0, 1) evenly, one in each of n strata in random order: less noise in a batch's mean."""
    return (torch.randperm(n, generator=gen) + torch.rand(n, generator=gen)) / n  # (n,)


def draw_batch(gen, feats_all, train, val, batch_size, device):
    """Rows, a validation batch and one (t, noise) per sample, all from the run's generator (on the CPU)."""
    idx = torch.randint(len(train["images"]), (batch_size,), generator=gen)
    vidx = torch.randint(len(val["images"]), (batch_size,), generator=gen)
    shape = (batch_size, *train["images"].shape[1:])
    b = dict(feats=feats_all[idx.to(feats_all.device)], x=data.to_float(train["images"][idx]), tok=train["tokens"][idx],
             t=stratified_t(batch_size, gen), noise=torch.randn(shape, generator=gen),
             x_val=data.to_float(val["images"][vidx]), tok_val=val["tokens"][vidx],
             t_val=stratified_t(batch_size, gen), noise_val=torch.randn(shape, generator=gen))
    return {k: v.to(device) for k, v in b.items()}


def rater_objective(s, z, group_logit, W, signal, logit_decay):
    """The rater's loss at step k, sum_i W_i (h_i / s_k - b_k) + logit_penalty, and sum_i w_inst_i h_i / s_k (the
    batch's weighted signal, which the caller folds into b_{k+1} once the step is known to be finite). Updates the
    running scale s_k of h (the EMA of its batch std) in `s`; the first step sets s_k and b_k.
    In detail: s_k = SIGNAL_DECAY s_{k-1} + (1 - SIGNAL_DECAY) h.std() (s_1 = h.std()); h is divided by
    max(s_k, 1e-12); w_inst = W / sum W, detached; on the first step (s["baseline"] None) b_1 = the batch signal.
    Returns (a scalar tensor, a float)."""
    spread = signal.std().item()
    s["scale"] = spread if s["scale"] is None else SIGNAL_DECAY * s["scale"] + (1 - SIGNAL_DECAY) * spread
    signal = signal / max(s["scale"], 1e-12)
    batch_signal = (W.detach() / W.detach().sum() * signal).sum().item()  # sum_i w_inst_i h_i
    if s["baseline"] is None:
        s["baseline"] = batch_signal
    return alchemist_rater_loss(W, signal, s["baseline"]) + logit_penalty(z, group_logit, logit_decay), batch_signal


def meta_step(s, b, method="alchemist", simplified=False, gamma=0.5, eta=1e-3, logit_decay=0.05):
    """One step of the chosen method on batch b (draw_batch); updates the models, optimisers, scale and baseline in
    `s` in place and returns the numbers the log needs. Raises FloatingPointError before any update on a non-finite
    loss. Every method computes a per-row signal h_i (lower = a row whose weight helps), then steps the rater on
    sum_i W_i (h_i / s_k - b_k) + the logit penalty, s_k a running scale of h (so that one --logit-decay fits every
    method and data set) and b_k the baseline (alchemist_rater_loss).
    In order: W (Eq. 7/8 from rater.logits and rater.instance_weights, W_batch = 1 without the group head); L(theta;
    x_i) and L_val(theta) on b's draws; the signal h, detached, from the models as they are (alchemist: the gap to
    L(theta_ref; x_i) on the same draws; simplified: L(theta; x_i); exact: exact_signal(primary, W, eta, L(theta;
    x_i), **b)); rater_objective (called once); FloatingPointError if any loss is not
    finite; then update() the rater (RATER_CLIP), the primary on Eq. 5 (MODEL_CLIP) and, in alchemist without
    --simplified, the reference on Eq. 4 (MODEL_CLIP); then b_{k+1} = SIGNAL_DECAY b_k + (1 - SIGNAL_DECAY) * the
    batch signal. Returns dict(W_batch, entropy = -sum w_inst log w_inst / log B, rater_loss), floats."""
    rater, primary = s["rater"], s["primary"]
    z, group_logit = rater.logits(b["feats"])  # (B,), () at mu_k
    w_inst = rater.instance_weights(z)  # (B,) Eq. 7, sums to 1
    W_batch = torch.sigmoid(group_logit) if group_logit is not None else torch.ones((), device=z.device)
    W = w_inst * W_batch  # (B,) Eq. 8
    loss_i = proxy.rf_loss(primary, b["x"], b["tok"], b["t"], b["noise"])  # (B,) L(theta; x_i)
    loss_val = proxy.rf_loss(primary, b["x_val"], b["tok_val"], b["t_val"], b["noise_val"]).mean()  # L_val(theta)
    loss_ref_i = None
    if method == "exact":
        signal = exact_signal(primary, W, eta, loss_i, **b)  # d L_val(theta'(W)) / d W_i; reuses loss_i's graph
    elif simplified:
        signal = loss_i.detach()  # Eq. 9: assume L(theta_ref; x) ~ 0
    else:
        loss_ref_i = proxy.rf_loss(s["reference"], b["x"], b["tok"], b["t"], b["noise"])  # (B,) same draws
        signal = (loss_i - loss_ref_i).detach()  # Eq. 6: the loss gap, computed before either model moves
    rater_loss, batch_signal = rater_objective(s, z, group_logit, W, signal, logit_decay)
    losses = [loss_i, loss_val, rater_loss] + ([loss_ref_i] if loss_ref_i is not None else [])
    if not all(torch.isfinite(v).all() for v in losses):
        raise FloatingPointError("non-finite loss")
    update(s["opt_rater"], rater_loss, list(rater.parameters()), RATER_CLIP)  # mu_{k+1}
    # Eq. 5: theta_{k+1} from g L_val + (1 - g) sum_i W_i L(theta; x_i), the released code's form
    update(s["opt_primary"], gamma * loss_val + (1 - gamma) * (W.detach() * loss_i).sum(),
           list(primary.parameters()), MODEL_CLIP)
    if loss_ref_i is not None:  # Eq. 4: the reference keeps training on the training set
        update(s["opt_ref"], loss_ref_i.mean(), list(s["reference"].parameters()), MODEL_CLIP)
    s["baseline"] = SIGNAL_DECAY * s["baseline"] + (1 - SIGNAL_DECAY) * batch_signal  # b_{k+1}
    w_inst = w_inst.detach()
    entropy = -(w_inst * w_inst.clamp_min(1e-30).log()).sum() / np.log(max(2, len(w_inst)))  # 1 = uniform
    return dict(W_batch=W_batch.item(), entropy=entropy.item(), rater_loss=rater_loss.item())


# ----------------------------------------------------------------------------------------------------------------
# Setup, checkpoints and the log

def adamw(model, lr, ckpt=None):
    """AdamW as in proxy.train; continues the moments stored with the model's own warm-up, where there are some."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    if ckpt is not None and "optimizer" in ckpt:
        opt.load_state_dict(ckpt["optimizer"])
    for g in opt.param_groups:
        g["lr"] = lr
    return opt


def start_fresh(a, reference, ref_ckpt, train, val, draws, device, warm_path):
    """Warm the primary on clean data, freeze a copy as the trunk, compute every row's features, build the rater.
    Returns primary, trunk, rater, features [N, D], and the checkpoint whose optimiser moments the primary continues."""
    primary = copy.deepcopy(reference).requires_grad_(True)  # theta_0 = theta_ref
    warm_ckpt = ref_ckpt
    if a.primary:  # warmed by an earlier run: same architecture as the reference, same data
        warm_ckpt = data.load_pt(a.primary, "checkpoint")
        try:
            primary.load_state_dict(warm_ckpt["model"])
        except (KeyError, RuntimeError):
            raise data.DataError(f"{a.primary}: not a primary of this reference's size; warm one with "
                                 f"--primary-warmup instead") from None
    elif a.primary_warmup > 0:  # the primary learns from clean data: it comes to rely on the captions
        proxy.train(primary, val["images"], val["tokens"], warm_path, train["vocab"], a.primary_warmup, a.batch_size,
                    a.lr, a.seed, device, resume=a.resume, desc="primary warm-up (val)")
        warm_ckpt = data.load_pt(warm_path, "checkpoint")
    trunk = copy.deepcopy(primary).eval().requires_grad_(False)  # the rater's frozen view (rater.py)
    raw = rating.features_of_rows(trunk, train["images"], train["tokens"], draws, device).to(device)  # (N, 2K + C)
    torch.manual_seed(a.seed)
    rater = rating.Rater(raw.shape[1], width=trunk.config["width"], temperature=a.temperature,
                         use_group=not a.no_group).to(device)
    rater.fit_standardisation(raw)
    return primary, trunk, rater, rater.standardise(raw), warm_ckpt  # features computed once: the trunk is frozen


def resume_from(saved, reference, device):
    """Rebuild primary, trunk, rater and features from metagrad_state.pt; the reference is restored in place."""
    primary = copy.deepcopy(reference).requires_grad_(True)
    primary.load_state_dict(saved["primary"])
    if saved["reference"] is not None:
        reference.load_state_dict(saved["reference"])
    trunk = proxy.DiT(**saved["trunk_config"])
    trunk.load_state_dict(saved["trunk"])
    rater = rating.Rater(**saved["rater_config"])
    rater.load_state_dict(saved["rater"])
    return primary, trunk.to(device).eval().requires_grad_(False), rater.to(device), saved["feats"].to(device)


def save_state(path, s, step, gen, args):
    """Everything a resumed run needs to end where an uninterrupted one would (the features too: no recomputing)."""
    data.atomic_save({"step": step, "rng": gen.get_state(), "baseline": s["baseline"], "scale": s["scale"], "args": args,
                      "feats": s["feats"].cpu(), "rater_config": dict(s["rater"].config),
                      "trunk": s["trunk"].state_dict(), "trunk_config": dict(s["trunk"].config),
                      **{k: s[k].state_dict() if s[k] is not None else None
                         for k in ["primary", "reference", "rater", "opt_primary", "opt_ref", "opt_rater"]}}, path)


def open_log(path, header, start):
    """The CSV log; on resume, keeps only the rows up to the checkpoint's step so that no step is logged twice."""
    rows = []
    if start > 0 and os.path.exists(path):
        with open(path, newline="") as f:
            rows = [r for r in list(csv.reader(f))[1:] if r and int(r[0]) <= start]
    f = open(path, "w", newline="")
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(rows)
    return f, writer


# Flags that must not change across --resume (the others, e.g. --steps or --lr, may)
SAME_ON_RESUME = ["method", "simplified", "no_group", "batch_size", "temperature", "draws", "schedule", "seed"]


def main(argv=None):
    p = argparse.ArgumentParser(description="Train the rater by meta-gradients (Alchemist Eq. 4-10, or the exact "
                                            "one-step hypergradient); writes RUN/rater.pt for rater.py.")
    p.add_argument("--data", required=True, help="data folder made by data.py (train.pt rated, val.pt the outer loss)")
    p.add_argument("--proxy", required=True, help="the reference proxy, RUN/proxy.pt from proxy.py (Eq. 4 warm-up)")
    p.add_argument("--out", required=True, help="run folder; writes rater.pt, metagrad_log.csv, metagrad_state.pt")
    p.add_argument("--method", choices=["alchemist", "exact"], default="alchemist",
                   help="alchemist: Eq. 4-6 on the loss gap; exact: back-propagate through a virtual step")
    p.add_argument("--simplified", action="store_true", help="alchemist only: Eq. 9, the gap is L(theta; x) alone")
    p.add_argument("--schedule", choices=["constant", "seal"], default="constant",
                   help="g in Eq. 5: constant --gamma, or SEAL's 1.0 dropping by 0.03 per epoch of the training set")
    p.add_argument("--gamma", type=float, default=0.5, help="g, the validation loss's share in Eq. 5 (constant)")
    p.add_argument("--no-group", action="store_true", help="no group head: W_batch = 1 (instance weights only)")
    p.add_argument("--steps", type=int, default=1000, help="meta steps (10 epochs of 8000 rows at batch 64 is 1250)")
    p.add_argument("--batch-size", type=int, default=64, help="training rows per step, and validation rows per step")
    p.add_argument("--primary-warmup", type=int, default=1000,
                   help="steps of the primary on the clean validation split before rating; longer = stronger signal")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW lr of the primary and the reference (and warm-up)")
    p.add_argument("--rater-lr", type=float, default=1e-3, help="AdamW lr of the rater")
    p.add_argument("--eta", type=float, help="exact only: the virtual SGD step size (default: --lr)")
    p.add_argument("--logit-decay", type=float, default=0.05,
                   help="L2 prior on the rater's logits (instance z and group), keeps them where the sigmoid answers")
    p.add_argument("--primary", help="a primary already warmed on val (an earlier run's primary_warm.pt): "
                                     "skips --primary-warmup, so that several methods share one warm-up")
    p.add_argument("--temperature", type=float, default=0.2,
                   help="tau in softmax(sigmoid(z) / tau); the largest/smallest weight ratio is at most e^(1/tau)")
    p.add_argument("--draws", type=int, default=rating.K_DRAWS,
                   help="K fixed (t, noise) draws for the rater's features and the logged losses")
    p.add_argument("--log-every", type=int, default=25, help="log (CSV and progress bar) every N steps")
    p.add_argument("--ckpt-every", type=int, default=200, help="checkpoint (metagrad_state.pt, rater.pt) every N steps")
    p.add_argument("--seed", type=int, default=0, help="seed for the rater's initialisation, batches and draws")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.add_argument("--resume", action="store_true", help="continue from RUN/metagrad_state.pt if it exists")
    a = p.parse_args(argv)
    if min(a.steps, a.batch_size, a.draws, a.log_every, a.ckpt_every) < 1 or min(a.lr, a.rater_lr, a.temperature) <= 0:
        data.fail("--steps, --batch-size, --draws, --log-every, --ckpt-every, --lr, --rater-lr and --temperature "
                  "must be positive")
    if a.primary_warmup < 0 or not 0 <= a.gamma <= 1 or a.logit_decay < 0:
        data.fail("--primary-warmup and --logit-decay must be >= 0 and --gamma in [0, 1]")
    if a.simplified and a.method == "exact":
        data.fail("--simplified is a variant of --method alchemist (Eq. 9); the exact method has no loss gap")
    device, eta = data.pick_device(a.device), a.eta if a.eta is not None else a.lr
    args = {k: v for k, v in vars(a).items() if v is not None}
    state_path, rater_path = os.path.join(a.out, "metagrad_state.pt"), os.path.join(a.out, "rater.pt")
    log_path, warm_path = os.path.join(a.out, "metagrad_log.csv"), os.path.join(a.out, "primary_warm.pt")
    os.makedirs(a.out, exist_ok=True)
    uses_ref = a.method == "alchemist" and not a.simplified  # only Eq. 4-6 needs (and trains) theta_ref

    # Setup: theta_ref, then the primary warmed on clean data, the frozen trunk, every row's features, the rater
    try:
        train, val = data.load_dataset(a.data, "train"), data.load_dataset(a.data, "val")
        reference, ref_ckpt = proxy.load_proxy(a.proxy, device, train)  # theta_ref, warmed by proxy.py (Eq. 4)
        proxy.check_fits(reference, val, a.proxy)
        size = train["images"].shape[-1]
        draws = proxy.fixed_draws(a.draws, (3, size, size), seed=rating.DRAWS_SEED)
        saved = data.load_pt(state_path, "state") if a.resume and os.path.exists(state_path) else None
        if saved is not None and "args" not in saved:
            raise data.DataError(f"{state_path}: not a metagrad.py state; remove it or drop --resume")
        if saved is not None and any(saved["args"].get(k) != args.get(k) for k in SAME_ON_RESUME):
            raise data.DataError(f"{state_path}: saved with other {SAME_ON_RESUME} flags; drop --resume or match them")
        if saved is None:
            primary, trunk, rater, feats_all, warm_ckpt = start_fresh(a, reference, ref_ckpt, train, val, draws,
                                                                      device, warm_path)
        else:
            (primary, trunk, rater, feats_all), warm_ckpt = resume_from(saved, reference, device), None
    except data.DataError as e:
        data.fail(str(e))
    reference.requires_grad_(uses_ref)
    s = dict(primary=primary, reference=reference if uses_ref else None, rater=rater, trunk=trunk, feats=feats_all,
             baseline=None, scale=None, opt_primary=adamw(primary, a.lr, warm_ckpt),
             opt_ref=adamw(reference, a.lr, ref_ckpt if saved is None else None) if uses_ref else None,
             opt_rater=torch.optim.AdamW(rater.parameters(), lr=a.rater_lr, betas=(0.9, 0.95), weight_decay=0.05))
    gen, start, last_ckpt = torch.Generator().manual_seed(a.seed), 0, None
    if saved is not None:
        for k in ["opt_primary", "opt_ref", "opt_rater"]:
            if s[k] is not None:
                s[k].load_state_dict(saved[k])
                for g in s[k].param_groups:  # a resumed run may change the learning rates (e.g. lower --lr)
                    g["lr"] = a.rater_lr if k == "opt_rater" else a.lr
        s["baseline"], s["scale"], start, last_ckpt = saved["baseline"], saved["scale"], saved["step"], saved["step"]
        gen.set_state(saved["rng"])

    # The log: losses on a fixed validation batch with fixed draws, the rater's weights, running AUROCs
    fixed_val = (data.to_float(val["images"][:256]).to(device), val["tokens"][:256].to(device))
    defect, names = train["defect"].numpy(), train["defect_names"]
    types = [names[k] for k in range(1, len(names)) if (defect == k).any()]  # empty without ground truth
    header = ["step", "val_primary", "val_reference", "W_batch", "z_min", "z_max", "z_std", "entropy", "rater_loss",
              "baseline", "gamma", "seconds"] + [f"auroc_{n}" for n in types]
    log, writer = open_log(log_path, header, start)
    t0, window = time.time(), []
    bar = tqdm(range(start, a.steps), desc=f"metagrad {a.method}{' simplified' if a.simplified else ''}",
               initial=start, total=a.steps, dynamic_ncols=True)
    for step in bar:
        epoch = step * a.batch_size // len(train["images"])
        gamma = max(0.0, 1.0 - 0.03 * epoch) if a.schedule == "seal" else a.gamma  # SEAL's upper-level weight
        b = draw_batch(gen, feats_all, train, val, a.batch_size, device)
        try:
            window.append(meta_step(s, b, a.method, a.simplified, gamma, eta, a.logit_decay))
        except FloatingPointError:
            bar.close()
            last = f"{state_path} (step {last_ckpt})" if last_ckpt else "none written yet"
            data.fail(f"non-finite loss at step {step + 1}; lower --lr or --rater-lr. "
                      f"Last good checkpoint kept: {last}")
        if (step + 1) % a.log_every == 0 or step + 1 == a.steps:
            with torch.no_grad():
                z_all = rater.logits(feats_all)[0].cpu().numpy()  # (N,): cheap, the features are precomputed
                val_p = proxy.sample_loss(primary, *fixed_val, draws).mean().item()
                val_r = proxy.sample_loss(reference, *fixed_val, draws).mean().item() if uses_ref else None
            aurocs = rating.aurocs_by_type(z_all, defect, names)
            row = [step + 1, f"{val_p:.5f}", "" if val_r is None else f"{val_r:.5f}",
                   f"{np.mean([w['W_batch'] for w in window]):.4f}", f"{z_all.min():.3f}", f"{z_all.max():.3f}",
                   f"{z_all.std():.3f}", f"{np.mean([w['entropy'] for w in window]):.4f}",
                   f"{np.mean([w['rater_loss'] for w in window]):.5f}",
                   "" if s["baseline"] is None else f"{s['baseline']:.5f}", f"{gamma:.2f}", f"{time.time() - t0:.1f}"]
            writer.writerow(row + [f"{aurocs[n]:.4f}" for n in types])
            log.flush()
            bar.set_postfix(val=f"{val_p:.4f}", W_batch=row[3], z_std=row[6],
                            **{n[:5]: f"{aurocs[n]:.2f}" for n in types[:2]})
            window = []
        if (step + 1) % a.ckpt_every == 0 or step + 1 == a.steps:
            save_state(state_path, s, step + 1, gen, args)
            rating.save_rater(rater_path, rater, trunk, step + 1, train["vocab"], k=a.draws,
                              optimizer=s["opt_rater"].state_dict(), rng=gen.get_state(), args=args)
            last_ckpt = step + 1
    log.close()
    with torch.no_grad():
        aurocs = rating.aurocs_by_type(rater.logits(feats_all)[0].cpu().numpy(), defect, names)
    final = ", ".join(f"{n} {v:.3f}" for n, v in aurocs.items())
    print(f"wrote {rater_path}, {state_path}, {log_path}" + (f", {warm_path}" if a.primary_warmup > 0 and not a.primary else "") +
          (f"; final AUROC (rater logit z, clean vs type): {final}" if final else ""))


if __name__ == "__main__":
    main()
