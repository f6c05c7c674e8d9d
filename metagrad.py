"""metagrad.py -- train the rater by meta-gradients: Alchemist's explicit bilevel loop, or the exact hypergradient.

Reads:   D/train.pt, D/val.pt (clean), RUN/proxy.pt (the reference proxy, warmed on the training set by proxy.py)
Writes:  RUN/rater.pt (the rater with its frozen trunk; scored by rater.py), RUN/metagrad_log.csv,
         RUN/metagrad_state.pt (everything needed to --resume), RUN/primary_warm.pt (the primary after its warm-up)
Run:     python metagrad.py --data data/shapes --proxy runs/x/proxy.pt --out runs/x [--method alchemist|exact]
Implements the rating stage of Alchemist (arXiv 2512.16905, Sec. 3, Eq. 4-10) and, for comparison, the exact
one-step hypergradient of Learning-to-Reweight (Ren et al. 2018) and DataRater (Calian et al. 2025).

Bilevel problem: mu* = argmin_mu E_val L(theta*(mu)),  theta*(mu) = argmin_theta sum_i W_i(mu) L(theta; x_i).

Setup. theta_ref is the loaded proxy (Eq. 4's warm-up is proxy.py's job). The primary theta starts as a copy of it,
warmed on the clean validation split (--primary-warmup): a model that learns from clean data relies on the captions,
so L(theta; x) - L(theta_ref; x) is large exactly where the training data is bad. A frozen copy of the warmed
primary is the rater's trunk (rater.py); the features of every training row are computed once.

--method alchemist, one step (released code: one training and one validation batch per step):
  W = rater(features of the batch); one (t, noise) per sample, shared by both models (so that the gap is not noise)
  Eq. 5   theta     <- step on  gamma L_val(theta) + (1 - gamma) sum_i W_i L(theta; x_i)   (W detached)
  Eq. 4   theta_ref <- step on  mean_i L(theta_ref; x_i)
  Eq. 6   mu        <- step on  sum_i W_i(mu) (h_i - b),  h_i = L(theta; x_i) - L(theta_ref; x_i)  (the gap, detached)
  --simplified (Eq. 9) takes h_i = L(theta; x_i): the reference is neither needed nor trained.
--method exact, one step: a virtual SGD step theta'(W) = theta - eta sum_i W_i grad L(theta; x_i), built with
  create_graph=True; h_i = d L_val(theta'(W)) / d W_i by back-propagating through it; mu <- step on sum_i W_i(mu)
  (h_i - b), whose gradient is d L_val(theta'(W(mu))) / d mu up to the baseline; then the real Eq. 5 step.
Our deviations, in every method: the baseline b (alchemist_rater_loss), h divided by a running scale s_k (so that
  --logit-decay means the same for every method), an L2 prior on the rater's logits (logit_penalty).
A step costs about 3 plain training steps (alchemist), 2 (simplified), 4-5 (exact): bench/metagrad_cost.py. All in
float32 (no autocast), so that the exact method's double backward is as precise as its finite-difference test.
"""
import argparse
import copy
import csv
import os
import sys
import time

import numpy as np
import torch
from torch.func import functional_call
from tqdm import tqdm

import data
import proxy
import rater

SIGNAL_DECAY = 0.9  # EMAs of the signal's scale s_k and of the weighted batch signal (the REINFORCE baseline b_k)
RATER_CLIP, MODEL_CLIP = 2.0, 1.0  # grad clips; the rater's AdamW has weight decay 0.05 (the released code)


# ----------------------------------------------------------------------------------------------------------------
# The rater's loss: Eq. 6 with a baseline, and the exact hypergradient

def alchemist_rater_loss(W, signal, baseline):
    """Eq. 6 with a baseline: sum_i W_i (h_i - b). W [B] from the rater (with grad), h [B] detached (lower = better
    row), b a float.
    Why (our deviation; docs/METHOD.md, Sec. 2): Eq. 6 as written, sum_i W_i h_i = W_batch sum_i w_inst_i h_i, is
    cheapest at W_batch -> 0 while the mean gap is positive (a first prototype collapsed in 24 steps). b_k, the running
    mean of the weighted batch signal sum_i w_inst_i h_i, is REINFORCE's baseline (Williams 1992): the instance head
    is unchanged (sum_i w_inst_i = 1, so the term -b W_batch sum_i grad w_inst_i vanishes), and the group head sees
    d/dW_batch = sum_i w_inst_i h_i - b_k: it raises W_batch for batches better than usual, lowers it for worse ones."""
    return (W * (signal - baseline)).sum()


