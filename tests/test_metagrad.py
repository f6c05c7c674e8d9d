"""Properties of the meta-gradient loop (metagrad.py): the exact hypergradient, the baseline, resume, the CLI."""
import copy
import csv

import pytest
import torch

import data
import metagrad
import proxy
import rater

TINY = dict(image_size=16, patch=4, width=16, depth=1, heads=2, text_depth=1, max_tokens=20)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_proxy(vocab_size, seed=0, nudge=0.0):
    torch.manual_seed(seed)
    model = proxy.DiT(**TINY, vocab_size=vocab_size)
    for p in model.parameters():  # adaLN-Zero starts as the identity with a zero output: nudge every path open
        p.data.add_(nudge * torch.randn_like(p))
    return model


def batch(d, B=4, D=12, dtype=torch.float64, seed=0):
    """A training and a validation batch with their (t, noise) draws, in the keys exact_rater_loss takes."""
    g = torch.Generator().manual_seed(seed)
    x = data.to_float(d["images"][:2 * B]).to(dtype)
    return dict(feats=torch.randn(B, D, generator=g, dtype=dtype), x=x[:B], tok=d["tokens"][:B],
                t=torch.rand(B, generator=g, dtype=dtype), noise=torch.randn(B, 3, 16, 16, generator=g, dtype=dtype),
                x_val=x[B:], tok_val=d["tokens"][B:2 * B], t_val=torch.rand(B, generator=g, dtype=dtype),
                noise_val=torch.randn(B, 3, 16, 16, generator=g, dtype=dtype))


# ----------------------------------------------------------------------------------------------------------------
# The exact one-step hypergradient

def test_exact_hypergradient_matches_central_finite_differences_in_float64(tiny_shapes):
    d = data.load_dataset(tiny_shapes)
    primary = tiny_proxy(len(d["vocab"]), nudge=0.05).double()
    b, eta, eps = batch(d), 0.5, 1e-6
    W = torch.tensor([0.3, 0.1, 0.4, 0.2], dtype=torch.float64)
    h = metagrad.exact_signal(primary, W, eta, **b)  # h_i = d L_val(theta'(W)) / d W_i
    assert all(p.grad is None for p in primary.parameters())  # nothing leaks into the primary
    g = torch.Generator().manual_seed(2)
    for _ in range(3):  # random directions in W-space
        v = torch.randn(4, generator=g, dtype=torch.float64)
        v /= v.norm()
        rest = {k: x for k, x in b.items() if k != "feats"}
        fd = (metagrad.exact_rater_loss(primary, W + eps * v, **rest, eta=eta) -
              metagrad.exact_rater_loss(primary, W - eps * v, **rest, eta=eta)).item() / (2 * eps)
        exact = (h * v).sum().item()
        assert abs(exact) > 1e-8 and abs(fd - exact) < 1e-3 * abs(exact), (exact, fd)


def per_row_grads(model, x, tok, t, noise):
    """grad_theta L(theta; x_i) of each row on its own draw, one backward per row: a list over rows of lists."""
    params = list(model.parameters())
    return [torch.autograd.grad(proxy.rf_loss(model, x[i:i + 1], tok[i:i + 1], t[i:i + 1], noise[i:i + 1]).sum(),
                                params) for i in range(len(x))]


def val_after_virtual_step(primary, W, eta, grads, b):
    """L_val(theta - eta sum_i W_i grad L_i), the virtual step made by hand on a copy: the loss and the copy."""
    virtual = copy.deepcopy(primary)
    with torch.no_grad():
        for k, p in enumerate(virtual.parameters()):
            p.sub_(eta * sum(W[i] * grads[i][k] for i in range(len(W))))
    return proxy.rf_loss(virtual, b["x_val"], b["tok_val"], b["t_val"], b["noise_val"]).mean(), virtual


