"""Tests for toy2d.py: the exact tree (density, samples, velocity), selection with train_t2i.py's functions on the
toy's loss, a selecting training step by hand, autoguidance, equal compute, the CLI over seeds. (The AJEST switch,
shared with train_t2i.py, is tested in test_online.py.)"""
import json
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import toy2d  # noqa: E402
import train_t2i  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tree():
    return toy2d.build_tree("A")


def test_tree_has_127_branches_of_8_gaussians_with_normalised_weights_and_positive_definite_covariances(tree):
    phi, mu, cov = tree
    assert phi.shape == (1016,) and mu.shape == (1016, 2) and cov.shape == (1016, 2, 2)
    assert math.isclose(phi.sum().item(), 1.0, rel_tol=1e-12) and (phi > 0).all()
    assert (torch.linalg.eigvalsh(cov) > 0).all()
    assert not torch.equal(toy2d.build_tree("B")[1], mu)  # class B is another tree


@pytest.mark.parametrize("t", [0.0, 0.01, 0.05, 0.3, 0.5, 0.8, 0.9])
def test_ideal_velocity_is_tweedie_from_the_autograd_score_of_the_noised_log_density(tree, t):
    # E[eps | x] = -t * score and x = (1 - t) x0 + t eps give v = E[eps - x0 | x] = (-t * score - x) / (1 - t)
    x = toy2d.sample_tree(tree, 64, torch.Generator().manual_seed(1)) * (1 - t) + 0.3 * t
    x = (x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)).requires_grad_()
    grad, = torch.autograd.grad(toy2d.log_density(tree, x, t).sum(), x)
    expected = (-t * grad - x.detach()) / (1 - t)
    assert torch.allclose(toy2d.velocity(tree, x.detach(), t), expected, rtol=1e-7, atol=1e-7)


def test_velocity_at_pure_noise_is_x_minus_the_data_mean(tree):
    x = torch.randn(10, 2, dtype=torch.float64)
    assert torch.allclose(toy2d.velocity(tree, x, 1.0), x - (tree[0][:, None] * tree[1]).sum(0))


def test_exact_samples_have_the_closed_form_mean_and_covariance_of_the_mixture(tree):
    phi, mu, cov = tree
    mean = sum(p * m for p, m in zip(phi, mu))  # E[x] = sum_k phi_k mu_k
    second = sum(p * (c + torch.outer(m, m)) for p, m, c in zip(phi, mu, cov))  # E[x x^T] = sum phi (Sigma + mu mu^T)
    covariance = second - torch.outer(mean, mean)
    n = 200_000
    x = toy2d.sample_tree(tree, n, torch.Generator().manual_seed(0))
    se = (covariance.diagonal() / n).sqrt()
    assert ((x.mean(0) - mean).abs() < 5 * se).all()
    assert torch.allclose(torch.cov(x.T), covariance, atol=5 * covariance.diagonal().max().item() * math.sqrt(2 / n))
    # and the same seed gives the same samples
    assert torch.equal(x[:100], toy2d.sample_tree(tree, n, torch.Generator().manual_seed(0))[:100])


def test_about_99_percent_of_exact_samples_lie_inside_the_outline(tree):
    x = toy2d.sample_tree(tree, 20_000, torch.Generator().manual_seed(3))
    assert 0.98 < (toy2d.log_density(tree, x) >= toy2d.OUTLINE_LOGP).double().mean().item() < 1.0


def test_training_data_has_the_asked_fraction_of_bad_points_half_of_each_kind(tree):
    x, label = toy2d.make_data(tree, toy2d.build_tree("B"), 1000, 0.2, torch.Generator().manual_seed(0))
    assert x.shape == (1000, 2) and x.dtype == torch.float32
    assert (label == 0).sum() == 800 and (label == 1).sum() == 100 and (label == 2).sum() == 100


def models(seed=0, width=16):
    torch.manual_seed(seed)
    return toy2d.MLP(width)


def test_autoguidance_with_w_1_is_the_main_model_and_with_guide_equal_main_is_main_for_any_w():
    main, guide = models(0), models(1, width=8)
    x, t = torch.randn(32, 2), torch.rand(32)
    with torch.no_grad():
        assert torch.equal(toy2d.autoguided(main, guide, 1.0)(x, t), main(x, t))
        for w in [0.0, 0.5, 2.0, 3.7]:
            assert torch.equal(toy2d.autoguided(main, main, w)(x, t), main(x, t))  # lerp(a, a, w) = a exactly
        v2 = toy2d.autoguided(main, guide, 2.0)(x, t)
        assert torch.allclose(v2, 2 * main(x, t) - guide(x, t), atol=1e-5)  # D_w = w D1 + (1 - w) D0