def logit_penalty(z, z_group, decay):
    """decay * (mean_i z_i^2 + z_group^2): an L2 prior that keeps the logits where the sigmoid still answers.

    Our second deviation: without it Adam pushes the rows it likes to z = +inf, where sigmoid'(z) = 0 and their order
    (what pruning uses) is left to chance. With it the signal's pull on z_i, about W_batch w_inst_i h_i sigmoid'(z_i)
    / tau, balances at a finite z_i that grows with how good the row is. On z_group it keeps W_batch inside (0, 1)."""
    penalty = z.pow(2).mean()
    return decay * (penalty + z_group.pow(2) if z_group is not None else penalty)


def exact_rater_loss(primary, W, x, tok, t, noise, x_val, tok_val, t_val, noise_val, eta, loss_train=None):
    """L_val(theta'(W)), theta'(W) = theta - eta sum_i W_i grad_theta L(theta; x_i): its gradient in W [B] is the
    exact one-step hypergradient (Ren 2018; Calian 2025). x [B,3,H,W], tok [B,L], t [B], noise [B,3,H,W]; the same
    for the validation batch. loss_train: L(theta; x_i) [B] with its graph, when meta_step has it already."""
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
    d L_val(theta'(W(mu))) / d mu (the chain rule), so the exact method shares Eq. 6's form below. b: draw_batch's
    keys (feats unused). The primary's .grad is left alone: differentiate in a detached copy of W (autograd.grad)."""
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


def draw_batch(gen, feats_all, train, val, batch_size, device, rows=None):
    """Rows, a validation batch and one (t, noise) per sample, all from the run's generator (on the CPU). `rows`:
    the training rows to draw from (--rate-on; default all of them, with the very same draws)."""
    idx = torch.randint(len(train["images"]) if rows is None else len(rows), (batch_size,), generator=gen)
    idx = idx if rows is None else rows[idx]
    vidx = torch.randint(len(val["images"]), (batch_size,), generator=gen)
    shape = (batch_size, *train["images"].shape[1:])
    b = dict(feats=feats_all[idx.to(feats_all.device)], x=data.to_float(train["images"][idx]), tok=train["tokens"][idx],
             t=stratified_t(batch_size, gen), noise=torch.randn(shape, generator=gen),
             x_val=data.to_float(val["images"][vidx]), tok_val=val["tokens"][vidx],
             t_val=stratified_t(batch_size, gen), noise_val=torch.randn(shape, generator=gen))
    return {k: v.to(device) for k, v in b.items()}


def rater_objective(s, z, z_group, W, signal, logit_decay):
    """The rater's loss at step k, sum_i W_i (h_i / s_k - b_k) + logit_penalty(z, z_group, ...), and sum_i w_inst_i
    h_i / s_k, w_inst = W / sum W detached (the batch's weighted signal, which the caller folds into b_{k+1} once the
    step is known to be finite). Updates s["scale"] = s_k, the EMA (SIGNAL_DECAY) of std(h); the first step (None)
    sets s_k = std(h) and s["baseline"] = b_k = the batch's weighted signal."""
    spread = signal.std().item()
    s["scale"] = spread if s["scale"] is None else SIGNAL_DECAY * s["scale"] + (1 - SIGNAL_DECAY) * spread
    signal = signal / max(s["scale"], 1e-12)
    batch_signal = (W.detach() / W.detach().sum() * signal).sum().item()  # sum_i w_inst_i h_i
    if s["baseline"] is None:
        s["baseline"] = batch_signal
    return alchemist_rater_loss(W, signal, s["baseline"]) + logit_penalty(z, z_group, logit_decay), batch_signal


def meta_step(s, b, method="alchemist", simplified=False, gamma=0.5, eta=1e-3, logit_decay=0.05):
    """One step of the chosen method on batch b (draw_batch), as the module docstring lists; updates the models,
    optimisers, scale and baseline in `s` in place. In order: W (Eq. 7-8; W_batch = 1 without the group head);
    L(theta; x_i) and L_val(theta) on b's own (t, noise); the per-row signal h_i (lower = a row whose weight helps),
    detached: exact_signal, Eq. 9's L(theta; x_i) or Eq. 6's gap to the reference; rater_objective, once. A non-finite
    loss raises FloatingPointError before any update; then update() the rater (RATER_CLIP), the primary (Eq. 5) and,
    if used, the reference (Eq. 4), both MODEL_CLIP; b_{k+1} = EMA (SIGNAL_DECAY) of the batch signal. Returns floats
    dict(W_batch, entropy = -sum w_inst log w_inst / log(max(2, B)) (1 = uniform), rater_loss)."""
    net, primary = s["rater"], s["primary"]
    z, z_group = net.logits(b["feats"])  # (B,), () at mu_k
    w_inst = net.instance_weights(z)  # (B,) Eq. 7, sums to 1
    W_batch = torch.sigmoid(z_group) if z_group is not None else torch.ones((), device=z.device)
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
    rater_loss, batch_signal = rater_objective(s, z, z_group, W, signal, logit_decay)
    losses = [loss_i, loss_val, rater_loss] + ([loss_ref_i] if loss_ref_i is not None else [])
    if not all(torch.isfinite(v).all() for v in losses):
        raise FloatingPointError("non-finite loss")
    update(s["opt_rater"], rater_loss, list(net.parameters()), RATER_CLIP)  # mu_{k+1}
    # Eq. 5: theta_{k+1} from gamma L_val + (1 - gamma) sum_i W_i L(theta; x_i), the released code's form
    update(s["opt_primary"], gamma * loss_val + (1 - gamma) * (W.detach() * loss_i).sum(),
           list(primary.parameters()), MODEL_CLIP)
    if loss_ref_i is not None:  # Eq. 4: the reference keeps training on the training set
        update(s["opt_ref"], loss_ref_i.mean(), list(s["reference"].parameters()), MODEL_CLIP)
    s["baseline"] = SIGNAL_DECAY * s["baseline"] + (1 - SIGNAL_DECAY) * batch_signal  # b_{k+1}
    w_inst = w_inst.detach()
    entropy = -(w_inst * w_inst.clamp_min(1e-30).log()).sum() / np.log(max(2, len(w_inst)))  # 1 = uniform
    return dict(W_batch=W_batch.item(), entropy=entropy.item(), rater_loss=rater_loss.item())


# ----------------------------------------------------------------------------------------------------------------
# Plumbing: setup, resume, checkpoints, the log and the command line

def adamw(model, lr, ckpt=None):
    """AdamW as in proxy.train; continues the moments stored with the model's own warm-up, where there are some."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    if ckpt is not None and "optimizer" in ckpt:
        opt.load_state_dict(ckpt["optimizer"])
    for group in opt.param_groups:
        group["lr"] = lr
    return opt


def start_fresh(a, reference, ref_ckpt, train, val, draws, device, warm_path, rated):
    """Warm the primary, freeze a copy as the trunk, compute every row's features, build the rater (standardised on
    the `rated` rows). Returns primary, trunk, rater, features [N, D], the primary's checkpoint, the wall seconds."""
    primary = copy.deepcopy(reference).requires_grad_(True)  # theta_0 = theta_ref
    warm_ckpt = ref_ckpt
    if a.primary:  # warmed by an earlier run: same architecture as the reference, same data
        warm_ckpt = data.load_pt(a.primary, "checkpoint")
        try:
            primary.load_state_dict(warm_ckpt["model"])
        except (KeyError, RuntimeError):
            raise data.DataError(f"{a.primary}: not a primary of this reference's size; warm one with "
                                 f"--primary-warmup instead") from None
        same, rows = warm_ckpt.get("same"), data.fingerprint(val["images"], val["tokens"], train["vocab"])
        if not isinstance(same, dict) or same.get("data") != rows:
            raise data.DataError(f"{a.primary}: not warmed on this data's val.pt; warm one with --primary-warmup")
    elif a.primary_warmup > 0:  # the primary learns from clean data: it comes to rely on the captions
        proxy.train(primary, val["images"], val["tokens"], a.primary_warmup, a.batch_size, a.lr, a.seed, device,
                    proxy.Run(warm_path, train["vocab"], resume=a.resume, desc="primary warm-up (val)"))
        warm_ckpt = data.load_pt(warm_path, "checkpoint")
    trunk = copy.deepcopy(primary).eval().requires_grad_(False)  # the rater's frozen view (rater.py)
    tic = time.time()
    raw = rater.input_features(trunk, train["images"], train["tokens"], device, a.rater_input, draws,
                               a.content_blocks).to(device)  # (N, 2K + C) losses, (N, C) content
    seconds = {"warmup": float(warm_ckpt.get("seconds", 0.0)) if a.primary or a.primary_warmup > 0 else 0.0,
               "features": time.time() - tic, "meta": 0.0}
    torch.manual_seed(a.seed)
    net = rater.Rater(raw.shape[1], width=trunk.config["width"], temperature=a.temperature,
                      use_group=not a.no_group).to(device)
    net.fit_standardisation(raw[rated.to(device)])  # the unseen rows stay unseen, even by the standardisation
    return primary, trunk, net, net.standardise(raw), warm_ckpt, seconds  # computed once: the trunk is frozen


