"""Autoguidance in the sampler and online batch selection (JEST / AJEST) in train_t2i.py, at tiny 16x16 sizes."""
import copy
import csv
import json
import os
import shutil

import pytest
import torch

import data
import evaluate
import proxy
import train_t2i
from conftest import assert_same, weights

TINY = ["--width", "32", "--depth", "1", "--batch-size", "8", "--device", "cpu", "--grid-every", "0"]
CONFIG = dict(image_size=16, patch=2, width=32, depth=1, heads=2, text_depth=1, vocab_size=24, max_tokens=20)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed=0, **kw):
    """A small DiT with its zero-initialised gates and output nudged, so that it predicts something."""
    torch.manual_seed(seed)
    model = proxy.DiT(**{**CONFIG, **kw})
    for p in model.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def shapes(tiny_shapes):
    d = data.load_dataset(tiny_shapes)
    assert len(d["vocab"]) == CONFIG["vocab_size"] and d["tokens"].shape[1] <= CONFIG["max_tokens"]
    return d




# ----------------------------------------------------------------------------------------------------------------
# Autoguidance in proxy.sample_images

@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_autoguidance_with_weight_one_gives_the_main_models_samples(shapes, cfg):
    main, guide, tok = tiny_model(0), tiny_model(1, width=16), shapes["tokens"][:3]
    plain = proxy.sample_images(main, tok, steps=3, cfg=cfg, seed=5)
    assert torch.equal(plain, proxy.sample_images(main, tok, steps=3, cfg=cfg, seed=5, guide=guide, guidance=1.0))
    assert not torch.equal(plain, proxy.sample_images(main, tok, steps=3, cfg=cfg, seed=5, guide=guide, guidance=2.0))


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_autoguidance_with_the_main_model_as_its_own_guide_changes_nothing_for_any_weight(shapes, cfg):
    main, tok = tiny_model(0), shapes["tokens"][:3]
    plain = proxy.sample_images(main, tok, steps=3, cfg=cfg, seed=5)
    for w in [0.0, 0.5, 2.0, 3.0]:
        assert torch.equal(plain, proxy.sample_images(main, tok, steps=3, cfg=cfg, seed=5, guide=copy.deepcopy(main),
                                                      guidance=w)), w


