"""Properties of the meta-gradient loop (metagrad.py): the exact hypergradient, the baseline, resume, the CLI."""
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


def test_the_surrogate_sum_W_h_has_the_rater_gradient_of_the_validation_loss_after_the_virtual_step(tiny_shapes):
    # the chain rule that lets the exact method share Eq. 6's form: d/dmu sum_i W_i(mu) h_i = d L_val(theta'(W(mu)))/dmu
    d = data.load_dataset(tiny_shapes)
    primary = tiny_proxy(len(d["vocab"]), nudge=0.05).double()
    torch.manual_seed(1)
    r = rater.Rater(12, width=8, temperature=0.5).double()
    b, eta = batch(d), 0.5
    W = r(b["feats"])[0]
    direct = torch.autograd.grad(metagrad.exact_rater_loss(primary, W, **{k: x for k, x in b.items() if k != "feats"},
                                                           eta=eta), list(r.parameters()))
    h = metagrad.exact_signal(primary, W, eta, **b)
    surrogate = torch.autograd.grad((r(b["feats"])[0] * h).sum(), list(r.parameters()))
    for name, a, c in zip([n for n, _ in r.named_parameters()], direct, surrogate):  # adapter, instance and group
        assert a.abs().max() > 1e-10 and torch.allclose(a, c, rtol=1e-9, atol=1e-12), name


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
    assert all(0 <= float(row["auroc_noise"]) <= 1 and 0 < float(row["entropy"]) <= 1 for row in rows)
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
        z, group_logit = r.logits(feats[rows])
        W_batch = torch.sigmoid(group_logit)
        W = r.instance_weights(z) * W_batch
        signal = -quality[rows] + signal_noise * torch.randn(64, generator=g) - drift * k / steps
        loss, batch_signal = metagrad.rater_objective(s, z, group_logit, W, signal, logit_decay)
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
