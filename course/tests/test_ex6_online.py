"""Exercise 6: online selection (train_t2i.learnability, train_t2i.jest_select, train_t2i.AjestSwitch).

Scores are checked with a loss whose value for each model is known and that counts its calls, and on tiny DiTs
against the losses computed by hand on the same draws; sampling by counting against the exact probabilities of
sequential draws without replacement from softmax(score / temperature); the switch on hand-made sequences of losses.
"""
import copy

import pytest
import torch

import data
import proxy
import train_t2i
from api import exercise_api
from tiny import SIZE, captions, dit, pictures

learnability, jest_select, AjestSwitch = exercise_api(6)
rf_loss = exercise_api(1)[0]  # exercise 1, which this one needs

N = 12


def super_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (pictures(N, g, torch.float32), captions(N, g), proxy.sample_t(N, g),
            torch.randn((N, 3, SIZE, SIZE), generator=g))


class Counting(torch.nn.Module):
    """Wraps a model and counts its forward passes."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x, t, tokens):
        self.calls += 1
        return self.model(x, t, tokens)


def models():
    return dit(0, dtype=torch.float32).eval(), dit(1, dtype=torch.float32, width=8).eval()


class KnownLoss:
    """loss(model) for two stand-in models, "learner" and "reference": fixed per-row losses (with a gradient, as a
    real loss has), and a record of the models it was called with."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.values = {m: (torch.rand(N, generator=g) + 0.1).requires_grad_() for m in ("learner", "reference")}
        self.calls = []

    def __call__(self, model):
        self.calls.append(model)
        return self.values[model] * 1.0


# ----------------------------------------------------------------------------------------------------------------
# Scores

def test_learnability_of_two_identical_models_is_exactly_zero():
    """loss(model) fixes the draws, so a learner scored against its own copy gets exactly 0 on every row."""
    learner = models()[0]
    x0, tok, t, noise = super_batch()
    loss = lambda m: rf_loss(m, x0, tok, t=t, noise=noise)
    score, l_learn, l_ref = learnability(loss, learner, copy.deepcopy(learner), "jest")
    assert score.shape == (N,) and torch.count_nonzero(score) == 0 and torch.equal(l_learn, l_ref)


@pytest.mark.parametrize("mode", ["jest", "early_ajest", "late_ajest"])
def test_learnability_is_the_learners_loss_minus_the_references(mode):
    """(score, learner loss, reference loss) with score = loss(learner) - loss(reference), loss called once for each
    model; scoring needs no gradients."""
    loss = KnownLoss(1)
    score, l_learn, l_ref = learnability(loss, "learner", "reference", mode)
    a, b = (loss.values[m].detach() for m in ("learner", "reference"))
    assert sorted(loss.calls) == ["learner", "reference"], f"loss called for {loss.calls}: once for each model"
    assert torch.equal(l_learn, a) and torch.equal(l_ref, b), "return the two models' losses as loss(model) gave them"
    assert torch.equal(score, a - b), "learnability = loss(learner) - loss(reference)"
    assert not score.requires_grad, "scoring needs no gradients (keep the decorator)"


def test_hard_learner_and_easy_reference_run_only_the_model_they_need():
    """hard_learner: (L(learner), L(learner), None), loss never called for the reference; easy_reference:
    (-L(reference), None, L(reference)), never for the learner."""
    loss = KnownLoss(2)
    a, b = (loss.values[m].detach() for m in ("learner", "reference"))
    score, l_learn, l_ref = learnability(loss, "learner", "reference", "hard_learner")
    assert loss.calls == ["learner"] and l_ref is None, "hard_learner: the reference is not run, its loss is None"
    assert torch.equal(score, a) and torch.equal(l_learn, a)
    loss.calls = []
    score, l_learn, l_ref = learnability(loss, "learner", "reference", "easy_reference")
    assert loss.calls == ["reference"] and l_learn is None, "easy_reference: the learner is not run, its loss is None"
    assert torch.equal(score, -b) and torch.equal(l_ref, b)