def test_autoguidance_is_the_guides_prediction_extrapolated_towards_the_main_models(shapes):
    """Hand-rolled Euler with v = v_guide + w (v_main - v_guide), CFG off: docs/METHOD.md's D_w = w D1 + (1 - w) D0."""
    main, guide, tok, w = tiny_model(0), tiny_model(1, width=16, depth=2), shapes["tokens"][:3], 2.5
    x = torch.randn((3, 3, 16, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for i in range(4):
            t = torch.full((3,), 1 - i / 4)
            v0, v1 = guide(x, t, tok), main(x, t, tok)
            x = x - (v0 + w * (v1 - v0)) / 4
    got = proxy.sample_images(main, tok, steps=4, cfg=1.0, seed=5, guide=guide, guidance=w)
    assert torch.allclose(got, x.clamp(-1, 1), atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Scores, JEST sampling and the AJEST switch

def super_batch(shapes, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(len(shapes["images"]), (n,), generator=g)
    return (data.to_float(shapes["images"][rows]), shapes["tokens"][rows], proxy.sample_t(n, g),
            torch.randn((n, 3, 16, 16), generator=g))


def test_learnability_of_two_identical_models_is_exactly_zero_because_both_see_the_same_draws(shapes):
    x0, tok, t, noise = super_batch(shapes)
    loss = lambda model: proxy.rf_loss(model, x0, tok, t=t, noise=noise)  # noqa: E731 (the draws fixed here)
    learner = tiny_model(0)
    score, l_learn, l_ref = train_t2i.learnability(loss, learner, copy.deepcopy(learner), "jest")
    assert score.shape == (12,) and torch.count_nonzero(score) == 0 and torch.equal(l_learn, l_ref)
    # with another reference: exactly the difference of the two losses on those draws
    ref = tiny_model(1, width=16)
    score, l_learn, l_ref = train_t2i.learnability(loss, learner, ref, "jest")
    assert torch.equal(l_learn, proxy.rf_loss(learner, x0, tok, t=t, noise=noise))
    assert torch.equal(l_ref, proxy.rf_loss(ref, x0, tok, t=t, noise=noise))
    assert torch.equal(score, l_learn - l_ref) and torch.count_nonzero(score) == 12
    hard, _, none = train_t2i.learnability(loss, learner, ref, "hard_learner")
    easy, none2, _ = train_t2i.learnability(loss, learner, ref, "easy_reference")
    assert torch.equal(hard, l_learn) and torch.equal(easy, -l_ref) and none is None and none2 is None
    # both=True (toy2d.py): the same score, and both losses whatever the mode
    for mode, expected in [("hard_learner", hard), ("easy_reference", easy)]:
        score, a, b = train_t2i.learnability(loss, learner, ref, mode, both=True)
        assert torch.equal(score, expected) and torch.equal(a, l_learn) and torch.equal(b, l_ref)


def test_early_ajest_switches_off_exactly_when_the_learner_first_beats_the_reference_and_never_back_on():
    # (learner mean, reference mean) per super-batch: the learner first falls below the reference at step 3
    means = [(2.0, 1.0), (1.5, 1.0), (1.0, 1.0), (0.9, 1.0), (1.2, 1.0), (0.5, 1.0), (3.0, 1.0)]  # 1.0 < 1.0: no
    switches = {m: train_t2i.AjestSwitch(m) for m in ["early_ajest", "late_ajest", "jest", "none"]}
    seen, scoring = {m: [] for m in switches}, {m: [] for m in switches}
    for step, (ml, mr) in enumerate(means):
        for name, switch in switches.items():
            scoring[name].append(switch.scoring)  # whether this step's super-batch is scored at all
            seen[name].append(switch.update(step, ml, mr))
    assert seen["early_ajest"] == [True, True, True, False, False, False, False]
    assert scoring["early_ajest"] == [True, True, True, True, False, False, False]  # no scoring after the switch
    assert seen["late_ajest"] == [False, False, False, True, True, True, True] and scoring["late_ajest"] == [True] * 7
    assert seen["jest"] == scoring["jest"] == [True] * 7 and switches["jest"].crossed_at is None
    assert seen["none"] == scoring["none"] == [False] * 7
    early, late = switches["early_ajest"], switches["late_ajest"]
    assert early.crossed_at == late.crossed_at == 3 and not early.watching and not late.watching


def test_jest_select_returns_distinct_rows_of_the_super_batch_deterministically_for_a_seed():
    score = torch.randn(40, generator=torch.Generator().manual_seed(0))
    pick = lambda seed, **kw: train_t2i.jest_select(score, 8, generator=torch.Generator().manual_seed(seed), **kw)
    for kw in [dict(), dict(chunks=3, temperature=1.0), dict(chunks=100, temperature=10.0)]:
        keep = pick(0, **kw)
        assert keep.shape == (8,) and keep.dtype == torch.int64 and len(set(keep.tolist())) == 8
        assert 0 <= keep.min() and keep.max() < 40
        assert torch.equal(keep, pick(0, **kw))
    assert not torch.equal(pick(0, temperature=10.0), pick(1, temperature=10.0))
    top = set(score.topk(8).indices.tolist())
    assert set(pick(0, temperature=1e-6).tolist()) == top and set(pick(3, temperature=0).tolist()) == top


def test_jest_select_samples_rows_in_proportion_to_the_softmax_of_score_over_temperature():
    score, temperature, n = torch.tensor([0.0, 0.1, 0.2, 0.4]), 0.2, 20000
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.cat([train_t2i.jest_select(score, 1, temperature=temperature, generator=g)
                                       for _ in range(n)]), minlength=4)
    assert torch.allclose(counts / n, (score / temperature).softmax(0), atol=0.015)


def test_online_selection_at_temperature_zero_keeps_the_rows_of_highest_learnability(shapes):
    learner, reference = tiny_model(0), tiny_model(1, width=16)
    sel = train_t2i.OnlineSelection("jest", reference, batch_size=4, factor=3, temperature=0.0)
    x0, tok, t, noise = super_batch(shapes)
    images = ((x0 + 1) * 127.5).round().byte()
    keep = sel(0, learner, images, tok, t, noise, torch.Generator())
    x = data.to_float(images)
    with torch.no_grad():  # learnability by hand: learner minus reference on the same draws
        score = proxy.rf_loss(learner, x, tok, t=t, noise=noise) - proxy.rf_loss(reference, x, tok, t=t, noise=noise)
    top = set(score.topk(4).indices.tolist())
    assert set(keep.tolist()) == top and top != {0, 1, 2, 3}


def test_early_ajest_scores_until_the_switch_then_draws_plain_batches(shapes):
    """After the switch early AJEST draws only batch_size rows and never runs either model again."""
    learner = tiny_model(0)
    sel = train_t2i.OnlineSelection("early_ajest", copy.deepcopy(learner), batch_size=4, factor=3)
    x0, tok, t, noise = super_batch(shapes)
    images, gen = ((x0 + 1) * 127.5).round().byte(), torch.Generator()
    keep = sel(0, learner, images, tok, t, noise, gen)  # equal losses: the learner has not beaten the reference yet
    assert sel.switch.on and sel.switch.watching and sel.size == 12 and len(set(keep.tolist())) == 4
    bad = tiny_model(1, width=16)
    bad.out.bias.data.fill_(10.0)  # predicts v = 10 everywhere: a reference the learner beats at once
    sel.reference = bad
    keep = sel(1, learner, images, tok, t, noise, gen)
    assert sel.switch.crossed_at == 1 and not sel.switch.on and torch.equal(keep, torch.arange(4)) and sel.size == 4
    assert torch.equal(sel(2, learner, images[:4], tok[:4], t[:4], noise[:4], gen), torch.arange(4))
    assert sel.scored == 24 and sel.log()["selecting"] == 0


# ----------------------------------------------------------------------------------------------------------------
# train_t2i.py --online and --guide-at, end to end

@pytest.fixture(scope="module")
def guide_run(tiny_shapes, tmp_path_factory):
    """A uniform run of 8 steps that keeps its EMA at step 2 as guide.pt (and snapshots every 2 steps)."""
    out = str(tmp_path_factory.mktemp("guide") / "run")
    train_t2i.main(["--data", tiny_shapes, "--out", out, "--steps", "8", *TINY, "--lr", "3e-3", "--guide-at", "0.25",
                    "--snapshot-every", "2", "--ckpt-every", "100"])
    return out


def read_log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_guide_at_saves_the_ema_at_that_step_and_it_is_the_default_reference(tiny_shapes, guide_run, tmp_path):
    guide, ckpt = proxy.load_proxy(os.path.join(guide_run, "guide.pt"))
    assert ckpt["step"] == 2 and ckpt["weights"] == "ema"
    assert_same(guide.state_dict(), weights(os.path.join(guide_run, "snapshots", "step2.pt")))
    out = str(tmp_path / "run")  # a folder that already holds a guide.pt: --online takes it as the reference
    os.makedirs(out)
    shutil.copy(os.path.join(guide_run, "guide.pt"), out)
    train_t2i.main(["--data", tiny_shapes, "--out", out, "--steps", "2", *TINY, "--online", "easy_reference"])
    assert_same(weights(os.path.join(out, "train_state.pt"), "select")["reference"], guide.state_dict())


def test_hard_learner_needs_no_reference_and_resumes_exactly(tiny_shapes, tmp_path):
    args = ["--data", tiny_shapes, *TINY, "--online", "hard_learner", "--super-batch-factor", "2", "--ckpt-every", "2"]
    train_t2i.main([*args, "--out", str(tmp_path / "whole"), "--steps", "4"])
    train_t2i.main([*args, "--out", str(tmp_path / "split"), "--steps", "2"])
    train_t2i.main([*args, "--out", str(tmp_path / "split"), "--steps", "4", "--resume"])
    a, b = (torch.load(tmp_path / r / "train_state.pt", weights_only=True) for r in ("whole", "split"))
    assert_same(a["model"], b["model"])
    assert "reference" not in a["select"] and a["select"]["scored"] == b["select"]["scored"] == 4 * 16


@pytest.mark.parametrize("mode", ["jest", "early_ajest"])
def test_online_run_works_end_to_end_and_resume_gives_the_uninterrupted_runs_weights(tiny_shapes, tmp_path, guide_run,
                                                                                   mode):
    """The reference is the guide run's step-2 EMA; the early AJEST learner overtakes it after a few steps, so the
    resumed half has to restore the switch (drawing plain batches once it is off) to match the uninterrupted run."""
    reference = os.path.join(guide_run, "guide.pt")
    args = ["--data", tiny_shapes, *TINY, "--online", mode, "--reference", reference, "--ckpt-every", "3",
            "--super-batch-factor", "4", "--lr", "3e-3"]
    whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
    train_t2i.main([*args, "--out", whole, "--steps", "6"])
    train_t2i.main([*args, "--out", split, "--steps", "3"])
    train_t2i.main([*args, "--out", split, "--steps", "6", "--resume"])
    for name in ["train_state.pt", "model.pt"]:
        assert_same(weights(os.path.join(whole, name)), weights(os.path.join(split, name)))
    a, b = (torch.load(os.path.join(r, "train_state.pt"), weights_only=True) for r in (whole, split))
    assert_same(a["ema"], b["ema"])
    state = lambda s: {k: v for k, v in s.items() if k not in ("reference", "score_seconds")}
    assert state(a["select"]) == state(b["select"])
    assert_same(a["select"]["reference"], weights(reference))
    log = read_log(os.path.join(whole, "log.csv"))[-1]
    assert log["step"] == "6" and log["samples"] == str(6 * 8) and float(log["seconds"]) >= float(log["score_seconds"])
    if mode == "jest":
        assert log["scored"] == str(6 * 32) and log["selecting"] == "1" and a["select"]["crossed_at"] is None
    else:  # scored super-batches until the switch, plain batches after
        assert a["select"]["crossed_at"] is not None and log["selecting"] == "0"
        assert log["scored"] == str((a["select"]["crossed_at"] + 1) * 32)


def test_online_without_a_reference_or_with_a_mismatched_one_exits_2_and_writes_nothing(tiny_shapes, tmp_path, capsys):
    out = tmp_path / "run"
    other = str(tmp_path / "ref32.pt")
    proxy.save_checkpoint(other, tiny_model(0, image_size=32, patch=4), 0, data.shapes_vocab())
    for extra, fragment in [([], "needs a reference"), (["--reference", other], "32px"),
                            (["--reference", other, "--online", "none"], "uses no --reference")]:
        with pytest.raises(SystemExit) as e:
            train_t2i.main(["--data", tiny_shapes, "--out", str(out), *TINY, "--online", "jest", *extra])
        err = capsys.readouterr().err
        assert e.value.code == 2 and fragment in err and err.count("\n") == 1, err
        assert not out.exists()


# ----------------------------------------------------------------------------------------------------------------
# evaluate.py --guide

@pytest.fixture(scope="module")
def eval_setup(tiny_shapes, shapes, tmp_path_factory):
    """A copy of the data (the evaluator is cached there), a model, and a smaller guide."""
    root = tmp_path_factory.mktemp("eval")
    d = str(root / "shapes")
    shutil.copytree(tiny_shapes, d)
    model, guide = str(root / "model.pt"), str(root / "guide.pt")
    proxy.save_checkpoint(model, tiny_model(0), 10, shapes["vocab"])
    proxy.save_checkpoint(guide, tiny_model(1, width=16), 2, shapes["vocab"])
    return d, model, guide, root


def run_evaluate(monkeypatch, d, model, out, *extra):
    for k, v in dict(steps=5, batch_size=32, n_train=200, n_held_out=100).items():
        monkeypatch.setitem(evaluate.ENCODER, k, v)
    evaluate.main(["--data", d, "--model", model, "--out", out, "--n-samples", "6", "--steps", "2", "--device", "cpu",
                   "--encoder-steps", "5", *extra])
    return json.load(open(out))


def test_evaluate_with_a_guide_records_it_and_the_model_as_its_own_guide_changes_nothing(eval_setup, monkeypatch):
    d, model, guide, root = eval_setup
    plain = run_evaluate(monkeypatch, d, model, str(root / "plain.json"))
    guided = run_evaluate(monkeypatch, d, model, str(root / "guided.json"), "--guide", guide, "--guidance", "2")
    itself = run_evaluate(monkeypatch, d, model, str(root / "itself.json"), "--guide", model, "--guidance", "3")
    assert plain["guide"] is None and plain["guidance"] == 1.0
    assert guided["guide"] == os.path.abspath(guide) and guided["guidance"] == 2.0
    assert guided["fid"] != plain["fid"] and itself["fid"] == plain["fid"]


def test_evaluate_refuses_a_guide_of_another_image_size_or_a_weight_without_a_guide(eval_setup, monkeypatch, capsys):
    d, model, _, root = eval_setup
    other = str(root / "guide32.pt")
    proxy.save_checkpoint(other, tiny_model(0, image_size=32, patch=4), 0, data.shapes_vocab())
    for extra, fragment in [(["--guide", other], "does not match"), (["--guidance", "2"], "needs --guide")]:
        out = str(root / "bad" / "metrics.json")
        with pytest.raises(SystemExit) as e:
            run_evaluate(monkeypatch, d, model, out, *extra)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and fragment in err and len(err.splitlines()) == 1, err
        assert not os.path.exists(out)


def test_help_documents_the_online_and_guidance_flags(capsys):
    for main, flags in [(train_t2i.main, ["--online", "--reference", "--super-batch-factor", "--chunks", "--temperature",
                                          "--guide-at", "early_ajest", "late_ajest", "hard_learner", "easy_reference"]),
                        (evaluate.main, ["--guide", "--guidance"])]:
        with pytest.raises(SystemExit) as e:
            main(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert e.value.code == 0 and all(flag in text for flag in flags)