def test_exact_signal_is_minus_eta_grad_val_after_the_step_dot_grad_row_and_a_step_against_it_lowers_val(tiny_shapes):
    # theta'(W) = theta - eta sum_i W_i grad L_i(theta), so d theta' / d W_i = -eta grad L_i(theta) and
    # h_i = -eta grad L_val(theta') . grad L_i(theta) exactly: the virtual step's sign and size, computed by hand
    d = data.load_dataset(tiny_shapes)
    primary = tiny_proxy(len(d["vocab"]), nudge=0.05).double()
    b, eta = batch(d), 0.5
    W = torch.tensor([0.3, 0.1, 0.4, 0.2], dtype=torch.float64)
    h = metagrad.exact_signal(primary, W, eta, **b)
    grads = per_row_grads(primary, b["x"], b["tok"], b["t"], b["noise"])
    loss_val, virtual = val_after_virtual_step(primary, W, eta, grads, b)
    grad_val = torch.autograd.grad(loss_val, list(virtual.parameters()))
    expected = torch.stack([-eta * sum((gv * gi).sum() for gv, gi in zip(grad_val, grads[i])) for i in range(4)])
    assert expected.abs().min() > 1e-8 and torch.allclose(h, expected, rtol=1e-9, atol=0), (h, expected)
    # moving the weights against h lowers the validation loss after the (hand-made) virtual step
    W_new = W - 0.05 * h / h.norm()
    assert val_after_virtual_step(primary, W_new, eta, grads, b)[0] < loss_val


def test_exact_hypergradient_vanishes_with_a_zero_virtual_step(tiny_shapes):
    d = data.load_dataset(tiny_shapes)
    primary = tiny_proxy(len(d["vocab"]), nudge=0.05).double()
    h = metagrad.exact_signal(primary, torch.full((4,), 0.25, dtype=torch.float64), 0.0, **batch(d))
    assert torch.count_nonzero(h) == 0  # theta' = theta does not depend on W


# ----------------------------------------------------------------------------------------------------------------
# Eq. 6 with the baseline

def test_baseline_leaves_the_instance_gradient_unchanged_and_flips_W_batch_gradient():
    torch.manual_seed(0)
    r = rater.Rater(12, width=8)
    f = torch.randn(16, 12)
    gap = torch.rand(16) + 0.5  # a positive gap: Eq. 6 without a baseline pushes W_batch -> 0
    with torch.no_grad():
        w_inst = r.instance_weights(r(f)[1])
    batch_gap = (w_inst * gap).sum().item()
    inst = list(r.instance.parameters())
    group = list(r.group.parameters())
    out = {}
    for b in [0.0, batch_gap - 0.3, batch_gap + 0.3]:
        W, z, W_batch = r(f)
        loss = metagrad.alchemist_rater_loss(W, gap, b)
        g = torch.autograd.grad(loss, [W_batch] + inst + group)
        out[b] = (g[0], g[1:1 + len(inst)], g[1 + len(inst):])
    # the instance head's gradient is the same whatever the baseline (sum_i grad w_inst_i = 0)
    for b in out:
        assert all(torch.allclose(a, c, atol=1e-6) for a, c in zip(out[0.0][1], out[b][1]))
    # dL/dW_batch = weighted batch gap - b: positive with no baseline (collapse), and its sign follows b
    assert abs(out[0.0][0].item() - batch_gap) < 1e-5 and out[0.0][0] > 0
    assert out[batch_gap - 0.3][0] > 0 > out[batch_gap + 0.3][0]
    # mirrored baselines give exactly opposite group-head gradients
    assert all(torch.allclose(a, -c, atol=1e-6) for a, c in zip(out[batch_gap - 0.3][2], out[batch_gap + 0.3][2]))


