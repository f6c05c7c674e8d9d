"""Exercise 3: the Alchemist meta step (rater.Rater.instance_weights / forward, metagrad.alchemist_rater_loss /
rater_objective / meta_step).

Each step of meta_step is compared with the same step made by hand on copies of the models (float64, tiny DiTs on
random 8x8 pictures); the learning rule is checked on a synthetic quality signal; a two-step snapshot of the
reference implementation (course/snapshots/ex3_meta_step.json, made by course/make_snapshots.py) catches what is left.
"""
import copy
import json
import os
import sys

import numpy as np
import pytest
import torch

import metagrad
import proxy
import rater
from api import exercise_api
from tiny import FEATS, meta_batch, meta_state, meta_steps_snapshot, new_rater, plain_step, same_weights

Rater, alchemist_rater_loss, rater_objective, meta_step = exercise_api(3)
rf_loss = exercise_api(1)[0]  # exercise 1, which this one needs

SNAPSHOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "snapshots", "ex3_meta_step.json")


def features(n=6, seed=0):
    return torch.randn(n, FEATS, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------------------
# Eq. 7/8: the weights

def test_eq7_instance_weights_are_the_softmax_of_sigmoid_z_over_tau():
    """Eq. 7: w_inst_i = exp(sigmoid(z_i) / tau) / sum_j exp(sigmoid(z_j) / tau): they sum to 1, equal z are uniform."""
    r = new_rater(temperature=0.3)
    z = torch.tensor([-2.0, 0.0, 0.5, 3.0], dtype=torch.float64)
    e = torch.exp(torch.sigmoid(z) / 0.3)
    assert torch.allclose(r.instance_weights(z), e / e.sum(), rtol=1e-12), "softmax over the batch of sigmoid(z) / tau"
    assert torch.allclose(r.instance_weights(torch.full((5,), 1.7, dtype=torch.float64)),
                          torch.full((5,), 0.2, dtype=torch.float64), rtol=1e-12)


def test_the_temperature_caps_the_ratio_of_two_weights_at_e_to_the_1_over_tau():
    """sigmoid lies in (0, 1), so w_max / w_min < e^(1/tau) however extreme the logits; the order follows z."""
    z = torch.tensor([-30.0, -1.0, 0.0, 1.0, 30.0], dtype=torch.float64)
    for tau in (0.2, 1.0):
        w = new_rater(temperature=tau).instance_weights(z)
        ratio = (w.max() / w.min()).item()
        assert 0.999 * np.exp(1 / tau) < ratio <= np.exp(1 / tau) * (1 + 1e-9), (tau, ratio)
        assert torch.all(w[1:] > w[:-1])


def test_eq8_forward_gives_W_equal_w_inst_times_W_batch_with_z_and_W_batch():
    """Eq. 8: forward(f) = (W, z, W_batch): z and the z_group from logits(f), W_batch = sigmoid(z_group),
    W = w_inst * W_batch, so sum_i W_i = W_batch; W stays differentiable."""
    r, f = new_rater(), features()
    W, z, W_batch = r(f)
    z_ref, z_group = r.logits(f)
    assert torch.allclose(z, z_ref, rtol=1e-12) and torch.allclose(W_batch, torch.sigmoid(z_group), rtol=1e-12), \
        "z and W_batch = sigmoid(z_group) come from self.logits(f)"
    assert torch.allclose(W, r.instance_weights(z_ref) * torch.sigmoid(z_group), rtol=1e-12), \
        "Eq. 8: W = w_inst * W_batch"
    assert torch.allclose(W.sum(), W_batch, rtol=1e-12) and W.requires_grad, "W must stay differentiable"


def test_without_the_group_head_W_batch_is_one_and_W_is_the_instance_softmax():
    """use_group=False: W_batch is a tensor 1 (the features' dtype) and W = w_inst."""
    r, f = new_rater(use_group=False), features()
    W, z, W_batch = r(f)
    assert torch.is_tensor(W_batch) and W_batch.dtype == f.dtype and W_batch.item() == 1.0, \
        "without the group head W_batch is torch.ones((), dtype=f.dtype)"
    assert torch.allclose(W, r.instance_weights(r.logits(f)[0]), rtol=1e-12)


def test_permuting_a_batch_permutes_W_and_leaves_W_batch_unchanged():
    """The rows' weights follow the rows; the group weight sees the batch as a set."""
    r, f = new_rater(), features(8)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    W, _, W_batch = r(f)
    W_p, _, W_batch_p = r(f[perm])
    assert torch.allclose(W_p, W[perm], rtol=1e-10) and torch.allclose(W_batch_p, W_batch, rtol=1e-10)


# ----------------------------------------------------------------------------------------------------------------
# Eq. 6 with the baseline, and the rater's objective

def test_eq6_with_a_baseline_is_the_sum_of_W_times_signal_minus_baseline():
    """alchemist_rater_loss(W, h, b) = sum_i W_i (h_i - b): a scalar, differentiable in W."""
    W = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64, requires_grad=True)
    h = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    loss = alchemist_rater_loss(W, h, 0.25)
    assert loss.dim() == 0 and abs(loss.item() - (0.1 * 0.75 + 0.2 * -2.25 + 0.3 * 0.25)) < 1e-12, \
        f"sum_i W_i (h_i - b) = -0.3, not {loss.item() if loss.dim() == 0 else loss}"
    assert torch.allclose(torch.autograd.grad(loss, W)[0], h - 0.25, rtol=1e-12)