def choose_rated(n, fraction, seed):
    """The rows meta-trained on (--rate-on): round(fraction n) of n drawn from `seed`, sorted int64 [M]; all at 1."""
    if fraction >= 1:
        return torch.arange(n)
    m = min(n, max(1, round(fraction * n)))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).narrow(0, 0, m).sort().values


SAME_ON_RESUME = ["method", "simplified", "no_group", "batch_size", "temperature", "draws", "schedule", "seed",
                  "rater_input", "content_blocks", "rate_on"]  # the others (e.g. --steps, --lr) may change


def setup(a, args, device, state_path, warm_path):
    """theta_ref, the primary, the frozen trunk, every row's features, the rater, the optimisers and the generator,
    fresh or from metagrad_state.pt (--resume). Returns train, val, draws, the run's state `s`, gen, the saved state."""
    uses_ref = a.method == "alchemist" and not a.simplified  # only Eq. 4-6 needs (and trains) theta_ref
    try:
        train, val = data.load_splits(a.data, "train", "val")
        reference, ref_ckpt = proxy.load_proxy(a.proxy, device, train)  # theta_ref, warmed by proxy.py (Eq. 4)
        if a.content_blocks > reference.config["depth"]:
            raise data.DataError(f"--content-blocks {a.content_blocks}: the proxy has {reference.config['depth']} "
                                 "blocks")
        size = train["images"].shape[-1]
        draws = proxy.fixed_draws(a.draws, (3, size, size), seed=rater.DRAWS_SEED)
        args["data_fingerprint"] = data.fingerprint(train["images"], train["tokens"], val["images"], val["tokens"],
                                                    train["vocab"])  # a resumed run rates the data it started with
        saved = data.load_pt(state_path, "state") if a.resume and os.path.exists(state_path) else None
        if saved is not None and not {"args", "step", "feats"} <= set(saved):
            raise data.DataError(f"{state_path}: not a metagrad.py state; remove it or drop --resume")
        changed = [k if k != "data_fingerprint" else "data (train.pt, val.pt)" for k in SAME_ON_RESUME +
                   ["data_fingerprint"] if saved and saved["args"].get(k) != args.get(k)]
        if changed:
            raise data.DataError(f"{state_path}: saved with other {', '.join(changed)}; pass the same data and flags, "
                                 "or remove it and drop --resume")
        data.check_out(a.out)
        if val["meta"].get("val_source") == "same rows":  # data.py --from-folder without --val-from
            print(f"note: {a.data}/val.pt was drawn from the same, possibly dirty, rows as train.pt: the rater learns "
                  f"what \"good\" means from it (import a curated folder with data.py --val-from)")
        rated = choose_rated(len(train["images"]), a.rate_on, a.seed) if saved is None else saved["rated_rows"]
        if saved is None:
            primary, trunk, net, feats_all, warm_ckpt, seconds = start_fresh(a, reference, ref_ckpt, train, val,
                                                                             draws, device, warm_path, rated)
        else:  # everything from metagrad_state.pt; the reference is restored in place
            primary, trunk = copy.deepcopy(reference).requires_grad_(True), proxy.DiT(**saved["trunk_config"])
            primary.load_state_dict(saved["primary"])
            trunk.load_state_dict(saved["trunk"])
            trunk = trunk.to(device).eval().requires_grad_(False)
            if saved["reference"] is not None:
                reference.load_state_dict(saved["reference"])
            net, warm_ckpt, seconds = rater.Rater(**saved["rater_config"]), None, saved["seconds"]
            net.load_state_dict(saved["rater"])
            net, feats_all = net.to(device), saved["feats"].to(device)
    except data.DataError as e:
        data.fail(str(e))
    os.makedirs(a.out, exist_ok=True)
    reference.requires_grad_(uses_ref)
    s = dict(primary=primary, reference=reference if uses_ref else None, rater=net, trunk=trunk, feats=feats_all,
             baseline=None, scale=None, rated=rated, seconds=seconds, meta_before=seconds["meta"], clock=time.time(),
             opt_primary=adamw(primary, a.lr, warm_ckpt),
             opt_ref=adamw(reference, a.lr, ref_ckpt if saved is None else None) if uses_ref else None,
             opt_rater=torch.optim.AdamW(net.parameters(), lr=a.rater_lr, betas=(0.9, 0.95), weight_decay=0.05))
    gen = torch.Generator().manual_seed(a.seed)  # the batches and their draws
    if saved is not None:
        for k in [k for k in ["opt_primary", "opt_ref", "opt_rater"] if s[k] is not None]:
            s[k].load_state_dict(saved[k])
            for group in s[k].param_groups:  # a resumed run may change the learning rates (e.g. lower --lr)
                group["lr"] = a.rater_lr if k == "opt_rater" else a.lr
        s["baseline"], s["scale"] = saved["baseline"], saved["scale"]
        gen.set_state(saved["rng"])
    return train, val, draws, s, gen, saved