@pytest.mark.parametrize("mode", ["jest", "hard_learner", "easy_reference"])
def test_both_computes_both_losses_whatever_the_mode_and_leaves_the_score(mode):
    """both=True: loss is called for the learner and the reference in every mode, both are returned, and the score is
    the mode's own."""
    loss = KnownLoss(3)
    a, b = (loss.values[m].detach() for m in ("learner", "reference"))
    score, l_learn, l_ref = learnability(loss, "learner", "reference", mode, both=True)
    assert sorted(loss.calls) == ["learner", "reference"] and torch.equal(l_learn, a) and torch.equal(l_ref, b)
    assert torch.equal(score, dict(jest=a - b, hard_learner=a, easy_reference=-b)[mode])


# ----------------------------------------------------------------------------------------------------------------
# JEST's sampler

def test_jest_select_keeps_distinct_rows_and_repeats_for_a_seed():
    """keep distinct int64 positions in 0..n-1, for any chunks and temperature; the same generator seed repeats them."""
    score = torch.randn(40, generator=torch.Generator().manual_seed(0))
    pick = lambda seed, **kw: jest_select(score, 8, generator=torch.Generator().manual_seed(seed), **kw)
    for kw in [dict(), dict(chunks=3, temperature=1.0), dict(chunks=100, temperature=10.0)]:
        keep = pick(0, **kw)
        assert keep.shape == (8,) and keep.dtype == torch.int64 and len(set(keep.tolist())) == 8, keep
        assert 0 <= keep.min() and keep.max() < 40 and torch.equal(keep, pick(0, **kw))
    assert not torch.equal(pick(0, temperature=10.0), pick(1, temperature=10.0)), "draw from the generator"


def test_temperature_zero_or_tiny_keeps_the_top_rows():
    """Temperature 0 (RHO-LOSS) or 1e-6: exactly the `keep` rows of highest score."""
    score = torch.randn(40, generator=torch.Generator().manual_seed(0))
    top = set(score.topk(8).indices.tolist())
    for temperature in (0.0, 1e-6):
        keep = jest_select(score, 8, temperature=temperature, generator=torch.Generator().manual_seed(3))
        assert set(keep.tolist()) == top, temperature


def test_one_pick_follows_the_softmax_of_score_over_temperature():
    """One row: P(i) = softmax(score / temperature)_i (10000 draws, within 5 binomial standard deviations)."""
    score, temperature, n = torch.tensor([0.0, 0.1, 0.2, 0.4]), 0.2, 10000
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.cat([jest_select(score, 1, temperature=temperature, generator=g)
                                       for _ in range(n)]), minlength=4).double() / n
    p = (score.double() / temperature).softmax(0)
    assert torch.all((counts - p).abs() <= 5 * (p * (1 - p) / n).sqrt()), (counts, p)


@pytest.mark.parametrize("chunks", [1, 2])
def test_two_picks_follow_sequential_sampling_without_replacement(chunks):
    """Two rows, in one chunk or two: P({i, j}) = p_i p_j / (1 - p_i) + p_j p_i / (1 - p_j), p the softmax."""
    score, temperature, n = torch.tensor([0.0, 0.3, 0.6, 1.2]), 0.5, 10000
    g = torch.Generator().manual_seed(1)
    counts = {}
    for _ in range(n):
        pair = tuple(sorted(jest_select(score, 2, chunks=chunks, temperature=temperature,
                                                  generator=g).tolist()))
        counts[pair] = counts.get(pair, 0) + 1
    p = (score.double() / temperature).softmax(0).tolist()
    for i in range(4):
        for j in range(i + 1, 4):
            exact = p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j])
            freq = counts.get((i, j), 0) / n
            assert abs(freq - exact) <= 5 * (exact * (1 - exact) / n) ** 0.5, f"pair {i, j}: {freq:.4f} vs {exact:.4f}"


# ----------------------------------------------------------------------------------------------------------------
# The AJEST switch

MEANS = [(2.0, 1.0), (1.5, 1.0), (1.0, 1.0), (0.9, 1.0), (1.2, 1.0), (0.5, 1.0), (3.0, 1.0)]  # first below at step 3


def run_switch(mode):
    switch = AjestSwitch(mode)
    return switch, [switch.update(step, learner, reference) for step, (learner, reference) in enumerate(MEANS)]