def test_rater_objective_is_the_scaled_signal_minus_the_running_baseline_plus_the_logit_prior():
    torch.manual_seed(0)
    r, f = rater.Rater(12, width=8), torch.randn(16, 12)
    signal = torch.rand(16, generator=torch.Generator().manual_seed(1)) + 0.5
    z, g = r.logits(f)
    W = r.instance_weights(z) * torch.sigmoid(g)
    w_inst = (W / W.sum()).detach()
    s = dict(scale=2.0, baseline=0.7)  # a run in progress: s_k and b_k from earlier steps
    loss, batch_signal = metagrad.rater_objective(s, z, g, W, signal, 0.05)
    scale = metagrad.SIGNAL_DECAY * 2.0 + (1 - metagrad.SIGNAL_DECAY) * signal.std().item()
    assert s["scale"] == pytest.approx(scale, rel=1e-6) and s["baseline"] == 0.7  # b_k moves after the step only
    assert batch_signal == pytest.approx((w_inst * signal / scale).sum().item(), rel=1e-5)
    expected = (W * (signal / scale - 0.7)).sum() + 0.05 * (z.pow(2).mean() + g.pow(2))
    assert torch.allclose(loss, expected, rtol=1e-5), (loss, expected)
    # the first step: s_1 is the batch's std and b_1 the batch's own weighted signal, so z_group feels only
    # the prior (d/dg = W_batch (1 - W_batch) (sum_i w_inst_i h_i - b) + 0.05 * 2 g, the first term 0)
    s = dict(scale=None, baseline=None)
    loss, batch_signal = metagrad.rater_objective(s, z, g, W, signal, 0.05)
    assert s["scale"] == pytest.approx(signal.std().item()) and s["baseline"] == batch_signal
    assert torch.allclose(torch.autograd.grad(loss, g)[0], 0.1 * g, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# One meta step, against steps made by hand: Eq. 6's gap, Eq. 4's reference step, Eq. 5's primary step

def meta_state(vocab_size, r=None, lr=1e-3):
    """What metagrad.main hands meta_step, in float64: primary and reference differ (seeds 0 and 1)."""
    primary = tiny_proxy(vocab_size, seed=0, nudge=0.05).double()
    reference = tiny_proxy(vocab_size, seed=1, nudge=0.05).double()
    if r is None:
        torch.manual_seed(2)
        r = rater.Rater(12, width=8).double()
    return dict(primary=primary, reference=reference, rater=r, baseline=None, scale=None,
                opt_primary=metagrad.adamw(primary, lr), opt_ref=metagrad.adamw(reference, lr),
                opt_rater=torch.optim.AdamW(r.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05))


def plain_step(model, loss_fn, lr=1e-3):
    """One AdamW step (betas 0.9, 0.95, no decay, clip 1.0) on a copy of `model`: the copy after it."""
    model = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    loss_fn(model).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return model


def same_weights(a, b, atol=1e-12):
    return all(torch.allclose(p, q, rtol=0, atol=atol) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("simplified", [False, True])
def test_the_signal_is_the_loss_gap_on_the_batchs_own_draws_before_either_model_moves(tiny_shapes, monkeypatch,
                                                                                     simplified):
    d = data.load_dataset(tiny_shapes)
    s, b = meta_state(len(d["vocab"])), batch(d)
    draws = (b["x"], b["tok"], b["t"], b["noise"])
    with torch.no_grad():  # Eq. 6: L(theta; x_i) - L(theta_ref; x_i) on the same (t, noise); Eq. 9: L(theta; x_i)
        gap = proxy.rf_loss(s["primary"], *draws) - (0 if simplified else proxy.rf_loss(s["reference"], *draws))
        z, z_group = copy.deepcopy(s["rater"]).logits(b["feats"])
    seen, real = [], metagrad.rater_objective
    monkeypatch.setattr(metagrad, "rater_objective", lambda *a: seen.append(a[4].clone()) or real(*a))
    out = metagrad.meta_step(s, b, simplified=simplified)
    assert torch.allclose(seen[0], gap, rtol=1e-10, atol=1e-12), (seen[0], gap)
    # the state and the log follow from that gap: s_1 its std, b_1 its weighted mean over s_1, W_batch, the entropy
    w_inst = torch.softmax(torch.sigmoid(z) / s["rater"].temperature, 0)
    assert s["scale"] == pytest.approx(gap.std().item(), rel=1e-9)
    assert s["baseline"] == pytest.approx((w_inst * gap).sum().item() / gap.std().item(), rel=1e-9)
    assert out["W_batch"] == pytest.approx(torch.sigmoid(z_group).item(), rel=1e-12)
    assert out["entropy"] == pytest.approx((-(w_inst * w_inst.log()).sum() / torch.log(torch.tensor(4.0))).item())


class WorseOnFirstRows(proxy.DiT):
    """A reference whose prediction is off by 10 on the first two rows of every batch: its loss there is raised."""

    def forward(self, x, t, tokens):
        v = super().forward(x, t, tokens)
        return v + torch.cat([torch.full_like(v[:2], 10.0), torch.zeros_like(v[2:])])


def test_a_reference_worse_on_chosen_rows_makes_the_rater_raise_those_rows_logits(tiny_shapes):
    # a raised L(theta_ref; x_i) lowers the gap of rows 0 and 1: the rater must come to prefer them
    d = data.load_dataset(tiny_shapes)
    s, b = meta_state(len(d["vocab"])), batch(d)
    worse = WorseOnFirstRows(**s["reference"].config).double()
    worse.load_state_dict(s["reference"].state_dict())
    s["reference"], s["opt_ref"] = worse, metagrad.adamw(worse, 1e-3)
    s["opt_rater"] = torch.optim.AdamW(s["rater"].parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.05)
    b["feats"][:2, 0], b["feats"][2:, 0] = 2.0, -2.0  # the chosen rows are readable from the features
    margin = lambda: (lambda z: z[:2].mean() - z[2:].mean())(s["rater"].logits(b["feats"])[0]).item()
    before = margin()
    for _ in range(10):
        metagrad.meta_step(s, b)
    assert margin() > before + 0.5, (before, margin())


@pytest.mark.parametrize("method, simplified", [("alchemist", False), ("alchemist", True), ("exact", False)])
def test_eq4_the_reference_takes_a_plain_step_on_the_batch_in_alchemist_and_none_in_the_others(tiny_shapes, method,
                                                                                               simplified):
    d = data.load_dataset(tiny_shapes)
    s, b = meta_state(len(d["vocab"])), batch(d)
    expected = plain_step(s["reference"], lambda m: proxy.rf_loss(m, b["x"], b["tok"], b["t"], b["noise"]).mean())
    before = copy.deepcopy(s["reference"])
    metagrad.meta_step(s, b, method, simplified)
    if method == "alchemist" and not simplified:  # Eq. 4: mean_i L(theta_ref; x_i), unweighted, on the batch's draws
        assert same_weights(s["reference"], expected) and not same_weights(s["reference"], before)
    else:  # Eq. 9 and the exact method have no reference: it must not move
        assert same_weights(s["reference"], before, atol=0)


def one_row_rater(row, n=4):
    """A rater (no group head, tau 1e-3) whose weights are exactly one-hot on `row` for features one_row_feats."""
    r = rater.Rater(12, width=4, hidden=4, temperature=1e-3, use_group=False).double()
    with torch.no_grad():
        for p in r.parameters():
            p.zero_()
        r.adapter[0].weight[0, 0] = r.instance[0].weight[0, 0] = 1.0  # z = 100 GELU(GELU(f_0)) - 20
        r.instance[2].weight[0, 0], r.instance[2].bias[0] = 100.0, -20.0
    f = torch.full((n, 12), -3.0, dtype=torch.float64)
    f[row] = 3.0
    return r, f


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_eq5_the_primary_steps_on_the_weighted_rows_and_the_validation_batch_in_the_share_gamma(tiny_shapes, gamma):
    # gamma 0 and all weight on row 2: a plain step on row 2 alone; gamma 1: a plain step on the validation batch
    d = data.load_dataset(tiny_shapes)
    r, f = one_row_rater(2)
    s, b = meta_state(len(d["vocab"]), r=r), batch(d)
    b["feats"] = f
    W = r(f)[0]
    assert W[2] == 1 and W.sum() == 1  # one-hot to float64 precision
    row = lambda m: proxy.rf_loss(m, b["x"][2:3], b["tok"][2:3], b["t"][2:3], b["noise"][2:3]).sum()
    val = lambda m: proxy.rf_loss(m, b["x_val"], b["tok_val"], b["t_val"], b["noise_val"]).mean()
    expected = plain_step(s["primary"], row if gamma == 0 else val)
    other = plain_step(s["primary"], val if gamma == 0 else row)
    metagrad.meta_step(s, b, "alchemist", False, gamma)
    assert same_weights(s["primary"], expected, atol=1e-10) and not same_weights(s["primary"], other, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# The command line: each method, resume, non-finite losses

@pytest.fixture(scope="module")
def proxy_file(tiny_shapes, tmp_path_factory):
    d = data.load_dataset(tiny_shapes)
    path = str(tmp_path_factory.mktemp("proxy") / "proxy.pt")
    proxy.save_checkpoint(path, tiny_proxy(len(d["vocab"])), 0, d["vocab"])
    return path


def run(tiny_shapes, proxy_file, out, *extra):
    metagrad.main(["--data", tiny_shapes, "--proxy", proxy_file, "--out", str(out), "--batch-size", "8",
                   "--primary-warmup", "2", "--draws", "2", "--log-every", "1", *extra])


@pytest.mark.parametrize("flags", [["--method", "alchemist"], ["--simplified"], ["--method", "exact"],
                                   ["--no-group", "--schedule", "seal"]])
def test_cli_runs_each_method_and_writes_rater_and_log(tiny_shapes, proxy_file, tmp_path, capsys, flags):
    run(tiny_shapes, proxy_file, tmp_path, "--steps", "3", *flags)
    d = data.load_dataset(tiny_shapes)
    r, trunk, ckpt = rater.load_rater(str(tmp_path / "rater.pt"), dataset=d)
    assert ckpt["step"] == 3 and ckpt["K"] == 2 and r.use_group == ("--no-group" not in flags)
    rows = list(csv.DictReader(open(tmp_path / "metagrad_log.csv")))
    assert [int(row["step"]) for row in rows] == [1, 2, 3]
    expected = {"val_primary", "val_reference", "W_batch", "z_min", "z_max", "z_std", "entropy", "auroc_misaligned",
                "auroc_noise", "auroc_duplicate"}
    assert expected <= set(rows[0])
    # the logged AUROCs are those of the saved rater's logits on the saved features (clean vs each type)
    r, feats = rater.load_rater(str(tmp_path / "rater.pt"))[0], torch.load(tmp_path / "metagrad_state.pt",
                                                                           weights_only=True)["feats"]
    with torch.no_grad():
        aurocs = rater.aurocs_by_type(r.logits(feats)[0].numpy(), d["defect"].numpy(), d["defect_names"])
    assert all(float(rows[-1][f"auroc_{n}"]) == pytest.approx(v, abs=5e-5) for n, v in aurocs.items()), aurocs
    trains_reference = "exact" not in flags and "--simplified" not in flags  # only Eq. 4-6 trains theta_ref
    assert (rows[0]["val_reference"] != "") == trains_reference
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "wrote" in last and "rater.pt" in last and "misaligned" in last


def test_resumed_run_ends_with_the_uninterrupted_runs_rater(tiny_shapes, proxy_file, tmp_path):
    run(tiny_shapes, proxy_file, tmp_path / "whole", "--steps", "6", "--ckpt-every", "2")
    run(tiny_shapes, proxy_file, tmp_path / "part", "--steps", "3", "--ckpt-every", "2")  # "killed" after step 3
    run(tiny_shapes, proxy_file, tmp_path / "part", "--steps", "6", "--ckpt-every", "2", "--resume")
    a = torch.load(tmp_path / "whole" / "rater.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "rater.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa = torch.load(tmp_path / "whole" / "metagrad_state.pt", weights_only=True)
    sb = torch.load(tmp_path / "part" / "metagrad_state.pt", weights_only=True)
    assert sa["baseline"] == sb["baseline"]
    assert all(torch.equal(sa["primary"][k], sb["primary"][k]) for k in sa["primary"])
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "part" / "metagrad_log.csv"))]
    assert steps == [1, 2, 3, 4, 5, 6]  # each step logged once


def test_non_finite_loss_exits_2_with_one_line_and_keeps_the_last_checkpoint(tiny_shapes, proxy_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # lr 1e30: the first update sends the models to ~1e30, the next loss is inf
        run(tiny_shapes, proxy_file, tmp_path, "--steps", "5", "--ckpt-every", "1", "--primary-warmup", "0",
            "--lr", "1e30")
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]  # past the progress bar
    assert e.value.code == 2 and len(err) == 1 and "non-finite loss" in err[0] and "metagrad_state.pt" in err[0]
    state = torch.load(tmp_path / "metagrad_state.pt", weights_only=True)
    failed_at = int(err[0].split("at step ")[1].split(";")[0])
    assert 1 <= state["step"] == failed_at - 1
    assert torch.load(tmp_path / "rater.pt", weights_only=True)["step"] == state["step"]


@pytest.mark.parametrize("args, fragment", [(["--simplified", "--method", "exact"], "simplified"),
                                            (["--steps", "0"], "must be positive"),
                                            (["--proxy", "/nonexistent/proxy.pt"], "no such")])
def test_cli_bad_input_is_one_line_and_exit_2(tiny_shapes, proxy_file, tmp_path, capsys, args, fragment):
    with pytest.raises(SystemExit) as e:
        metagrad.main(["--data", tiny_shapes, "--proxy", proxy_file, "--out", str(tmp_path / "run")] + args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "run" / "rater.pt").exists()


# ----------------------------------------------------------------------------------------------------------------
# The rater's learning rule on a synthetic signal: it learns a noisy ranking, and nothing saturates

def learn(quality, signal_noise, logit_decay, steps=300, drift=0.0, seed=0):
    """Train a rater with metagrad.rater_objective on a synthetic per-row signal h_i = -quality_i + noise + a drift
    that falls over time (the situation of a rater that improves while it learns). Returns z, W_batch's history."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(quality), 6, generator=g)
    feats[:, 0] = quality  # the quality is readable from the features
    r = rater.Rater(6, width=16)
    opt = torch.optim.AdamW(r.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.05)
    s, history = dict(scale=None, baseline=None), []
    for k in range(steps):
        rows = torch.randint(len(quality), (64,), generator=g)
        z, z_group = r.logits(feats[rows])
        W_batch = torch.sigmoid(z_group)
        W = r.instance_weights(z) * W_batch
        signal = -quality[rows] + signal_noise * torch.randn(64, generator=g) - drift * k / steps
        loss, batch_signal = metagrad.rater_objective(s, z, z_group, W, signal, logit_decay)
        opt.zero_grad()
        loss.backward()
        opt.step()
        s["baseline"] = metagrad.SIGNAL_DECAY * s["baseline"] + (1 - metagrad.SIGNAL_DECAY) * batch_signal
        history.append(W_batch.item())
    with torch.no_grad():
        return r.logits(feats)[0], history


def test_the_rater_learns_a_ranking_from_a_noisy_signal_and_its_logits_and_W_batch_stay_inside():
    quality = torch.randn(512, generator=torch.Generator().manual_seed(5))
    z, history = learn(quality, signal_noise=2.0, logit_decay=0.05, drift=3.0)
    good, bad = quality > 0, quality <= 0
    assert rater.auroc(z.numpy(), good.numpy(), bad.numpy()) > 0.9  # one noisy draw per row and step is enough
    assert z.abs().max() < 10  # bounded: the prior balances the signal where the sigmoid still answers
    assert 0.05 < min(history) and max(history) < 0.95  # no collapse of W_batch despite the drift


def test_without_the_logit_prior_the_logits_run_off():
    quality = torch.randn(512, generator=torch.Generator().manual_seed(5))
    z_free, _ = learn(quality, signal_noise=0.5, logit_decay=0.0, steps=400)
    z_prior, _ = learn(quality, signal_noise=0.5, logit_decay=0.05, steps=400)
    assert z_free.abs().max() > 2 * z_prior.abs().max()