def save_state(path, s, step, gen, args, window):
    """Everything a resumed run needs to end where an uninterrupted one would (the features and `window` too)."""
    data.atomic_save({"step": step, "rng": gen.get_state(), "baseline": s["baseline"], "scale": s["scale"],
                      "args": args, "window": window, "feats": s["feats"].cpu(),
                      "rater_config": dict(s["rater"].config), "rated_rows": s["rated"], "seconds": dict(s["seconds"]),
                      "trunk": s["trunk"].state_dict(), "trunk_config": dict(s["trunk"].config),
                      **{k: s[k].state_dict() if s[k] is not None else None
                         for k in ["primary", "reference", "rater", "opt_primary", "opt_ref", "opt_rater"]}}, path)


class MetaLog:
    """metagrad_log.csv: losses on a fixed validation batch with fixed draws, the rater's weights and logits, running
    AUROCs. On resume, keeps only the rows up to the checkpoint's step `start`, so that no step is logged twice."""

    def __init__(self, path, start, train, val, rated, draws, device):
        self.fixed_val = (data.to_float(val["images"][:256]).to(device), val["tokens"][:256].to(device))
        self.defect, self.names, self.rated, self.draws = train["defect"].numpy(), train["defect_names"], rated, draws
        self.types = [self.names[k] for k in range(1, len(self.names)) if (self.defect == k).any()]  # [] if no truth
        header = ["step", "val_primary", "val_reference", "W_batch", "z_min", "z_max", "z_std", "entropy",
                  "rater_loss", "baseline", "gamma", "seconds"] + list(self.aurocs(np.zeros(len(self.defect))))
        rows = []
        if start > 0 and os.path.exists(path):
            with open(path, newline="") as f:
                rows = [r for r in list(csv.reader(f))[1:] if r and int(r[0]) <= start]
        self.file = open(path, "w", newline="")
        self.writer, self.t0 = csv.writer(self.file), time.time()
        self.writer.writerows([header] + rows)

    def aurocs(self, z):
        """auroc_<type> on all rows, and with --rate-on < 1 unseen_auroc_<type> on the rows never meta-trained on."""
        cells = {f"auroc_{n}": v for n, v in rater.aurocs_by_type(z, self.defect, self.names).items()}
        if len(self.rated) < len(z):
            cells.update(rater.seen_unseen_report(z, self.defect, self.names, self.rated.numpy()))
        return {k: v for k, v in cells.items() if k.split("auroc_")[1] in self.types and not k.startswith("seen_")}

    def write(self, s, step, window, gamma):
        """Log row `step` from the run's state and the meta steps since the last row; returns the progress bar's."""
        with torch.no_grad():
            z_all = s["rater"].logits(s["feats"])[0].cpu().numpy()  # (N,): cheap, the features are precomputed
            loss = lambda model: proxy.sample_loss(model, *self.fixed_val, self.draws).mean().item()
            val_p, val_r = loss(s["primary"]), None if s["reference"] is None else loss(s["reference"])
        aurocs, mean = self.aurocs(z_all), lambda key: np.mean([w[key] for w in window])
        row = [step, f"{val_p:.5f}", "" if val_r is None else f"{val_r:.5f}", f"{mean('W_batch'):.4f}",
               f"{z_all.min():.3f}", f"{z_all.max():.3f}", f"{z_all.std():.3f}", f"{mean('entropy'):.4f}",
               f"{mean('rater_loss'):.5f}", "" if s["baseline"] is None else f"{s['baseline']:.5f}", f"{gamma:.2f}",
               f"{time.time() - self.t0:.1f}"]
        self.writer.writerow(row + [f"{v:.4f}" for v in aurocs.values()])
        self.file.flush()
        return dict(val=f"{val_p:.4f}", W_batch=row[3], z_std=row[6],
                    **{n[:5]: f"{aurocs['auroc_' + n]:.2f}" for n in self.types[:2]})


