"""Properties of the DiT proxy, its rectified-flow loss, its sampler and its training loop (proxy.py)."""
import json
import os

import pytest
import torch
import torch.nn.functional as F

import data
import proxy

TINY = dict(image_size=16, patch=2, width=64, depth=2, heads=4, text_depth=1, vocab_size=24, max_tokens=20)


@pytest.fixture(scope="module")
def batch(tiny_shapes):
    d = data.load_dataset(tiny_shapes)
    clean = d["defect"] == 0
    return data.to_float(d["images"][clean][:64]), d["tokens"][clean][:64]


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return proxy.DiT(**{**TINY, **kw})


def test_proxy_overfits_one_batch_of_64_images(batch):
    x0, tok = batch
    model = tiny_model()
    draws = proxy.fixed_draws(8, (3, 16, 16), seed=0)
    before = proxy.sample_loss(model, x0, tok, draws).mean().item()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(100):
        loss = proxy.rf_loss(model, x0, tok, generator=gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = proxy.sample_loss(model, x0, tok, draws).mean().item()
    assert after < before / 5, (before, after)


def test_per_sample_losses_under_fixed_draws_are_identical_across_calls_and_batchings(batch):
    x0, tok = batch
    model = tiny_model().eval()
    draws = proxy.fixed_draws(4, (3, 16, 16), seed=3)
    a = proxy.sample_loss(model, x0, tok, draws)
    b = proxy.sample_loss(model, x0, tok, draws)
    assert a.shape == (64,) and torch.equal(a, b)
    # a sample's loss does not depend on which other samples share its batch
    part = proxy.sample_loss(model, x0[5:9], tok[5:9], draws)
    assert torch.allclose(part, a[5:9], atol=1e-6)
    # other draws give other losses
    assert not torch.allclose(a, proxy.sample_loss(model, x0, tok, proxy.fixed_draws(4, (3, 16, 16), seed=4)))


def test_fixed_draws_are_stratified_quantiles_of_the_training_density():
    t, noise = proxy.fixed_draws(10, (3, 4, 4), seed=0)
    assert torch.all(t[1:] > t[:-1]) and 0 < t[0] and t[-1] < 1
    assert abs(t[4].item() + t[5].item() - 1) < 1e-6  # the training density is symmetric about 1/2
    # the training sampler's median agrees with the stratified quantiles
    drawn = proxy.sample_t(100000, torch.Generator().manual_seed(0))
    assert abs(torch.quantile(drawn, 0.05).item() - t[0].item()) < 0.01


def test_hand_written_attention_matches_pytorch_sdpa_with_a_padding_mask():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    assert torch.allclose(proxy.attention(q, k, v, mask), expected, atol=1e-5)


def test_double_backward_through_the_model_matches_finite_differences_on_cpu(batch):
    """Hessian-vector product by double backward vs a central difference of gradients, in float64."""
    x0, tok = batch
    model = tiny_model(width=32, depth=1, heads=2).double()
    # adaLN-Zero starts with zero gates and a zero output: nudge them so every path carries gradient
    for p in model.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    x0, t = x0[:4].double(), torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = list(model.parameters())
    loss_fn = lambda: proxy.rf_loss(model, x0, tok[:4], t=t, noise=noise).mean()
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    vec = [torch.randn_like(p) for p in params]
    hvp = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vec)), params)
    eps = 1e-5

    def grad_at(sign):
        with torch.no_grad():
            for p, v in zip(params, vec):
                p.add_(sign * eps * v)
        g = torch.autograd.grad(loss_fn(), params)
        with torch.no_grad():
            for p, v in zip(params, vec):
                p.sub_(sign * eps * v)
        return g
    fd = [(a - b) / (2 * eps) for a, b in zip(grad_at(+1), grad_at(-1))]
    num = sum(((h - f) ** 2).sum() for h, f in zip(hvp, fd)).sqrt()
    den = sum((f ** 2).sum() for f in fd).sqrt()
    assert den > 0 and num / den < 1e-4


def test_adaln_zero_model_predicts_zero_at_initialisation(batch):
    x0, tok = batch
    v = tiny_model()(x0[:3], torch.rand(3), tok[:3])
    assert v.shape == (3, 3, 16, 16) and torch.count_nonzero(v) == 0


