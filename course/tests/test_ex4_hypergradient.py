"""Exercise 4: the exact one-step hypergradient (metagrad.exact_rater_loss, metagrad.exact_signal).

Everything is checked against an independent computation in float64: the virtual step made by hand on a copy of the
model (per-row gradients, one backward each), and central finite differences of the validation loss after it.
"""
import copy

import torch

from api import exercise_api
from tiny import dit, meta_batch

exact_rater_loss, exact_signal = exercise_api(4)
rf_loss = exercise_api(1)[0]  # exercise 1, which this one needs

ETA = 0.5
W0 = torch.tensor([0.3, 0.1, 0.4, 0.2], dtype=torch.float64)


def setup(seed=0):
    b = meta_batch(seed=seed)
    return dit(), {k: v for k, v in b.items() if k != "feats"}, b


def per_row_grads(model, b):
    """grad_theta L(theta; x_i) of each row on its own draw: a list over rows of lists over parameters."""
    params = list(model.parameters())
    return [torch.autograd.grad(rf_loss(model, b["x"][i:i + 1], b["tok"][i:i + 1], b["t"][i:i + 1],
                                              b["noise"][i:i + 1]).sum(), params) for i in range(len(b["x"]))]


def val_after_virtual_step(model, W, grads, b, eta=ETA):
    """L_val(theta - eta sum_i W_i grad L_i), the virtual step made by hand on a copy: (the loss, the copy)."""
    virtual = copy.deepcopy(model)
    with torch.no_grad():
        for k, p in enumerate(virtual.parameters()):
            p.sub_(eta * sum(W[i] * grads[i][k] for i in range(len(W))))
    return rf_loss(virtual, b["x_val"], b["tok_val"], b["t_val"], b["noise_val"]).mean(), virtual


def test_exact_rater_loss_is_the_validation_loss_after_a_virtual_sgd_step():
    """exact_rater_loss(W) = L_val(theta - eta sum_i W_i grad L(theta; x_i)), a scalar, the same as made by hand."""
    model, rest, b = setup()
    got = exact_rater_loss(model, W0, **rest, eta=ETA)
    expected, _ = val_after_virtual_step(model, W0, per_row_grads(model, b), b)
    assert got.dim() == 0 and torch.allclose(got, expected, rtol=1e-10), (got.item(), expected.item())


def test_exact_rater_loss_is_a_function_of_W_that_autograd_can_differentiate():
    """Built with create_graph=True: the loss has a gradient with respect to W (the weights enter the virtual step)."""
    model, rest, _ = setup()
    W = W0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(exact_rater_loss(model, W, **rest, eta=ETA), W)
    assert grad.shape == (4,) and grad.abs().min() > 0, \
        "each W_i must enter the virtual step: build the gradients with create_graph=True"


def test_exact_signal_matches_central_finite_differences_in_float64():
    """h . v = (L_val(theta'(W + e v)) - L_val(theta'(W - e v))) / 2e, the virtual step made by hand, in 3 random
    directions v (relative error < 1e-6)."""
    model, rest, b = setup()
    h = exact_signal(model, W0, ETA, **b)
    grads, eps = per_row_grads(model, b), 1e-5
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        v = torch.randn(4, generator=g, dtype=torch.float64)
        v /= v.norm()
        fd = (val_after_virtual_step(model, W0 + eps * v, grads, b)[0] -
              val_after_virtual_step(model, W0 - eps * v, grads, b)[0]).item() / (2 * eps)
        exact = (h * v).sum().item()
        assert abs(fd) > 1e-8 and abs(fd - exact) < 1e-6 * abs(fd), \
            f"h . v = {exact:.10g}, finite differences {fd:.10g}"


def test_exact_signal_is_minus_eta_grad_val_after_the_step_dot_grad_row():
    """Chain rule: d theta' / d W_i = -eta grad L(theta; x_i), so h_i = -eta grad L_val(theta') . grad L(theta; x_i)."""
    model, _, b = setup(1)
    h = exact_signal(model, W0, ETA, **b)
    grads = per_row_grads(model, b)
    loss_val, virtual = val_after_virtual_step(model, W0, grads, b)
    grad_val = torch.autograd.grad(loss_val, list(virtual.parameters()))
    expected = torch.stack([-ETA * sum((gv * gi).sum() for gv, gi in zip(grad_val, grads[i])) for i in range(4)])
    assert h.shape == (4,) and torch.allclose(h, expected, rtol=1e-9, atol=0), (h, expected)


def test_stepping_the_weights_against_h_lowers_the_validation_loss_after_the_virtual_step():
    """A small step W - 0.05 h / |h| makes the (hand-made) virtual step better for the validation batch."""
    model, _, b = setup(2)
    h = exact_signal(model, W0, ETA, **b)
    grads = per_row_grads(model, b)
    before, _ = val_after_virtual_step(model, W0, grads, b)
    after, _ = val_after_virtual_step(model, W0 - 0.05 * h / h.norm(), grads, b)
    assert after < before, (after.item(), before.item())


def test_a_zero_virtual_step_gives_a_zero_signal():
    """eta = 0: theta' = theta does not depend on W, so every h_i is exactly 0."""
    model, _, b = setup()
    h = exact_signal(model, W0, 0.0, **b)
    assert torch.count_nonzero(h) == 0, h


def test_the_signal_is_detached_and_nothing_leaks_into_the_primary_or_the_weights():
    """h carries no graph, the primary's .grad stays None and the caller's W gets no .grad."""
    model, _, b = setup()
    W = W0.clone().requires_grad_(True)
    h = exact_signal(model, W, ETA, **b)
    assert not h.requires_grad, "return the gradient detached"
    assert all(p.grad is None for p in model.parameters()), "use torch.autograd.grad, not .backward()"
    assert W.grad is None, "differentiate with respect to a detached copy of W"


def test_the_loss_train_shortcut_gives_the_same_signal():
    """Passing loss_train = L(theta; x_i) with its graph (as meta_step does) changes nothing but the cost."""
    model, _, b = setup(3)
    h = exact_signal(model, W0, ETA, **b)
    loss_train = rf_loss(model, b["x"], b["tok"], b["t"], b["noise"])
    again = exact_signal(model, W0, ETA, loss_train, **b)
    assert torch.allclose(again, h, rtol=1e-12), "use loss_train when it is given"