def test_learnability_of_two_identical_models_is_exactly_zero_because_both_see_the_same_draws():
    a, b = models(0), models(0)
    x0, t, noise = torch.randn(100, 2), torch.rand(100), torch.randn(100, 2)
    learnability = lambda learner, ref, mode="jest": train_t2i.learnability(  # noqa: E731 (as toy2d.train calls it)
        lambda m: toy2d.rf_loss(m, x0, t, noise), learner, ref, mode, both=True)
    s, l_learn, l_ref = learnability(a, b)
    assert torch.equal(s, torch.zeros(100)) and torch.equal(l_learn, l_ref)
    # two different models: the learner's loss minus the reference's, each on the same (t, eps)
    c = models(1)
    score = learnability(a, c)[0]
    with torch.no_grad():
        assert torch.equal(score, toy2d.rf_loss(a, x0, t, noise) - toy2d.rf_loss(c, x0, t, noise))
    assert score.abs().min() > 0
    # the variants: hard learner = learner loss, easy reference = minus reference loss
    assert torch.equal(learnability(a, models(1), "hard_learner")[0], l_learn)
    assert torch.equal(learnability(models(1), a, "easy_reference")[0], -l_ref)


def test_selection_picks_exactly_b_distinct_indices_and_is_deterministic_for_a_seed():
    score = torch.randn(640, generator=torch.Generator().manual_seed(0))
    pick = lambda seed: train_t2i.jest_select(score, 128, 16, 0.5, torch.Generator().manual_seed(seed))
    a = pick(0)
    assert len(a) == 128 and len(set(a.tolist())) == 128 and 0 <= a.min() and a.max() < 640
    assert torch.equal(a, pick(0)) and not torch.equal(a, pick(1))
    assert len(set(train_t2i.jest_select(score, 100, 7, 1.0, torch.Generator()).tolist())) == 100  # uneven chunks


def test_selection_prefers_high_scores_more_at_low_temperature():
    score = torch.linspace(-1, 1, 500)
    pick = lambda temp: train_t2i.jest_select(score, 100, 16, temp, torch.Generator().manual_seed(0))
    mean_pick = lambda temp: score[pick(temp)].mean()
    assert mean_pick(0.01) > 0.79 > mean_pick(0.3) > 0.2 > mean_pick(100.0).abs()  # greedy top 100: mean 0.8


def test_a_jest_step_trains_on_the_super_batch_points_of_highest_learnability_with_the_draws_they_were_scored_on(tree):
    """One step of toy2d.train at a tiny temperature, redone by hand: the same stream's super-batch (points, t,
    eps), learnability = learner loss - reference loss on those draws, the top 8 of 40, one Adam step on them."""
    x, label = toy2d.make_data(tree, toy2d.build_tree("B"), 512, 0.2, torch.Generator().manual_seed(0))
    reference, learner, by_hand = models(0, width=8), models(1), models(1)
    toy2d.train(learner, x, label, 1, 8, 1e-2, 5, "cpu", reference, "jest", factor=5, temperature=1e-6)
    gen = torch.Generator().manual_seed(5)  # toy2d.train's draws, in its order
    idx, t, noise = torch.randint(len(x), (40,), generator=gen), toy2d.sample_t(40, gen), torch.randn(40, 2, generator=gen)
    with torch.no_grad():
        score = toy2d.rf_loss(by_hand, x[idx], t, noise) - toy2d.rf_loss(reference, x[idx], t, noise)
    top = score.topk(8).indices
    assert set(top.tolist()) != set(range(8))  # the selection matters here: not the super-batch's first rows
    opt = torch.optim.Adam(by_hand.parameters(), lr=1e-2, betas=(0.9, 0.99))
    toy2d.rf_loss(by_hand, x[idx[top]], t[top], noise[top]).mean().backward()
    opt.step()
    assert all(torch.allclose(p, q, rtol=0, atol=1e-7) for p, q in zip(learner.parameters(), by_hand.parameters()))


def test_time_grid_runs_from_pure_noise_to_data_and_decreases():
    ts = toy2d.time_grid(32)
    assert len(ts) == 33 and ts[0] == 1 and ts[-1] == 0 and (ts[1:] < ts[:-1]).all()