def parse_args(argv):
    p = argparse.ArgumentParser(description="Train the rater by meta-gradients (Alchemist Eq. 4-10, or exactly).")
    p.add_argument("--data", required=True, help="data folder made by data.py (train.pt rated, val.pt the outer loss)")
    p.add_argument("--proxy", required=True, help="the reference proxy, RUN/proxy.pt from proxy.py (Eq. 4 warm-up)")
    p.add_argument("--out", required=True, help="run folder; writes rater.pt, metagrad_log.csv, metagrad_state.pt")
    p.add_argument("--method", choices=["alchemist", "exact"], default="alchemist", help="alchemist: Eq. 4-6 on the "
                   "loss gap; exact: back-propagate through a virtual step")
    p.add_argument("--simplified", action="store_true", help="alchemist only: Eq. 9, the gap is L(theta; x) alone")
    p.add_argument("--schedule", choices=["constant", "seal"], default="constant",
                   help="gamma in Eq. 5: constant --gamma, or SEAL's 1.0 dropping by 0.03 per epoch of the rows")
    p.add_argument("--gamma", type=data.finite, default=0.5, help="the validation loss's share in Eq. 5 (constant)")
    p.add_argument("--no-group", action="store_true", help="no group head: W_batch = 1 (instance weights only)")
    p.add_argument("--steps", type=int, default=1000, help="meta steps (10 epochs of 8000 rows at batch 64 is 1250)")
    p.add_argument("--batch-size", type=int, default=64, help="training rows per step, and validation rows per step")
    p.add_argument("--primary-warmup", type=int, default=1000, help="the primary's steps on val first (more: stronger)")
    p.add_argument("--lr", type=data.finite, default=1e-3, help="AdamW lr of the primary, the reference, the warm-up")
    p.add_argument("--rater-lr", type=data.finite, default=1e-3, help="AdamW lr of the rater")
    p.add_argument("--eta", type=data.finite, help="exact only: the virtual SGD step size (default: --lr)")
    p.add_argument("--logit-decay", type=data.finite, default=0.05, help="L2 prior on the rater's logits z, z_group")
    p.add_argument("--primary", help="a primary warmed on val by an earlier run (primary_warm.pt): no --primary-warmup")
    p.add_argument("--temperature", type=data.finite, default=0.2, help="tau in softmax(sigmoid(z) / tau) (Eq. 7)")
    p.add_argument("--draws", type=int, default=rater.K_DRAWS, help="K fixed (t, noise) draws: features, logged losses")
    p.add_argument("--rater-input", choices=rater.INPUTS, default="losses", help="losses: the trunk's log losses with "
                   "and without the caption, and its pooled state; content: the sample through its first blocks")
    p.add_argument("--content-blocks", type=int, default=rater.CONTENT_BLOCKS, help="content only: trunk blocks used")
    p.add_argument("--rate-on", type=float, default=1.0, metavar="FRACTION", help="meta-train the rater on this "
                   "random fraction of the training rows (seed --seed); rater.py reports the unseen rows apart")
    p.add_argument("--log-every", type=int, default=25, help="log (CSV and progress bar) every N steps")
    p.add_argument("--ckpt-every", type=int, default=200, help="checkpoint (metagrad_state.pt, rater.pt) every N steps")
    p.add_argument("--seed", type=int, default=0, help="seed for the rater's initialisation, batches and draws")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when present")
    p.add_argument("--resume", action="store_true", help="continue from RUN/metagrad_state.pt if it exists")
    p.error = data.arg_error
    a = p.parse_args(argv)
    if (min(a.steps, a.batch_size, a.draws, a.log_every, a.ckpt_every) < 1
            or min(a.lr, a.rater_lr, a.temperature, a.lr if a.eta is None else a.eta) <= 0):
        data.fail("--steps, --batch-size, --draws, --log-every, --ckpt-every, --lr, --rater-lr, --eta and "
                  "--temperature must be positive")
    if a.primary_warmup < 0 or not 0 <= a.gamma <= 1 or a.logit_decay < 0:
        data.fail("--primary-warmup and --logit-decay must be >= 0 and --gamma in [0, 1]")
    if not 0 < a.rate_on <= 1 or a.content_blocks < 1:
        data.fail("--rate-on must be in (0, 1] and --content-blocks at least 1")
    if a.simplified and a.method == "exact":
        data.fail("--simplified is a variant of --method alchemist (Eq. 9); the exact method has no loss gap")
    return a