def test_the_baseline_leaves_the_instance_head_alone_and_sets_the_sign_of_W_batchs_gradient():
    """d/dW_batch = sum_i w_inst_i h_i - b, whatever b; the instance head's gradient does not depend on b."""
    r, f = new_rater(), features(16)
    gap = torch.rand(16, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5
    with torch.no_grad():
        weighted = (r.instance_weights(r.logits(f)[0]) * gap).sum().item()
    inst = list(r.instance.parameters())
    out = {}
    for b in [0.0, weighted - 0.3, weighted + 0.3]:
        W, _, W_batch = r(f)
        g = torch.autograd.grad(alchemist_rater_loss(W, gap, b), [W_batch] + inst)
        out[b] = g
    for b in out:
        assert all(torch.allclose(x, y, atol=1e-12) for x, y in zip(out[0.0][1:], out[b][1:])), "instance head moved"
    assert abs(out[0.0][0].item() - weighted) < 1e-10, "without a baseline: d/dW_batch = the weighted gap > 0"
    assert out[weighted - 0.3][0] > 0 > out[weighted + 0.3][0]


def test_rater_objective_is_the_scaled_signal_minus_the_running_baseline_plus_the_logit_prior():
    """s_k = 0.9 s_{k-1} + 0.1 std(h); loss = sum_i W_i (h_i / s_k - b_k) + decay (mean z^2 + z_group^2); b_k moves
    later."""
    r, f = new_rater(), features(16)
    signal = torch.rand(16, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5
    z, z_group = r.logits(f)
    W = r.instance_weights(z) * torch.sigmoid(z_group)
    w_inst = (W / W.sum()).detach()
    s = dict(scale=2.0, baseline=0.7)  # a run in progress
    loss, batch_signal = rater_objective(s, z, z_group, W, signal, 0.05)
    scale = 0.9 * 2.0 + 0.1 * signal.std().item()
    assert s["scale"] == pytest.approx(scale, rel=1e-12), "the running scale: an EMA (decay 0.9) of std(h)"
    assert s["baseline"] == 0.7, "b_k is updated by meta_step after the step, not here"
    assert batch_signal == pytest.approx((w_inst * signal / scale).sum().item(), rel=1e-12)
    expected = (W * (signal / scale - 0.7)).sum() + 0.05 * (z.pow(2).mean() + z_group.pow(2))
    assert torch.allclose(loss, expected, rtol=1e-12), \
        f"loss {loss.item():.6g}, expected sum_i W_i (h_i / s_k - b_k) + decay (mean z^2 + z_group^2) = " \
        f"{expected.item():.6g}"


def test_rater_objectives_first_step_sets_the_scale_and_the_baseline_from_the_batch():
    """First call (None, None): s_1 = std(h) and b_1 = sum_i w_inst_i h_i / s_1, so W_batch feels only the prior."""
    r, f = new_rater(), features(16)
    signal = torch.rand(16, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5
    z, z_group = r.logits(f)
    W = r.instance_weights(z) * torch.sigmoid(z_group)
    s = dict(scale=None, baseline=None)
    loss, batch_signal = rater_objective(s, z, z_group, W, signal, 0.05)
    assert s["scale"] == pytest.approx(signal.std().item(), rel=1e-12) and s["baseline"] == batch_signal
    assert torch.allclose(torch.autograd.grad(loss, z_group)[0], 0.1 * z_group, atol=1e-12), \
        "on the first step b_1 is the batch signal itself, so the z_group feels the prior alone"


# ----------------------------------------------------------------------------------------------------------------
# One meta step against steps made by hand

@pytest.mark.parametrize("simplified", [False, True])
def test_the_signal_is_the_loss_gap_on_the_batchs_own_draws_before_either_model_moves(monkeypatch, simplified):
    """Eq. 6: h_i = L(theta; x_i) - L(theta_ref; x_i) on the batch's (t, noise) (Eq. 9: L(theta; x_i)), detached, and
    the returned W_batch, entropy (1 = uniform) and rater loss follow from it."""
    s, b = meta_state(), meta_batch()
    draws = (b["x"], b["tok"], b["t"], b["noise"])
    with torch.no_grad():
        gap = rf_loss(s["primary"], *draws) - (0 if simplified else rf_loss(s["reference"], *draws))
        z, z_group = copy.deepcopy(s["rater"]).logits(b["feats"])
    seen, real = [], rater_objective  # meta_step must call it by its name in its module:
    monkeypatch.setattr(sys.modules[real.__module__], real.__name__, lambda *a: seen.append(a) or real(*a))
    out = meta_step(s, b, simplified=simplified)
    assert len(seen) == 1, "meta_step must call rater_objective once"
    assert not seen[0][4].requires_grad, "the signal must be detached"
    assert torch.allclose(seen[0][4], gap, rtol=1e-10, atol=1e-12), "the gap of the two models on the batch's draws"
    w_inst = torch.softmax(torch.sigmoid(z) / s["rater"].temperature, 0)
    assert s["baseline"] == pytest.approx((w_inst * gap).sum().item() / gap.std().item(), rel=1e-9)
    assert out["W_batch"] == pytest.approx(torch.sigmoid(z_group).item(), rel=1e-12)
    assert out["entropy"] == pytest.approx((-(w_inst * w_inst.log()).sum() / np.log(4)).item(), rel=1e-9)
    assert out["rater_loss"] == pytest.approx(float(real(dict(scale=None, baseline=None), z, z_group,
                                                         w_inst * torch.sigmoid(z_group), gap, 0.05)[0]), rel=1e-9)


def constant_rater():
    """A rater without group head whose weights are all zero: z = 0 for every row, so W_i = 1 / B."""
    r = new_rater(use_group=False)
    with torch.no_grad():
        for p in r.parameters():
            p.zero_()
    return r


def test_constant_weights_reproduce_plain_training():
    """W_i = 1/B and gamma 0: the primary takes exactly a plain AdamW step (clip 1) on mean_i L(theta; x_i), and so
    does the reference (Eq. 4)."""
    s, b = meta_state(r=constant_rater()), meta_batch()
    loss = lambda m: rf_loss(m, b["x"], b["tok"], b["t"], b["noise"]).mean()
    primary, reference = plain_step(s["primary"], loss), plain_step(s["reference"], loss)
    meta_step(s, b, gamma=0.0)
    assert same_weights(s["primary"], primary, atol=1e-10), "Eq. 5 with W = 1/B, gamma = 0 is plain training"
    assert same_weights(s["reference"], reference, atol=1e-10), "Eq. 4: the reference steps on the plain mean loss"


def one_row_rater(row, n=4):
    """No group head, tau 1e-3: weights one-hot on `row` for the features it returns (z = +-80 from feature 0)."""
    r = new_rater(use_group=False, temperature=1e-3)
    with torch.no_grad():
        for p in r.parameters():
            p.zero_()
        r.adapter[0].weight[0, 0] = r.instance[0].weight[0, 0] = 1.0
        r.instance[2].weight[0, 0], r.instance[2].bias[0] = 100.0, -20.0
    f = torch.full((n, FEATS), -3.0, dtype=torch.float64)
    f[row] = 3.0
    return r, f


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_eq5_the_primary_steps_on_the_weighted_rows_and_the_validation_batch_in_the_share_gamma(gamma):
    """Eq. 5: all weight on row 2 and gamma 0 is a plain step on row 2 alone; gamma 1 a plain step on L_val alone."""
    r, f = one_row_rater(2)
    s, b = meta_state(r=r), meta_batch()
    b["feats"] = f
    row = lambda m: rf_loss(m, b["x"][2:3], b["tok"][2:3], b["t"][2:3], b["noise"][2:3]).sum()
    val = lambda m: rf_loss(m, b["x_val"], b["tok_val"], b["t_val"], b["noise_val"]).mean()
    expected = plain_step(s["primary"], row if gamma == 0 else val)
    meta_step(s, b, gamma=gamma)
    assert same_weights(s["primary"], expected, atol=1e-10), \
        "theta steps on gamma L_val + (1 - gamma) sum_i W_i L(theta; x_i)" if gamma == 0 else "gamma = 1: L_val alone"


@pytest.mark.parametrize("simplified", [False, True])
def test_the_reference_moves_in_alchemist_and_stays_in_the_simplified_method(simplified):
    """Eq. 4 trains theta_ref in the full method; Eq. 9 has no reference, so it must not move."""
    s, b = meta_state(), meta_batch()
    before = copy.deepcopy(s["reference"])
    meta_step(s, b, simplified=simplified)
    assert same_weights(s["reference"], before, atol=0) == simplified, \
        "the simplified method must not move the reference" if simplified else "Eq. 4: the reference must take its step"


def test_when_primary_and_reference_agree_the_rater_feels_no_gradient():
    """Primary = reference: every gap is 0, so with no logit prior the rater's step is AdamW's weight decay alone:
    the models' steps (W detached in Eq. 5) give the rater no gradient."""
    s, b = meta_state(), meta_batch()
    s["reference"] = copy.deepcopy(s["primary"])
    s["opt_ref"] = metagrad.adamw(s["reference"], 1e-3)
    before = {k: v.clone() for k, v in s["rater"].named_parameters()}
    meta_step(s, b, logit_decay=0.0)
    for k, p in s["rater"].named_parameters():
        assert torch.allclose(p, before[k] * (1 - 1e-3 * 0.05), rtol=1e-12, atol=1e-15), f"{k} got a gradient"


def test_the_rater_takes_one_adamw_step_on_rater_objective():
    """mu_{k+1}: one step of s['opt_rater'] (clip 2.0) on rater_objective of the batch's gap, nothing else."""
    s, b = meta_state(), meta_batch()
    r = copy.deepcopy(s["rater"])
    opt = torch.optim.AdamW(r.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    draws = (b["x"], b["tok"], b["t"], b["noise"])
    with torch.no_grad():
        gap = rf_loss(s["primary"], *draws) - rf_loss(s["reference"], *draws)
    z, z_group = r.logits(b["feats"])
    W = r.instance_weights(z) * torch.sigmoid(z_group)
    loss, _ = rater_objective(dict(scale=None, baseline=None), z, z_group, W, gap, 0.05)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(r.parameters(), 2.0)
    opt.step()
    meta_step(s, b)
    assert same_weights(s["rater"], r, atol=1e-12), "the rater is not one AdamW step (clip 2.0) on rater_objective"


class WorseOnFirstRows(proxy.DiT):
    """A reference whose prediction is off by 10 on the first two rows of every batch: its loss there is raised."""

    def forward(self, x, t, tokens):
        v = super().forward(x, t, tokens)
        return v + torch.cat([torch.full_like(v[:2], 10.0), torch.zeros_like(v[2:])])


def test_a_reference_worse_on_chosen_rows_makes_the_rater_raise_those_rows_logits():
    """A raised L(theta_ref; x_i) lowers rows 0 and 1's gap: after 10 meta steps the rater prefers them."""
    s, b = meta_state(), meta_batch()
    worse = WorseOnFirstRows(**s["reference"].config).double()
    worse.load_state_dict(s["reference"].state_dict())
    s["reference"], s["opt_ref"] = worse, metagrad.adamw(worse, 1e-3)
    s["opt_rater"] = torch.optim.AdamW(s["rater"].parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05)
    b["feats"][:2, 0], b["feats"][2:, 0] = 2.0, -2.0  # the chosen rows are readable from the features
    margin = lambda: (lambda z: z[:2].mean() - z[2:].mean())(s["rater"].logits(b["feats"])[0]).item()
    before = margin()
    for _ in range(10):
        meta_step(s, b)
    assert margin() > before + 0.5, f"logit margin of the better rows {before:.3f} -> {margin():.3f}"


class Broken(proxy.DiT):
    def forward(self, x, t, tokens):
        return super().forward(x, t, tokens) * float("nan")


def test_a_non_finite_loss_raises_FloatingPointError_before_any_update():
    """A NaN in any loss: FloatingPointError, and neither the primary nor the rater has moved."""
    s, b = meta_state(), meta_batch()
    broken = Broken(**s["reference"].config).double()
    broken.load_state_dict(s["reference"].state_dict())
    s["reference"] = broken
    primary, r = copy.deepcopy(s["primary"]), copy.deepcopy(s["rater"])
    with pytest.raises(FloatingPointError):
        meta_step(s, b)
    assert same_weights(s["primary"], primary, atol=0) and same_weights(s["rater"], r, atol=0), \
        "check the losses for finiteness before any update"


def test_two_meta_steps_match_the_reference_implementations_snapshot():
    """Two alchemist steps from fixed seeds (float64): the rater's weights, fingerprints of both models, the running
    scale and baseline and the returned numbers match course/snapshots/ex3_meta_step.json to 1e-8."""
    with open(SNAPSHOT) as f:
        expected = json.load(f)
    got = meta_steps_snapshot()
    for key in ["primary", "reference"]:
        assert np.allclose(got[key], expected[key], rtol=1e-8, atol=1e-10), f"{key} after two steps differs"
    for k, v in expected["rater"].items():
        assert np.allclose(got["rater"][k], v, rtol=1e-8, atol=1e-10), f"rater {k} after two steps differs"
    assert np.allclose([got["scale"], got["baseline"]], [expected["scale"], expected["baseline"]], rtol=1e-8), \
        "running scale or baseline after two steps differs"
    for a, e in zip(got["returned"], expected["returned"]):
        assert all(np.isclose(a[k], e[k], rtol=1e-8) for k in e), f"returned {a}, expected {e}"


# ----------------------------------------------------------------------------------------------------------------
# The learning rule on a synthetic signal

def test_a_rater_trained_on_a_synthetic_quality_signal_ranks_by_it():
    """300 steps on h_i = -quality_i + noise (std 2) + a falling drift: AUROC of good vs bad rows > 0.9, |z| < 10,
    W_batch inside (0.05, 0.95) throughout."""
    quality = torch.randn(512, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(512, 6, generator=g)
    feats[:, 0] = quality  # the quality is readable from the features
    r = Rater(6, width=16)
    opt = torch.optim.AdamW(r.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.05)
    s, history, steps = dict(scale=None, baseline=None), [], 300
    for k in range(steps):
        rows = torch.randint(512, (64,), generator=g)
        z, z_group = r.logits(feats[rows])
        W_batch = torch.sigmoid(z_group)
        W = r.instance_weights(z) * W_batch
        signal = -quality[rows] + 2.0 * torch.randn(64, generator=g) - 3.0 * k / steps
        loss, batch_signal = rater_objective(s, z, z_group, W, signal, 0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        s["baseline"] = 0.9 * s["baseline"] + 0.1 * batch_signal
        history.append(W_batch.item())
    with torch.no_grad():
        z = r.logits(feats)[0]
    auroc = rater.auroc(z.numpy(), (quality > 0).numpy(), (quality <= 0).numpy())
    assert auroc > 0.9, f"AUROC {auroc:.3f}: the rater does not rank by quality"
    assert z.abs().max() < 10, "the logit prior must keep z bounded"
    assert 0.05 < min(history) and max(history) < 0.95, \
        f"W_batch left (0.05, 0.95): {min(history):.3f}-{max(history):.3f}"