def test_euler_with_the_exact_velocity_lands_inside_the_outline(tree):
    x = toy2d.sample(lambda xs, t: toy2d.velocity(tree, xs, t[0].item()), 300, 32, seed=0)
    assert (toy2d.log_density(tree, x.double()) >= toy2d.OUTLINE_LOGP).double().mean() > 0.9


def test_the_equal_compute_copy_is_exactly_the_run_trained_for_that_many_steps(tree):
    x, label = toy2d.make_data(tree, toy2d.build_tree("B"), 512, 0.2, torch.Generator().manual_seed(0))
    reference, learner, retrained = models(0, width=8), models(1), models(1)
    full, (copy, at_equal) = toy2d.train(learner, x, label, 30, 32, 1e-2, 2, "cpu", reference, "jest")
    again, _ = toy2d.train(retrained, x, label, at_equal["steps"], 32, 1e-2, 2, "cpu", reference, "jest")
    assert 0 < at_equal["steps"] < full["steps"] and again["flops"] == at_equal["flops"]
    assert all(torch.equal(p, q) for p, q in zip(copy.parameters(), retrained.parameters()))
    # and within one step's FLOPs of the uniform run's budget: 30 uniform steps
    uniform, nothing = toy2d.train(models(1), x, label, 30, 32, 1e-2, 2, "cpu")
    assert nothing is None and 0 <= uniform["flops"] - at_equal["flops"] < at_equal["step_flops"][1]


TINY = ["--preset", "tiny", "--device", "cpu", "--n-eval", "64"]


def test_tiny_cli_run_writes_its_outputs_and_repeats_exactly_with_the_same_seed(tmp_path):
    flags = TINY + ["--online", "none,early_ajest", "--seeds", "1"]
    a = toy2d.main(["--out", str(tmp_path / "a")] + flags)
    for name in ["toy_results.json", "toy_results.md", "toy_samples.png"]:
        assert os.path.getsize(tmp_path / "a" / name) > 0
    saved = json.loads((tmp_path / "a" / "toy_results.json").read_text())["per_seed"]
    assert len(saved) == 1 and len(saved[0]["rows"]) == 2 + 1 + 3 * 2  # exact x 2, guide, (2 runs + 1 copy) x 2 w
    logs = saved[0]["logs"]
    assert logs["early_ajest"]["kept"] == logs["none"]["kept"] == 60 * 64  # equal samples
    assert "| early_ajest |" in (tmp_path / "a" / "toy_results.md").read_text()
    b = toy2d.main(["--out", str(tmp_path / "b")] + flags)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(a["per_seed"][0]["rows"]) == strip(b["per_seed"][0]["rows"])


def test_two_seeds_differ_and_equal_compute_runs_spend_the_uniform_flops_to_within_one_step(tmp_path):
    r = toy2d.main(["--out", str(tmp_path)] + TINY + ["--online", "none,jest,early_ajest", "--seeds", "2"])
    assert [s["seed"] for s in r["per_seed"]] == [0, 1]
    for s in r["per_seed"]:
        uniform = s["logs"]["none"]["flops"]
        for rule in ["jest", "early_ajest"]:
            full, equal = s["logs"][rule], s["logs"][rule + " @ equal compute"]
            assert full["flops"] > uniform >= equal["flops"] > uniform - full["step_flops"][1]  # one scoring step
            assert equal["steps"] < full["steps"] == s["logs"]["none"]["steps"]
    first, second = ([row["loglik"] for row in s["rows"]] for s in r["per_seed"])
    assert len(first) == len(second) == 2 + 1 + 5 * 2 and all(u != v for u, v in zip(first, second))
    md = (tmp_path / "toy_results.md").read_text()
    assert "### At equal samples" in md and "### At equal compute" in md and "Selection overhead:" in md
    row = next(line for line in md.splitlines() if line.startswith("| w16 | jest @ equal compute | 2 |"))
    assert row.count(" ± ") >= 3  # mean ± std over the seeds, for the metrics at least
    assert "| w16 | none | 1 |" in md.split("### At equal compute")[1]  # the uniform run is the yardstick there


@pytest.mark.parametrize("flags", [["--online", "jest,bogus"], ["--factor", "0.5"], ["--chunks", "0"],
                                   ["--temperature", "0"], ["--bad-frac", "1"], ["--steps", "0"], ["--seeds", "0"],
                                   ["--no-such-flag"]])
def test_bad_flags_exit_with_code_2(tmp_path, flags, capsys):
    with pytest.raises(SystemExit) as e:
        toy2d.main(["--out", str(tmp_path)] + TINY + flags)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err
