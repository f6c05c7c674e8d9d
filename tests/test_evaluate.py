"""Tests for evaluate.py: the FID/KID formulas, the rule-based GenEval checker, the evaluator, and the command line.
Fast by design: 16x16 images and a tiny evaluator (60 steps); the whole file runs in well under a minute."""
import json
import os
import shutil
import sys
import types

import numpy as np
import pytest
import torch

import data
import evaluate

TINY = dict(steps=60, batch_size=64, n_train=2000, n_held_out=200)  # a tiny evaluator (~3 s of CPU): enough to tell matched from shuffled pairs


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def fid_by_eigvals(mu1, s1, mu2, s2):
    """METHOD.md's cross-check: Tr (S1 S2)^{1/2} from the eigenvalues of the (non-symmetric) product."""
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum()
    return ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt


# ----------------------------------------------------------------------------------------------------------------
# FID and KID

def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 32))
    assert abs(evaluate.fid(x, x)) < 1e-8


def test_fid_with_equal_covariances_is_the_squared_mean_distance():
    rng = np.random.default_rng(1)
    s = random_spd(rng, 16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    assert evaluate.frechet_distance(mu1, s, mu2, s) == pytest.approx(((mu1 - mu2) ** 2).sum(), abs=1e-8)


def test_fid_with_diagonal_covariances_matches_the_closed_form():
    rng = np.random.default_rng(2)
    v1, v2 = rng.uniform(0.1, 3, size=12), rng.uniform(0.1, 3, size=12)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    closed = ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum() + ((mu1 - mu2) ** 2).sum()
    assert evaluate.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, abs=1e-10)


@pytest.mark.parametrize("d", [2, 16, 64])
def test_symmetric_eigen_route_matches_the_eigvals_cross_check(d):
    rng = np.random.default_rng(d)
    for _ in range(5):
        mu1, mu2, s1, s2 = rng.normal(size=d), rng.normal(size=d), random_spd(rng, d), random_spd(rng, d)
        assert abs(evaluate.frechet_distance(mu1, s1, mu2, s2) - fid_by_eigvals(mu1, s1, mu2, s2)) < 1e-8


def test_fid_survives_more_dimensions_than_samples():
    x = np.random.default_rng(3).normal(size=(20, 64))  # singular covariances: the route clips tiny negative eigenvalues
    assert np.isfinite(evaluate.fid(x, x + 0.5)) and evaluate.fid(x, x + 0.5) == pytest.approx(64 * 0.25, rel=1e-6)


def test_fid_uses_each_sets_unbiased_covariance_as_numpy_computes_it():
    rng = np.random.default_rng(5)  # few samples and different covariances: 1/N against 1/(N - 1) shows
    a = rng.normal(size=(12, 3)) @ rng.normal(size=(3, 3))
    b = rng.normal(size=(17, 3)) * np.array([0.5, 2.0, 1.0]) + 1.0
    expected = fid_by_eigvals(a.mean(0), np.cov(a, rowvar=False, ddof=1), b.mean(0), np.cov(b, rowvar=False, ddof=1))
    assert evaluate.fid(a, b) == pytest.approx(expected, rel=1e-9)


