"""Properties of the rater (instance and group heads, Eq. 7/8), its trunk features, the AUROC and the scoring CLI."""
import itertools
import json
import os

import numpy as np
import pytest
import torch

import data
import proxy
import rater

TRUNK = dict(image_size=16, patch=4, width=16, depth=1, heads=2, text_depth=1, max_tokens=20)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_trunk(seed=0, **kw):
    torch.manual_seed(seed)
    model = proxy.DiT(**{**TRUNK, "vocab_size": len(data.shapes_vocab()), **kw})
    for p in model.parameters():  # adaLN-Zero starts as the identity with a zero output: give every path a signal
        p.data.add_(0.05 * torch.randn_like(p))
    return model.eval().requires_grad_(False)


def tiny_rater(in_dim=12, width=8, seed=0, **kw):
    torch.manual_seed(seed)
    return rater.Rater(in_dim, width=width, **kw)


def feats(n, d=12, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------------
# The heads

def test_permuting_a_batch_permutes_W_and_leaves_W_batch_unchanged():
    r, f = tiny_rater(), feats(16)
    W, z, W_batch = r(f)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    W_p, z_p, W_batch_p = r(f[perm])
    assert torch.allclose(W_p, W[perm], atol=1e-6) and torch.allclose(z_p, z[perm], atol=1e-6)
    assert torch.allclose(W_batch_p, W_batch, atol=1e-6)


def test_the_group_head_sees_the_batch_swapping_half_of_it_changes_W_batch():
    r, f, other = tiny_rater(), feats(16), feats(16, seed=2) * 3 + 1
    _, z, W_batch = r(f)
    _, z_mixed, W_batch_mixed = r(torch.cat([f[:8], other[8:]]))
    assert abs(W_batch.item() - W_batch_mixed.item()) > 1e-4
    assert torch.allclose(z[:8], z_mixed[:8], atol=1e-6)  # the instance logit of a kept row does not move


def test_the_group_head_reads_the_mean_and_the_variance_of_the_batch():
    r, f = tiny_rater(), feats(16)
    with torch.no_grad():
        e = r.adapter(f)
        by_hand = r.group(torch.cat([e.mean(0), e.var(0, unbiased=False)])).squeeze(-1)
        assert torch.allclose(r.logits(f)[1], by_hand, atol=1e-6)
        # with the adapter as the identity: equal means, spreads 1x and 2x -> another W_batch; the mirror image of a
        # batch about its mean (the same mean and variance) -> the same W_batch
        r.adapter = torch.nn.Identity()
        f = feats(16, d=8)  # width 8: the group head reads 2 x 8 numbers
        wide, mirror = f.mean(0) + 2 * (f - f.mean(0)), 2 * f.mean(0) - f
        assert torch.allclose(wide.mean(0), f.mean(0), atol=1e-6)
        assert abs(r(f)[2] - r(wide)[2]) > 1e-3 and torch.allclose(r(f)[2], r(mirror)[2], atol=1e-6)


def test_score_rows_is_z_plus_the_mean_z_group_of_each_rows_batches_recomputed_by_hand():
    r, f = tiny_rater(), feats(40)
    with torch.no_grad():
        r.group[2].bias.fill_(1.5)  # a z_group far from 0, so that its sign shows
        z, whole = r.logits(f)
        assert torch.allclose(rater.score_rows(r, f, shuffles=1, batch_size=40), z + whole, atol=1e-6)  # one batch
        expected, gen = z.clone(), torch.Generator().manual_seed(3)  # two batchings into two batches of 20
        for _ in range(2):
            perm = torch.randperm(40, generator=gen)
            for rows in (perm[:20], perm[20:]):
                expected[rows] += r.logits(f[rows])[1] / 2
        assert torch.allclose(rater.score_rows(r, f, shuffles=2, batch_size=20, seed=3), expected, atol=1e-6)
        assert (expected - z).std() > 1e-3  # rows in different company get different group terms


def test_weights_sum_to_W_batch_and_the_temperature_bounds_their_ratio():
    for tau in [1.0, 0.2]:
        r = tiny_rater(temperature=tau)
        for p in r.instance.parameters():  # large logits: saturated sigmoids, the extreme case
            p.data.mul_(50)
        W, z, W_batch = r(feats(32))
        assert torch.allclose(W.sum(), W_batch, atol=1e-6) and 0 < W_batch.item() < 1
        assert W.max() / W.min() <= np.exp(1 / tau) * (1 + 1e-5)  # sigmoid in (0, 1): ratio <= e^(1/tau)


def test_without_the_group_head_W_batch_is_one_and_W_is_the_instance_softmax():
    r, f = tiny_rater(use_group=False, temperature=0.5), feats(10)
    W, z, W_batch = r(f)
    assert W_batch.item() == 1.0
    assert torch.allclose(W, torch.softmax(torch.sigmoid(z) / 0.5, dim=0), atol=1e-7)
    assert torch.equal(rater.score_rows(r, f), z)  # the score is the instance logit alone


def test_standardisation_buffers_are_saved_with_the_rater_and_give_zero_mean_unit_std():
    r, raw = tiny_rater(), feats(100) * 5 + 3
    r.fit_standardisation(raw)
    f = r.standardise(raw)
    assert torch.allclose(f.mean(0), torch.zeros(12), atol=1e-5) and torch.allclose(f.std(0), torch.ones(12), atol=1e-5)
    assert {"feat_mean", "feat_std"} <= set(r.state_dict())


# ----------------------------------------------------------------------------------------------------------------
# The trunk's view of a sample

def test_trunk_features_are_per_row_log_losses_and_pooled_state_and_leave_no_hook(tiny_shapes):
    d = data.load_dataset(tiny_shapes)
    trunk, draws = tiny_trunk(), proxy.fixed_draws(2, (3, 16, 16), seed=5)
    x0, tok = data.to_float(d["images"][:6]), d["tokens"][:6]
    raw = rater.trunk_features(trunk, x0, tok, draws)
    assert raw.shape == (6, 2 * 2 + 16) and torch.isfinite(raw).all()
    assert torch.allclose(rater.trunk_features(trunk, x0[2:4], tok[2:4], draws), raw[2:4], atol=1e-5)  # batch-free
    # the first K columns are the log losses with the caption at each draw
    t, noise = draws
    loss1 = proxy.rf_loss(trunk, x0, tok, t[1].expand(6), noise[1].expand_as(x0))
    assert torch.allclose(raw[:, 1], loss1.log(), atol=1e-5)
    assert len(trunk.blocks[-1]._forward_hooks) == 0


# ----------------------------------------------------------------------------------------------------------------
# AUROC

def test_auroc_matches_a_brute_force_pairwise_count_with_ties_counting_half():
    rng = np.random.default_rng(0)
    for trial in range(5):
        s = rng.integers(0, 6, size=40).astype(np.float64)  # many ties
        lab = rng.integers(0, 3, size=40)
        pos, neg = lab == 0, lab == 1
        pairs = [(a, b) for a, b in itertools.product(s[pos], s[neg])]
        brute = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
        assert abs(rater.auroc(s, pos, neg) - brute) < 1e-12
    assert rater.auroc([3, 2, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]) == 1.0
    assert np.isnan(rater.auroc([1, 2], [1, 1], [0, 0]))


# ----------------------------------------------------------------------------------------------------------------
# The scoring CLI and its bad inputs

def write_rater(path, dataset, trunk, vocab=None):
    """A rater.pt as metagrad.py writes it: a rater standardised on the trunk's features of the training rows."""
    size = trunk.config["image_size"]
    if size == dataset["images"].shape[-1]:
        draws = proxy.fixed_draws(2, (3, size, size), seed=7)
        raw = rater.features_of_rows(trunk, dataset["images"], dataset["tokens"], draws, torch.device("cpu"))
    else:  # a rater for another image size: its features do not matter, loading must refuse it
        raw = torch.randn(8, 2 * 2 + 16)
    r = tiny_rater(in_dim=raw.shape[1], width=16)
    r.fit_standardisation(raw)
    rater.save_rater(str(path), r, trunk, 5, vocab or dataset["vocab"], k=2, draws_seed=7)


@pytest.fixture(scope="module")
def rater_file(tiny_shapes, tmp_path_factory):
    path = tmp_path_factory.mktemp("rater") / "rater.pt"
    write_rater(path, data.load_dataset(tiny_shapes), tiny_trunk())
    return str(path)


def test_scoring_cli_writes_finite_float32_scores_a_report_and_a_histogram(tiny_shapes, rater_file, tmp_path, capsys):
    out = tmp_path / "scores.npy"
    rater.main(["--data", tiny_shapes, "--rater", rater_file, "--out", str(out), "--shuffles", "2",
                "--batch-size", "32"])
    scores = np.load(out)
    assert scores.dtype == np.float32 and scores.shape == (400,) and np.isfinite(scores).all()
    report = json.load(open(tmp_path / "scores_report.json"))
    assert {"auroc_misaligned", "auroc_noise", "mean_percentile_clean", "mean_percentile_duplicate"} <= set(report)
    defect = data.load_dataset(tiny_shapes)["defect"].numpy()
    for k, name in enumerate(data.load_dataset(tiny_shapes)["defect_names"]):  # pairwise count, ties 1/2
        if k > 0 and (defect == k).any():
            clean, bad = scores[defect == 0][:, None], scores[defect == k][None, :]
            assert report[f"auroc_{name}"] == pytest.approx(((clean > bad) + 0.5 * (clean == bad)).mean(), abs=1e-12)
    assert report["n_samples"] == 400
    assert os.path.getsize(tmp_path / "scores_hist.png") > 1000
    assert "wrote" in capsys.readouterr().out.strip().splitlines()[-1]
    # the random batchings come from --seed: the same seed gives the same scores
    rater.main(["--data", tiny_shapes, "--rater", rater_file, "--out", str(tmp_path / "again.npy"),
                "--shuffles", "2", "--batch-size", "32"])
    assert np.array_equal(np.load(tmp_path / "again.npy"), scores)


def bad_rater(kind, tmp_path, dataset):
    path = tmp_path / f"{kind}.pt"
    if kind == "junk":
        path.write_bytes(b"not a torch file")
    elif kind == "proxy":  # a model checkpoint, but not a rater
        proxy.save_checkpoint(str(path), tiny_trunk(), 0, dataset["vocab"])
    elif kind == "size32":
        write_rater(path, dataset, tiny_trunk(image_size=32, patch=8))
    elif kind == "vocab":
        write_rater(path, dataset, tiny_trunk(), vocab=dataset["vocab"][:3] + dataset["vocab"][3:][::-1])
    return str(path)


@pytest.mark.parametrize("kind, fragment", [("junk", "not a readable"), ("proxy", "not a rater"),
                                            ("size32", "32px"), ("vocab", "vocabulary")])
def test_scoring_bad_input_is_one_line_exit_2_and_no_output(tiny_shapes, tmp_path, capsys, kind, fragment):
    path = bad_rater(kind, tmp_path, data.load_dataset(tiny_shapes))
    with pytest.raises(SystemExit) as e:
        rater.main(["--data", tiny_shapes, "--rater", path, "--out", str(tmp_path / "scores.npy")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and fragment in err, err
    assert not any(p.name.startswith("scores") for p in tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------------------------
# The content view, held-out reports and the direction check (issue 16)

def pooled_block_output(trunk, x0, tok, block):
    """Mean over image tokens of DiT block `block`'s output in the trunk's own forward at t = 0, read by a hook."""
    out = {}
    hook = trunk.blocks[block].register_forward_hook(lambda m, i, o: out.update(h=o))
    try:
        trunk(x0, torch.zeros(len(x0)), tok)
    finally:
        hook.remove()
    return out["h"].mean(1)


def test_content_features_are_the_trunks_own_pooled_block_output_on_the_clean_image_at_t0(tiny_shapes):
    d = data.load_dataset(tiny_shapes)
    trunk = tiny_trunk(depth=2)
    x0, tok = data.to_float(d["images"][:6]), d["tokens"][:6]
    for blocks in [1, 2]:
        pooled = rater.content_features(trunk, x0, tok, blocks=blocks)
        assert pooled.shape == (6, 16)
        assert torch.allclose(pooled, pooled_block_output(trunk, x0, tok, blocks - 1), atol=1e-5)
    pooled = rater.content_features(trunk, x0, tok)
    assert torch.allclose(rater.content_features(trunk, x0[2:4], tok[2:4]), pooled[2:4], atol=1e-5)  # batch-free
    assert (rater.content_features(trunk, x0, tok.roll(1, 0)) - pooled).abs().max() > 1e-4  # it reads the caption
    f = rater.input_features(trunk, d["images"][:6], tok, torch.device("cpu"), "content", batch_size=4)
    assert torch.allclose(f, pooled, atol=1e-5)  # in batches, from uint8 images


def test_seen_and_unseen_aurocs_are_computed_on_their_own_rows_against_their_own_clean_rows():
    defect = np.array([0, 0, 1, 1, 0, 0, 1, 2, 0, 2])
    scores = np.array([5, 1, 2, 0, 3, 4, 6, 9, 2, -1], dtype=float)
    rated = np.array([0, 1, 2, 3, 7])
    report = rater.seen_unseen_report(scores, defect, ["clean", "a", "b"], rated)
    # seen: clean {5, 1} vs a {2, 0}: pairs (5>2, 5>0, 1<2, 1>0) = 3/4; b {9}: 0/2
    assert report["seen_auroc_a"] == 0.75 and report["seen_auroc_b"] == 0.0
    # unseen: clean {3, 4, 2} vs a {6}: 0; vs b {-1}: 1
    assert report["unseen_auroc_a"] == 0.0 and report["unseen_auroc_b"] == 1.0


class PixelJudge:
    """A stand-in rater whose instance logit is `sign` x the first feature (rater.features_for is patched to give
    the images' pixel-to-pixel roughness): sign -1 rates smooth images high, +1 prefers noise."""

    def __init__(self, sign):
        self.sign = sign

    def standardise(self, raw):
        return raw

    def logits(self, f):
        return self.sign * f[:, 0], None


def roughness(trunk, ckpt, images, tokens, device):
    x = images.double()
    return (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))[:, None].float()


@pytest.mark.parametrize("sign", [-1, 1])
def test_the_direction_check_flags_a_rater_that_prefers_noisy_copies_of_val_rows(tiny_shapes, monkeypatch, sign):
    val = data.load_dataset(tiny_shapes, "val")
    monkeypatch.setattr(rater, "features_for", roughness)
    z_val = sign * roughness(None, None, val["images"][:32], None, None)[:, 0].numpy()
    train_z = np.r_[np.arange(100, dtype=float) * sign, z_val[:10]]  # some training rows tie with val rows
    report = rater.canary_report(PixelJudge(sign), None, {}, val, train_z, "cpu", n=32)
    assert report["canary_noise"] == (1.0 if sign < 0 else 0.0)  # noise always roughens these images
    assert report["canary_misaligned"] == 0.5  # this judge ignores captions: ties count 1/2
    warning = rater.canary_warning(report)
    assert "misaligned AUROC 0.50" in warning and (("noise" in warning) == (sign > 0))
    by_hand = np.mean([100 * ((train_z < z).sum() + 0.5 * (train_z == z).sum()) / len(train_z) for z in z_val])
    assert report["val_percentile"] == pytest.approx(by_hand)
    images, tok = rater.corrupted_copies(val["images"][:4], val["tokens"][:4])["misaligned"]
    assert torch.equal(images, val["images"][:4]) and torch.equal(tok, val["tokens"][[3, 0, 1, 2]])  # next row's
    noisy, tok = rater.corrupted_copies(val["images"][:4], val["tokens"][:4])["noise"]
    assert torch.equal(tok, val["tokens"][:4]) and noisy.dtype == torch.uint8 and not torch.equal(noisy, val["images"][:4])
    assert rater.canary_warning({"canary_noise": 0.9, "canary_misaligned": 0.8, "val_percentile": 60.0}) is None


def test_scoring_cli_scores_a_content_rater_on_its_own_view_and_reports_seen_and_unseen_rows(tiny_shapes, tmp_path,
                                                                                            capsys):
    d, trunk = data.load_dataset(tiny_shapes), tiny_trunk()
    raw = rater.input_features(trunk, d["images"], d["tokens"], torch.device("cpu"), "content")  # (400, 16)
    r = tiny_rater(in_dim=16, width=16, use_group=False)
    r.fit_standardisation(raw)
    rated = torch.arange(0, 400, 3)  # every third row was meta-trained on
    rater.save_rater(str(tmp_path / "rater.pt"), r, trunk, 5, d["vocab"], input="content", content_blocks=1,
                     rated_rows=rated, n_rows=400)
    rater.main(["--data", tiny_shapes, "--rater", str(tmp_path / "rater.pt"), "--out", str(tmp_path / "s.npy")])
    scores = np.load(tmp_path / "s.npy")
    with torch.no_grad():
        assert np.allclose(scores, r.logits(r.standardise(raw))[0].numpy(), atol=1e-5)  # z of the content view
    report = json.load(open(tmp_path / "s_report.json"))
    defect, seen = d["defect"].numpy(), np.isin(np.arange(400), rated.numpy())
    for name in ["misaligned", "noise"]:
        k = d["defect_names"].index(name)
        for part, rows in [("seen", seen), ("unseen", ~seen)]:
            expected = rater.auroc(scores[rows], defect[rows] == 0, defect[rows] == k)
            assert report[f"{part}_auroc_{name}"] == pytest.approx(expected, abs=1e-12)
    assert report["rater_input"] == "content" and {"canary_misaligned", "canary_noise", "val_percentile"} <= set(report)
    out, err = capsys.readouterr()
    assert "(seen " in out and "unseen " in out and ("direction check" in out) != ("warning:" in err)
