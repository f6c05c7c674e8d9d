"""Exercise 1: the rectified-flow loss and the guided Euler sampler (proxy.rf_loss, proxy.sample_images).

The loss is checked against models whose right answer is known (zero, identity, an oracle that knows the noise) and
against finite differences; the sampler against velocity fields v = c x, for which n Euler steps have the closed
form x_0 = eps (1 - c / n)^n.
"""
import torch

import data
from api import exercise_api
from tiny import SIZE, captions, dit, pictures

rf_loss, sample_images = exercise_api(1)

B = 5


def draws(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (pictures(B, g, dtype), captions(B, g), torch.rand(B, generator=g, dtype=dtype) * 0.8 + 0.1,
            torch.randn((B, 3, SIZE, SIZE), generator=g, dtype=dtype))


class Recorder:
    """A model v(x_t, t, tokens) = fn(x_t, t, tokens) that keeps what it was called with."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, x, t, tokens):
        self.calls.append(dict(x=x.detach().clone(), t=t.detach().clone(), tokens=tokens.clone()))
        return self.fn(x, t, tokens)


# ----------------------------------------------------------------------------------------------------------------
# The loss

def test_a_zero_prediction_costs_the_mean_squared_target_eps_minus_x0():
    """A model predicting 0 has loss mean over (C, H, W) of (eps - x0)^2: one number per sample, shape [B]."""
    x0, tok, t, noise = draws()
    loss = rf_loss(lambda x, tt, tk: torch.zeros_like(x), x0, tok, t, noise)
    assert loss.shape == (B,), f"the loss must be per sample, shape ({B},), not {tuple(loss.shape)}"
    assert torch.allclose(loss, (noise - x0).pow(2).mean((1, 2, 3)), rtol=1e-12), "the target is v = eps - x0"


def test_the_model_sees_x_t_interpolated_from_data_at_t_0_to_noise_at_t_1():
    """The model gets x_t = (1 - t) x0 + t eps, t and the tokens; predicting x_t itself costs
    mean (x_t - (eps - x0))^2."""
    x0, tok, t, noise = draws(1)
    model = Recorder(lambda x, tt, tk: x)
    loss = rf_loss(model, x0, tok, t, noise)
    tb = t.view(B, 1, 1, 1)
    x_t = (1 - tb) * x0 + tb * noise
    seen = model.calls[0]
    assert len(model.calls) == 1, "one forward pass of the model per call"
    assert torch.allclose(seen["x"], x_t, rtol=1e-12), "x_t must be (1 - t) x0 + t eps: t = 0 is data, t = 1 noise"
    assert torch.equal(seen["t"], t) and torch.equal(seen["tokens"], tok), "pass t and the captions on unchanged"
    assert torch.allclose(loss, (x_t - (noise - x0)).pow(2).mean((1, 2, 3)), rtol=1e-12), \
        "the loss is the mean over (C, H, W) of (v - (eps - x0))^2"


def test_the_true_velocity_costs_nothing():
    """An oracle that knows x0 predicts (x_t - x0) / t = eps - x0 and scores 0 on every sample."""
    x0, tok, t, noise = draws(2)
    loss = rf_loss(lambda x, tt, tk: (x - x0) / tt.view(B, 1, 1, 1), x0, tok, t, noise)
    assert loss.abs().max() < 1e-20, f"the true velocity eps - x0 must cost 0, not {loss.abs().max().item():.3g}"


def test_fresh_draws_come_from_the_generator_t_first_then_noise():
    """Without t and noise: t = rand(B), then noise = randn(x0's shape), both from `generator` in that order; the
    captions pass unchanged (proxy.train drops them itself)."""
    n = 64
    g = torch.Generator().manual_seed(0)
    x0, tok = pictures(n, g, torch.float32), captions(n, g)
    model = Recorder(lambda x, tt, tk: torch.zeros_like(x))
    loss = rf_loss(model, x0, tok, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    t, noise = torch.rand(n, generator=g), torch.randn(x0.shape, generator=g)
    seen = model.calls[0]
    assert torch.equal(seen["t"], t), "t must be the generator's first draw, torch.rand(B)"
    tb = t.view(n, 1, 1, 1)
    assert torch.allclose(seen["x"], (1 - tb) * x0 + tb * noise, atol=1e-6), "noise must be the second draw"
    assert torch.allclose(loss, (noise - x0).pow(2).mean((1, 2, 3)), atol=1e-6), "the target is the drawn eps - x0"
    assert torch.equal(seen["tokens"], tok), "the captions pass on unchanged: rf_loss drops none"


def test_drawing_twice_from_one_generator_gives_other_draws_and_one_seed_the_same():
    """Fresh draws advance the generator: two calls differ, and the same seed repeats the same loss."""
    g = torch.Generator().manual_seed(3)
    x0, tok, model = pictures(B, g, torch.float32), captions(B, g), dit(dtype=torch.float32)
    gen = torch.Generator().manual_seed(5)
    first, second = rf_loss(model, x0, tok, generator=gen), rf_loss(model, x0, tok, generator=gen)
    again = rf_loss(model, x0, tok, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(first, second) and torch.equal(first, again)


def test_each_rows_loss_depends_on_its_own_row_only():
    """Per-sample: a batch's losses equal the losses of its rows computed one at a time (a tiny DiT)."""
    x0, tok, t, noise = draws(4)
    model = dit()
    whole = rf_loss(model, x0, tok, t, noise)
    alone = torch.cat([rf_loss(model, x0[i:i + 1], tok[i:i + 1], t[i:i + 1], noise[i:i + 1]) for i in range(B)])
    assert torch.allclose(whole, alone, rtol=1e-10)


def test_the_loss_is_differentiable_in_the_models_weights():
    """Its gradient in the weights matches a central finite difference in float64 (no detach, no .item())."""
    x0, tok, t, noise = draws(5)
    model, eps = dit(), 1e-6
    params = list(model.parameters())
    g = torch.Generator().manual_seed(1)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    grads = torch.autograd.grad(rf_loss(model, x0, tok, t, noise).sum(), params, allow_unused=True)
    analytic = sum((gr * d).sum() for gr, d in zip(grads, direction) if gr is not None)

    def shifted(s):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(s * d)
            value = rf_loss(model, x0, tok, t, noise).sum().item()
            for p, d in zip(params, direction):
                p.sub_(s * d)
        return value
    numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
    assert abs(numeric) > 1e-6 and abs(float(analytic) - numeric) < 1e-6 * abs(numeric), (float(analytic), numeric)


# ----------------------------------------------------------------------------------------------------------------
# The sampler, on velocity fields v = c x (n Euler steps: x_0 = eps (1 - c / n)^n)

class Linear(torch.nn.Module):
    """v = a x for a real caption and b x for the null caption; keeps the t of every call."""

    def __init__(self, a, b=None):
        super().__init__()
        self.a, self.b, self.config, self.times = a, a if b is None else b, dict(image_size=SIZE), []
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # a device to be on

    def forward(self, x, t, tokens):
        self.times.append(t.clone())
        null = (tokens == data.null_tokens(len(tokens), tokens.shape[1])).all(1)
        return torch.where(null, self.b, self.a).to(x.dtype).view(-1, 1, 1, 1) * x


def start(seed, n=3):
    return torch.randn((n, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(seed))


def tokens(n=3):
    return captions(n, torch.Generator().manual_seed(0))


def test_euler_steps_from_seeded_noise_at_t_1_to_t_0_in_steps_of_1_over_n():
    """v = c x: n Euler steps x <- x - v / n from eps ~ randn(seed) give eps (1 - c/n)^n, at t = 1, 1 - 1/n, ...,
    1/n."""
    model, n, c = Linear(0.5), 6, 0.5
    out = sample_images(model, tokens(), steps=n, cfg=1.0, seed=11)
    assert torch.allclose(out, (start(11) * (1 - c / n) ** n).clamp(-1, 1), atol=1e-5), \
        "start from torch.randn((B, 3, S, S), generator=torch.Generator().manual_seed(seed)); step x - v / steps"
    times = sorted({round(v, 6) for t in model.times for v in t.tolist()}, reverse=True)
    assert times == [round(1 - i / n, 6) for i in range(n)], f"t must run 1, 1 - 1/n, ..., 1/n; got {times}"
    assert all(len(set(t.tolist())) == 1 for t in model.times), "one t for the whole batch at each step"


def test_samples_are_clamped_to_minus_one_one_and_repeat_exactly_for_a_seed():
    """The result is clamped to [-1, 1]; the same seed gives the same images and another seed others."""
    model = Linear(-3.0)  # x grows by (1 + 3/n) per step
    a, b = (sample_images(model, tokens(), steps=4, cfg=1.0, seed=s) for s in (1, 1))
    other = sample_images(model, tokens(), steps=4, cfg=1.0, seed=2)
    assert a.min() >= -1 and a.max() <= 1 and (a.abs() == 1).any()
    assert torch.equal(a, b) and not torch.equal(a, other)


def test_cfg_extrapolates_from_the_null_captions_velocity_towards_the_captions():
    """cfg w: v = v_null + w (v_text - v_null); with v_text = a x and v_null = b x that is c = b + w (a - b)."""
    a, b, w, n = 0.8, 0.2, 3.0, 5
    out = sample_images(Linear(a, b), tokens(), steps=n, cfg=w, seed=4)
    c = b + w * (a - b)
    assert torch.allclose(out, (start(4) * (1 - c / n) ** n).clamp(-1, 1), atol=1e-5), \
        "classifier-free guidance: v = v_null + cfg (v_text - v_null), the null caption from data.null_tokens"
    plain = sample_images(Linear(a, b), tokens(), steps=n, cfg=1.0, seed=4)
    assert torch.allclose(plain, (start(4) * (1 - a / n) ** n).clamp(-1, 1), atol=1e-5), "cfg 1: the caption's v alone"


def test_autoguidance_mixes_the_guides_velocity_towards_the_main_models():
    """Guide weight w: v = v_guide + w (v_main - v_guide), after CFG inside each model; w = 1 never calls the guide."""
    main, guide, w, n = Linear(0.9, 0.3), Linear(0.4, 0.1), 2.0, 4
    out = sample_images(main, tokens(), steps=n, cfg=1.0, seed=6, guide=guide, guidance=w)
    c = 0.4 + w * (0.9 - 0.4)
    assert torch.allclose(out, (start(6) * (1 - c / n) ** n).clamp(-1, 1), atol=1e-5), "autoguidance, cfg 1"
    cfg = 2.5
    out = sample_images(main, tokens(), steps=n, cfg=cfg, seed=6, guide=guide, guidance=w)
    c_main, c_guide = 0.3 + cfg * (0.9 - 0.3), 0.1 + cfg * (0.4 - 0.1)
    c = c_guide + w * (c_main - c_guide)
    assert torch.allclose(out, (start(6) * (1 - c / n) ** n).clamp(-1, 1), atol=1e-5), "CFG inside each model first"
    unused = Linear(0.4)
    sample_images(main, tokens(), steps=n, cfg=1.0, seed=6, guide=unused, guidance=1.0)
    assert unused.times == [], "guidance 1 is the main model alone: no guide forward"


def test_a_tiny_dit_samples_images_of_the_right_shape_in_range():
    """On a real (tiny) DiT: images [B, 3, S, S] in [-1, 1], finite, and the caption changes them under CFG."""
    model = dit(dtype=torch.float32).eval()
    tok = tokens()
    out = sample_images(model, tok, steps=3, cfg=3.0, seed=0)
    other = sample_images(model, tok.flip(0), steps=3, cfg=3.0, seed=0)
    assert out.shape == (3, 3, SIZE, SIZE) and torch.isfinite(out).all() and out.abs().max() <= 1
    assert not torch.equal(out, other)