def test_kid_of_whole_sets_is_the_unbiased_mmd_counted_pair_by_pair():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(7, 4)), rng.normal(size=(7, 4)) + 0.3
    k = lambda x, y: (x @ y / 4 + 1) ** 3
    within = lambda s: sum(k(s[i], s[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    expected = within(a) + within(b) - 2 * sum(k(x, y) for x in a for y in b) / 49
    mean, std = evaluate.kid(a, b, n_subsets=3, subset_size=7)  # each subset is the whole set, shuffled
    assert mean == pytest.approx(expected, rel=1e-10) and std < 1e-10


def test_kid_is_about_zero_for_one_distribution_and_positive_when_shifted():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(400, 32)), rng.normal(size=(400, 32))
    same_mean, same_std = evaluate.kid(a, b, n_subsets=50, subset_size=200)
    shifted_mean, _ = evaluate.kid(a, b + 0.5, n_subsets=50, subset_size=200)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert shifted_mean > 10 * abs(same_mean) and shifted_mean > 5 * same_std


# ----------------------------------------------------------------------------------------------------------------
# The rule-based GenEval checker and the defect rules

@pytest.mark.parametrize("size", [16, 32])
def test_checker_scores_clean_generated_images_at_least_98_percent_in_every_task(size):
    images, _, _, objects = data.generate(300, size, np.random.default_rng(10), {})
    scores = evaluate.geneval(images.numpy(), objects.numpy())
    assert set(scores) == {f"geneval_{t}" for t in evaluate.TASKS} | {"geneval_overall"}
    assert min(scores.values()) >= 0.98, scores


def test_checker_is_near_chance_on_shuffled_prompts():
    images, _, _, objects = data.generate(300, 16, np.random.default_rng(11), {})
    shuffled = objects.numpy()[np.random.default_rng(0).permutation(300)]
    s = evaluate.geneval(images.numpy(), shuffled)
    # chance: a shape of 4 (object ~0.36 with two-object images), a count of 1 or 2 (~0.5), the rest far lower
    assert s["geneval_object"] < 0.5 and s["geneval_count"] < 0.65
    assert s["geneval_colour"] < 0.15 and s["geneval_position"] < 0.15 and s["geneval_binding"] < 0.05
    assert s["geneval_overall"] < 0.3


def test_checker_tolerates_an_object_a_pixel_off_and_mild_pixel_noise():
    images, _, _, objects = data.generate(200, 32, np.random.default_rng(12), {})
    x = images.numpy().astype(float)
    moved = np.roll(x, (1, 1), axis=(-2, -1)) + np.random.default_rng(0).normal(0, 10, x.shape)
    assert evaluate.geneval(np.clip(moved, 0, 255).astype(np.uint8), objects.numpy())["geneval_overall"] >= 0.98


def test_defect_rules_flag_noise_and_watermark_but_not_clean_images():
    images, _, defect, _ = data.generate(300, 16, np.random.default_rng(13), {"noise": 0.3, "watermark": 0.3})
    rates = {name: evaluate.defect_rates(images.numpy()[(defect == data.DEFECT_NAMES.index(name)).numpy()])
             for name in ["clean", "noise", "watermark"]}
    assert rates["clean"] == {"noise_rate": 0.0, "watermark_rate": 0.0}
    assert rates["noise"]["noise_rate"] >= 0.9 and rates["noise"]["watermark_rate"] == 0.0
    assert rates["watermark"]["watermark_rate"] >= 0.95 and rates["watermark"]["noise_rate"] == 0.0


# ----------------------------------------------------------------------------------------------------------------
# The evaluator and evaluate_images

@pytest.fixture(scope="module")
def shapes16(tiny_shapes, tmp_path_factory):
    """A copy of the session's 16x16 set (40 test prompts) with a tiny evaluator cached in it: (folder, test, encoder)."""
    d = str(tmp_path_factory.mktemp("eval16") / "shapes")
    shutil.copytree(tiny_shapes, d)
    test = data.load_dataset(d, "test")
    encoder, _ = evaluate.load_encoder(d, test, **TINY)
    return d, test, encoder


def test_clip_score_of_matched_pairs_exceeds_that_of_shuffled_pairs(shapes16):
    d, test, encoder = shapes16
    info = data.load_pt(os.path.join(d, "evaluator.pt"))
    assert info["retrieval_top1"] > 0.1  # chance is 0.01
    _, img = evaluate.encode_images(encoder, test["images"])
    txt = evaluate.encode_text(encoder, test["tokens"])
    shuffled = txt[torch.from_numpy(np.random.default_rng(0).permutation(len(txt)))]
    assert evaluate.clip_score(img, txt) > evaluate.clip_score(img, shuffled) + 0.2


def test_evaluate_images_of_the_references_gives_zero_fid_and_perfect_geneval(shapes16):
    _, test, encoder = shapes16
    m = evaluate.evaluate_images(test["images"], test, encoder)
    assert abs(m["fid"]) < 1e-6 and m["n_samples"] == len(test["images"])
    assert m["geneval_overall"] == 1.0 and m["noise_rate"] == 0.0 and m["watermark_rate"] == 0.0
    assert m["clip_score"] == pytest.approx(m["clip_score_reference"])
    noisy = torch.randint(0, 256, test["images"].shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    worse = evaluate.evaluate_images(noisy, test, encoder)
    assert worse["fid"] > 0.1 and worse["kid_mean"] > m["kid_mean"] and worse["noise_rate"] == 1.0
    assert worse["clip_score"] < m["clip_score"] and worse["geneval_overall"] < 0.3


def test_real_image_sets_train_the_evaluator_on_val_and_skip_geneval(shapes16, tmp_path):
    d = str(tmp_path / "real")
    shutil.copytree(shapes16[0], d, ignore=shutil.ignore_patterns("evaluator.pt"))
    for split in ["val", "test"]:  # the same pictures, marked as an imported folder without structured labels
        s = data.load_dataset(d, split)
        s.pop("objects")
        s["meta"]["generator"] = "folder"
        data.atomic_save(s, os.path.join(d, f"{split}.pt"))
    test = data.load_dataset(d, "test")
    encoder, info = evaluate.load_encoder(d, test, steps=20)
    assert info["config"]["source"] == "val split"
    m = evaluate.evaluate_images(test["images"], test, encoder)
    assert "geneval_overall" not in m and "noise_rate" not in m and m["watermark_rate"] == 0.0


# ----------------------------------------------------------------------------------------------------------------
# The command line, with a stand-in for proxy.py whose "model" returns each prompt's reference image

def stand_in_proxy(test):
    mod = types.ModuleType("proxy")

    def load_proxy(path, device="cpu", dataset=None):
        ckpt = data.load_pt(path, "model checkpoint")
        if "model" not in ckpt:
            raise data.DataError(f"{path}: not a model checkpoint")
        return test, ckpt

    def sample_images(model, tokens, steps=32, cfg=3.0, seed=0, guide=None, guidance=1.0):
        rows = [int((model["tokens"] == t).all(1).nonzero()[0, 0]) for t in tokens.cpu()]
        return data.to_float(model["images"][rows])  # [-1, 1], as the sampler returns

    mod.load_proxy, mod.sample_images = load_proxy, sample_images
    return mod


@pytest.fixture
def cli(shapes16, tmp_path, monkeypatch):
    """(data folder, model file, out path) with the stand-in proxy installed and the tiny evaluator's settings."""
    d, test, _ = shapes16
    monkeypatch.setitem(sys.modules, "proxy", stand_in_proxy(test))
    for k, v in TINY.items():
        monkeypatch.setitem(evaluate.ENCODER, k, v)
    model = str(tmp_path / "model.pt")
    torch.save({"model": {}, "config": {}}, model)
    return d, model, str(tmp_path / "run" / "metrics.json")


def test_cli_writes_metrics_and_a_sample_grid_and_reuses_the_cached_evaluator(cli, capsys):
    d, model, out = cli
    cached = os.path.getmtime(os.path.join(d, "evaluator.pt"))
    evaluate.main(["--data", d, "--model", model, "--out", out, "--n-samples", "50", "--repeat",
                   "--encoder-steps", str(TINY["steps"]), "--batch-size", "16", "--device", "cpu"])
    m = json.load(open(out))
    for key in ["fid", "kid_mean", "kid_std", "clip_score", "geneval_overall", "noise_rate", "watermark_rate",
                "n_samples", "encoder", "seed", "data", "model"] + [f"geneval_{t}" for t in evaluate.TASKS]:
        assert key in m, key
    assert m["n_samples"] == 50 and m["geneval_overall"] == 1.0 and m["fid"] < 1.0  # cycled references
    assert os.path.isfile(out.replace(".json", "_samples.png"))
    assert os.path.getmtime(os.path.join(d, "evaluator.pt")) == cached
    assert f"wrote {out}" in capsys.readouterr().out


def test_cli_inception_features_from_a_local_weights_file(cli, tmp_path, monkeypatch):
    import torchvision
    d, model, out = cli
    small = str(tmp_path / "small")  # 4 test prompts keep the 299x299 forward passes few
    shutil.copytree(d, small)
    test = data.load_dataset(small, "test")
    test = {k: (v[:4] if k in ["images", "tokens", "captions", "defect", "objects"] else v) for k, v in test.items()}
    data.atomic_save(test, os.path.join(small, "test.pt"))
    monkeypatch.setitem(sys.modules, "proxy", stand_in_proxy(test))
    weights = str(tmp_path / "inception.pt")
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), weights)
    evaluate.main(["--data", small, "--model", model, "--out", out, "--n-samples", "2", "--inception", weights,
                   "--encoder-steps", str(TINY["steps"]), "--device", "cpu"])
    m = json.load(open(out))
    assert m["encoder"].startswith("inception-v3 pool 2048-d") and np.isfinite(m["fid"]) and m["n_samples"] == 2


def test_a_file_that_is_not_a_model_is_refused_by_the_real_proxy_too(cli, tmp_path, monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "proxy")
    pytest.importorskip("proxy")
    d, _, out = cli
    junk = str(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(3)}, junk)
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--data", d, "--model", junk, "--out", out])
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1 and not os.path.exists(out)


@pytest.mark.parametrize("case", ["too_many_samples", "not_a_model", "missing_data_folder", "no_data_flag",
                                  "not_inception_weights"])
def test_bad_input_prints_one_line_exits_2_and_writes_nothing(cli, tmp_path, case, capsys):
    d, model, out = cli
    args = {"--data": d, "--model": model, "--out": out, "--encoder-steps": str(TINY["steps"])}
    if case == "too_many_samples":
        args["--n-samples"] = "41"  # 40 test prompts and no --repeat
    elif case == "not_a_model":
        args["--model"] = str(tmp_path / "junk.pt")
        open(args["--model"], "w").write("not a checkpoint")
    elif case == "missing_data_folder":
        args["--data"] = str(tmp_path / "nowhere")
    elif case == "no_data_flag":
        del args["--data"]
    else:
        args["--inception"] = model  # a checkpoint, but not an Inception-V3 state_dict
    with pytest.raises(SystemExit) as e:
        evaluate.main([x for kv in args.items() for x in kv])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error:")
    assert not os.path.exists(os.path.dirname(out))