def test_training_replaces_a_tenth_of_the_captions_by_the_null_caption(tmp_path, monkeypatch):
    seen, real = [], proxy.rf_loss  # the captions each training step's loss is computed with
    monkeypatch.setattr(proxy, "rf_loss", lambda model, x0, tok, **kw: seen.append(tok) or real(model, x0, tok, **kw))
    images, tok = torch.zeros(10, 3, 16, 16, dtype=torch.uint8), torch.full((10, 20), 5)
    proxy.train(tiny_model(width=16, depth=1, heads=1), images, tok, 1, 2000, 1e-3, 0, torch.device("cpu"),
                proxy.Run(str(tmp_path / "m.pt"), data.shapes_vocab()))
    dropped = (seen[0] == data.null_tokens(1, 20)).all(1)
    assert 0.08 < dropped.float().mean() < 0.12
    assert torch.all(seen[0][~dropped] == 5)


def test_sampler_is_deterministic_in_range_and_cfg_one_is_the_conditional_model(batch):
    _, tok = batch
    model = tiny_model()
    for p in model.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    a = proxy.sample_images(model, tok[:3], steps=4, cfg=3.0, seed=7)
    assert torch.equal(a, proxy.sample_images(model, tok[:3], steps=4, cfg=3.0, seed=7))
    assert a.shape == (3, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    # hand-rolled Euler with the conditional model only equals cfg=1
    x = torch.randn((3, 3, 16, 16), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        for i in range(4):
            x = x - model(x, torch.full((3,), 1 - i / 4), tok[:3]) / 4
    assert torch.allclose(proxy.sample_images(model, tok[:3], steps=4, cfg=1.0, seed=7), x.clamp(-1, 1), atol=1e-6)


def test_rf_loss_is_zero_for_the_true_velocity_and_the_squared_target_for_a_zero_prediction():
    g = torch.Generator().manual_seed(0)
    x0, noise = (torch.randn(3, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(2))
    t, tok = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64), torch.ones(3, 4, dtype=torch.long)
    # x_t = (1 - t) x0 + t eps, so (x_t - x0) / t = eps - x0, the velocity the model must predict
    true_velocity = lambda x, tt, tokens: (x - x0) / tt.view(-1, 1, 1, 1)
    assert proxy.rf_loss(true_velocity, x0, tok, t, noise).abs().max() < 1e-20
    zero = lambda x, tt, tokens: torch.zeros_like(x)
    assert torch.allclose(proxy.rf_loss(zero, x0, tok, t, noise), (noise - x0).pow(2).mean((1, 2, 3)), rtol=1e-12)


def test_cfg_extrapolates_from_the_null_captions_velocity_towards_the_captions(batch):
    """Hand-rolled Euler with v = v_null + cfg (v_text - v_null) at cfg 3."""
    _, tok = batch
    model = tiny_model(width=32, depth=1, heads=2)
    for p in model.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    null = data.null_tokens(3, tok.shape[1])
    x = torch.randn((3, 3, 16, 16), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        for i in range(4):
            t = torch.full((3,), 1 - i / 4)
            v_text, v_null = model(x, t, tok[:3]), model(x, t, null)
            x = x - (v_null + 3.0 * (v_text - v_null)) / 4
    assert torch.allclose(proxy.sample_images(model, tok[:3], steps=4, cfg=3.0, seed=7), x.clamp(-1, 1), atol=1e-5)


class KnownSelection:
    """A `select` hook for proxy.train that draws 12 rows and keeps a fixed choice of 4, in a fixed order."""
    size, settings = 12, {}

    def __init__(self, keep):
        self.keep, self.seen = keep, []

    def __call__(self, step, model, images, tokens, t, noise, gen):
        self.seen.append((images.clone(), tokens.clone(), t.clone(), noise.clone()))
        return self.keep

    def log(self):
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_the_selection_hook_decides_the_rows_trained_on_with_the_draws_they_were_scored_on(tiny_shapes, tmp_path,
                                                                                          monkeypatch):
    d, keep = data.load_dataset(tiny_shapes), torch.tensor([11, 3, 7, 0])  # not the first 4 rows, not in order
    select, trained, real = KnownSelection(keep), [], proxy.rf_loss

    def spy(model, x0, tokens, t=None, noise=None, **kw):  # what each training step's loss is computed on
        trained.append((x0.clone(), tokens.clone(), t.clone(), noise.clone()))
        return real(model, x0, tokens, t=t, noise=noise, **kw)

    monkeypatch.setattr(proxy, "rf_loss", spy)
    proxy.train(tiny_model(width=32, depth=1, heads=2), d["images"], d["tokens"], steps=2, batch_size=4, lr=1e-3,
                seed=0, device=torch.device("cpu"), run=proxy.Run(str(tmp_path / "m.pt"), d["vocab"]), select=select)
    assert len(trained) == len(select.seen) == 2
    for (images, tokens, t, noise), (x0, tok_kept, t_kept, noise_kept) in zip(select.seen, trained):
        assert torch.equal(x0, data.to_float(images[keep])) and torch.equal(tok_kept, tokens[keep])
        assert torch.equal(t_kept, t[keep]) and torch.equal(noise_kept, noise[keep])


def test_resumed_training_ends_with_the_uninterrupted_runs_weights(tiny_shapes, tmp_path):
    d = data.load_dataset(tiny_shapes)
    run = lambda path, steps, resume: proxy.train(
        tiny_model(), d["images"], d["tokens"], steps=steps, batch_size=8, lr=1e-3, seed=0, device=torch.device("cpu"),
        run=proxy.Run(str(path), d["vocab"], resume=resume, ckpt_every=3), warmup=2, ema_decay=0.9)
    whole = run(tmp_path / "whole.pt", 6, False)
    run(tmp_path / "part.pt", 3, False)  # "killed" after its step-3 checkpoint
    resumed = run(tmp_path / "part.pt", 6, True)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    ema_a = torch.load(tmp_path / "whole.pt", weights_only=True)["ema"]
    ema_b = torch.load(tmp_path / "part.pt", weights_only=True)["ema"]
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_cli_writes_checkpoint_log_report_and_grid_and_reloads(tiny_shapes, tmp_path, capsys):
    out = tmp_path / "run"
    proxy.main(["--data", tiny_shapes, "--out", str(out), "--steps", "4", "--batch-size", "8", "--draws", "2"])
    model, ckpt = proxy.load_proxy(str(out / "proxy.pt"), dataset=data.load_dataset(tiny_shapes))
    assert ckpt["step"] == 4 and ckpt["config"]["image_size"] == 16 and {"optimizer", "rng"} <= set(ckpt)
    header = open(out / "proxy_log.csv").readline().strip().split(",")
    assert header[:2] == ["step", "loss"] and sum(h.startswith("loss_t") for h in header) == 10
    report = json.load(open(out / "proxy_report.json"))
    assert {"val_loss", "loss_clean", "loss_noise", "misaligned_over_clean"} <= set(report)
    assert os.path.getsize(out / "proxy_samples.png") > 1000
    assert "wrote" in capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.parametrize("args, fragment", [
    (["--data", "/nonexistent/shapes"], "no such data folder"),
    (["--steps", "0"], "must be positive"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tiny_shapes, tmp_path, capsys, args, fragment):
    full = ["--data", tiny_shapes, "--out", str(tmp_path / "run")] + [a.replace("MISSING", str(tmp_path / "no")) for a in args]
    with pytest.raises(SystemExit) as e:
        proxy.main(full)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and fragment in err
    assert not (tmp_path / "run" / "proxy.pt").exists()


def test_load_proxy_rejects_non_models_and_other_sizes(tiny_shapes, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(data.DataError, match="junk.pt"):
        proxy.load_proxy(str(tmp_path / "junk.pt"))
    torch.save({"model": {}, "config": {**TINY, "width": 48}}, tmp_path / "empty.pt")
    with pytest.raises(data.DataError, match="do not fit"):
        proxy.load_proxy(str(tmp_path / "empty.pt"))
    model = tiny_model(image_size=32, patch=4)
    proxy.save_checkpoint(str(tmp_path / "m32.pt"), model, 0, data.shapes_vocab())
    with pytest.raises(data.DataError, match="32px"):
        proxy.load_proxy(str(tmp_path / "m32.pt"), dataset=data.load_dataset(tiny_shapes))


def test_resume_from_a_checkpoint_of_another_model_size_is_refused(tiny_shapes, tmp_path, capsys):
    out = tmp_path / "run"
    proxy.save_checkpoint(str(out / "proxy.pt"), tiny_model(width=32, heads=2), 1, data.shapes_vocab())
    with pytest.raises(SystemExit) as e:
        proxy.main(["--data", tiny_shapes, "--out", str(out), "--steps", "2", "--resume"])
    assert e.value.code == 2 and "another model size" in capsys.readouterr().err