def test_early_ajest_selects_until_the_learner_first_beats_the_reference_then_never_again():
    """early_ajest: on, watching and scoring until the first super-batch with learner mean < reference mean (step 3,
    which is already off); then off for good, neither watching nor scoring; crossed_at = 3."""
    switch = AjestSwitch("early_ajest")
    assert switch.on and switch.watching and switch.scoring, "early AJEST starts selecting, and watching the losses"
    switch, seen = run_switch("early_ajest")
    assert seen == [True, True, True, False, False, False, False], seen
    assert switch.crossed_at == 3 and not switch.on and not switch.watching and not switch.scoring, \
        f"crossed_at {switch.crossed_at}, on {switch.on}, watching {switch.watching}, scoring {switch.scoring}"


def test_late_ajest_starts_selecting_at_the_first_crossing_for_good():
    """late_ajest: off (but watching, so scoring) until step 3, on from step 3 whatever the losses do later."""
    switch = AjestSwitch("late_ajest")
    assert not switch.on and switch.watching and switch.scoring
    switch, seen = run_switch("late_ajest")
    assert seen == [False, False, False, True, True, True, True], seen
    assert switch.crossed_at == 3 and switch.on and not switch.watching and switch.scoring, \
        f"crossed_at {switch.crossed_at}, on {switch.on}, watching {switch.watching}, scoring {switch.scoring}"


@pytest.mark.parametrize("mode", ["jest", "hard_learner", "easy_reference"])
def test_the_other_modes_always_select_and_never_watch(mode):
    """jest, hard_learner, easy_reference: on and scoring at every step, never watching, no crossing recorded."""
    switch, seen = run_switch(mode)
    assert seen == [True] * len(MEANS) and switch.crossed_at is None and not switch.watching and switch.scoring, \
        f"updates {seen}, crossed_at {switch.crossed_at}, watching {switch.watching}, scoring {switch.scoring}"


def test_no_online_selection_never_selects_watches_or_scores():
    """none: off at every step, never watching nor scoring, no crossing recorded."""
    switch, seen = run_switch("none")
    assert seen == [False] * len(MEANS) and switch.crossed_at is None, f"updates {seen}, crossed_at {switch.crossed_at}"
    assert not switch.on and not switch.watching and not switch.scoring, \
        f"on {switch.on}, watching {switch.watching}, scoring {switch.scoring}"


# ----------------------------------------------------------------------------------------------------------------
# In the training hook

def test_the_selection_hook_keeps_the_rows_of_highest_learnability_at_temperature_zero():
    """OnlineSelection (given) with your scores and sampler keeps the top learnability rows of its super-batch."""
    learner, reference = models()
    sel = train_t2i.OnlineSelection("jest", reference, batch_size=4, factor=3, temperature=0.0)
    x0, tok, t, noise = super_batch(3)
    images = ((x0 + 1) * 127.5).round().byte()
    keep = sel(0, learner, images, tok, t, noise, torch.Generator())
    x = data.to_float(images)
    with torch.no_grad():
        score = rf_loss(learner, x, tok, t=t, noise=noise) - rf_loss(reference, x, tok, t=t, noise=noise)
    assert set(keep.tolist()) == set(score.topk(4).indices.tolist()), "the top learnability rows"


def test_early_ajest_in_the_hook_stops_scoring_after_the_switch():
    """A reference that is far worse than the learner: the first super-batch crosses, and from then on the hook
    draws plain batches of batch_size and runs no model."""
    learner, reference = models()
    with torch.no_grad():
        for p in reference.parameters():
            p.mul_(50.0)  # a terrible reference: the learner beats it at once
    sel = train_t2i.OnlineSelection("early_ajest", Counting(reference), batch_size=4, factor=3)
    assert sel.size == 12
    x0, tok, t, noise = super_batch(4)
    images = ((x0 + 1) * 127.5).round().byte()
    sel(0, learner, images, tok, t, noise, torch.Generator())
    assert sel.switch.crossed_at == 0 and sel.size == 4, "after the crossing only batch_size rows are drawn"
    calls = sel.reference.calls
    keep = sel(1, learner, images[:4], tok[:4], t[:4], noise[:4], torch.Generator())
    assert torch.equal(keep, torch.arange(4)) and sel.reference.calls == calls