def main(argv=None):
    a = parse_args(argv)
    device, eta = data.pick_device(a.device), a.eta if a.eta is not None else a.lr
    args = {k: v for k, v in vars(a).items() if v is not None}
    names = ["metagrad_state.pt", "rater.pt", "metagrad_log.csv", "primary_warm.pt"]
    state_path, rater_path, log_path, warm_path = [os.path.join(a.out, name) for name in names]
    train, val, draws, s, gen, saved = setup(a, args, device, state_path, warm_path)
    start = last_ckpt = saved["step"] if saved is not None else 0
    window = saved.get("window", []) if saved is not None else []  # the steps the next log row averages
    log = MetaLog(log_path, start, train, val, s["rated"], draws, device)
    bar = tqdm(range(start, a.steps), desc=f"metagrad {a.method}{' simplified' if a.simplified else ''}",
               initial=start, total=a.steps, dynamic_ncols=True)
    for step in bar:
        epoch = step * a.batch_size // len(train["images"])
        gamma = max(0.0, 1.0 - 0.03 * epoch) if a.schedule == "seal" else a.gamma  # SEAL's upper-level weight
        b = draw_batch(gen, s["feats"], train, val, a.batch_size, device, s["rated"])
        try:
            window.append(meta_step(s, b, a.method, a.simplified, gamma, eta, a.logit_decay))
        except FloatingPointError:
            bar.close()
            last = f"{state_path} (step {last_ckpt})" if last_ckpt else "none written yet"
            data.fail(f"non-finite loss at step {step + 1}; lower --lr or --rater-lr. "
                      f"Last good checkpoint kept: {last}")
        if (step + 1) % a.log_every == 0 or step + 1 == a.steps:
            bar.set_postfix(**log.write(s, step + 1, window, gamma))
            window = []
        if (step + 1) % a.ckpt_every == 0 or step + 1 == a.steps:  # rater.pt, then the state (a kill between: redo)
            s["seconds"]["meta"] = s["meta_before"] + time.time() - s["clock"]  # over every run, on --resume
            rater.save_rater(rater_path, s["rater"], s["trunk"], step + 1, train["vocab"], k=a.draws,
                             optimizer=s["opt_rater"].state_dict(), rng=gen.get_state(), args=args, input=a.rater_input,
                             content_blocks=a.content_blocks, rated_rows=s["rated"], n_rows=len(log.defect),
                             seconds=dict(s["seconds"]))
            save_state(state_path, s, step + 1, gen, args, window)
            last_ckpt = step + 1
    log.file.close()
    with torch.no_grad():
        z_all = s["rater"].logits(s["feats"])[0].cpu().numpy()
    check = rater.canary_report(s["rater"], s["trunk"], data.load_pt(rater_path, "rater"), val, z_all, device)
    if rater.canary_warning(check):  # the direction check on val: one warning line on stderr when it fails
        print(rater.canary_warning(check), file=sys.stderr)
    final = rater.auroc_line(log.aurocs(z_all))[len("AUROC clean vs "):]
    print(f"wrote {rater_path}, {state_path}, {log_path}" + (f", {warm_path}" if a.primary_warmup > 0 and not
          a.primary else "") + (f"; final AUROC (rater logit z, clean vs type): {final}" if final else ""))


if __name__ == "__main__":
    main()
