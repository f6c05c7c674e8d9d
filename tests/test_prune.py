"""Tests for prune.py: the strategies' properties, the sampler's maths, bad input, and the scorers on real rows."""
import importlib
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import prune  # noqa: E402

SAMPLING = ["random", "gsample", "shift_gsample", "ccs"]  # the strategies that use the seed


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A 16x16 generated set: 300 training rows with the default defect mix (noise = 2, blur = 3)."""
    d = str(tmp_path_factory.mktemp("prune_shapes"))
    data.main(["--out", d, "--size", "16", "--n-train", "300", "--n-val", "20", "--n-test", "20"])
    return d


def scores(n=1000, seed=0):
    return np.random.default_rng(seed).normal(size=n).astype(np.float32)


def ranks(s):
    """Each row's rank, 0 = best-rated (computed here independently of prune.ranking)."""
    r = np.empty(len(s), dtype=np.int64)
    r[np.argsort(-s, kind="stable")] = np.arange(len(s))
    return r


# ----------------------------------------------------------------------------------------------------------------
# Properties every strategy must have

@pytest.mark.parametrize("name", list(prune.STRATEGIES))
@pytest.mark.parametrize("count", [1, 137, 500])
def test_every_strategy_returns_exact_count_of_sorted_unique_int64_rows(name, count):
    s = scores()
    rows = prune.STRATEGIES[name](s, count, np.random.default_rng(0))
    assert rows.dtype == np.int64 and rows.ndim == 1
    assert len(rows) == count
    assert np.all(np.diff(rows) > 0)  # sorted and unique
    assert rows.min() >= 0 and rows.max() < len(s)


@pytest.mark.parametrize("name", SAMPLING)
def test_same_seed_gives_same_subset_and_another_seed_another(name):
    s, fn = scores(), prune.STRATEGIES[name]
    a, b, c = (fn(s, 300, np.random.default_rng(seed)) for seed in (7, 7, 8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_strategies_accept_one_shared_options_dict():
    opts = dict(start=None, discard_top=None, mu=60.0, sigma=20.0, beta=None, strata=50)
    for name, fn in prune.STRATEGIES.items():
        assert len(fn(scores(), 100, np.random.default_rng(0), **opts)) == 100, name


@pytest.mark.parametrize("name", list(prune.STRATEGIES))
def test_keep_one_returns_everything(name, tmp_path):
    np.save(tmp_path / "s.npy", scores(200))
    out = tmp_path / "sub.npy"
    prune.main(["--scores", str(tmp_path / "s.npy"), "--strategy", name, "--keep", "1.0", "--out", str(out)])
    assert np.array_equal(np.load(out), np.arange(200))


def test_top_k_is_exactly_the_top_and_bottom_k_exactly_the_bottom():
    s = scores()
    assert np.array_equal(prune.top_k(s, 100), np.sort(np.flatnonzero(ranks(s) < 100)))
    assert np.array_equal(prune.bottom_k(s, 100), np.sort(np.flatnonzero(ranks(s) >= 900)))


def test_block_is_exactly_its_window():
    s = scores()
    r = ranks(s)
    assert np.array_equal(prune.block(s, 200, start=30.0), np.flatnonzero((r >= 300) & (r < 500)))
    assert np.array_equal(prune.block(s, 200), np.flatnonzero((r >= 400) & (r < 600)))  # default: centred on 50


def test_shift_gsample_never_takes_from_discarded_top():
    s = scores(10_000)
    r = ranks(s)
    for seed in range(5):
        # mu = 0 puts the Gaussian's peak inside the discarded top: the sampler wants those rows and must not take them
        for discard_top, mu in [(25.0, 60.0), (25.0, 0.0), (5.0, 10.0)]:
            rows = prune.shift_gsample(s, 2000, np.random.default_rng(seed), discard_top=discard_top, mu=mu)
            assert r[rows].min() >= discard_top / 100 * len(s)
    rows = prune.shift_gsample(s, 5000, np.random.default_rng(0))  # default discard at keep 0.5: 25%
    assert r[rows].min() >= 2500


def test_shift_gsample_keeps_rows_around_mu():
    """With the Gaussian well inside the pool (25-100; mu 60 is 4.4 sigma from 25 and 5 from 100) the kept rows'
    mean percentile is mu."""
    s = scores(100_000)
    q = 100 * (ranks(s) + 0.5) / len(s)
    rows = prune.shift_gsample(s, 5000, np.random.default_rng(0), discard_top=25.0, mu=60.0, sigma=8.0)
    assert abs(q[rows].mean() - 60.0) < 5.0
    assert abs(q[rows].std() - 8.0) < 2.0  # and it is about as wide as sigma, not a block


def test_default_discard_top_follows_released_configs():
    assert [prune.default_discard_top(k) for k in (0.1, 0.2, 0.5, 0.8, 0.9, 1.0)] == [25, 25, 25, 15, 5, 0]
    for keep in np.linspace(0.01, 1.0, 100):  # the pool left is never smaller than the budget
        assert 100 - prune.default_discard_top(keep) >= 100 * keep - 1e-9


def test_ccs_covers_every_non_empty_stratum_and_drops_the_hardest():
    s = np.random.default_rng(0).exponential(size=2000).astype(np.float32)  # skewed: many small or empty strata
    rows = prune.ccs(s, 300, np.random.default_rng(0), beta=0.1, strata=50)
    assert len(rows) == 300
    r = ranks(s)
    assert r[rows].max() < 1800  # the lowest-rated 10% are never kept
    pool = np.flatnonzero(r < 1800)
    edges = np.linspace(s[pool].min(), s[pool].max(), 51)
    stratum = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, 49)
    assert set(stratum[pool]) == set(stratum[rows])  # every non-empty stratum has at least one kept row
    sizes = np.bincount(stratum[rows], minlength=50)
    full = np.bincount(stratum[pool], minlength=50)
    share = sizes[full > sizes]  # strata not taken whole get (about) equal shares
    assert share.max() - share.min() <= 1


# ----------------------------------------------------------------------------------------------------------------
# The sampler's maths, checked against the sequential definition

P = np.array([0.1, 0.2, 0.3, 0.4])
TRIALS = 20_000


def test_gumbel_top_k_first_pick_matches_p():
    picks = [prune.gumbel_top_k(np.log(P), 1, np.random.default_rng(seed))[0] for seed in range(TRIALS)]
    freq = np.bincount(picks, minlength=4) / TRIALS
    se = np.sqrt(P * (1 - P) / TRIALS)
    assert np.all(np.abs(freq - P) < 4 * se), (freq, P)


def test_gumbel_top_k_pairs_match_sampling_without_replacement():
    """count = 2: P({i, j}) = p_i p_j / (1 - p_i) + p_j p_i / (1 - p_j) (i first then j, or j first then i)."""
    counts = {}
    for seed in range(TRIALS):
        pair = tuple(sorted(prune.gumbel_top_k(np.log(P), 2, np.random.default_rng(seed))))
        counts[pair] = counts.get(pair, 0) + 1
    for i in range(4):
        for j in range(i + 1, 4):
            exact = P[i] * P[j] / (1 - P[i]) + P[j] * P[i] / (1 - P[j])
            freq = counts.get((i, j), 0) / TRIALS
            assert abs(freq - exact) < 4 * np.sqrt(exact * (1 - exact) / TRIALS), (i, j, freq, exact)


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit 2, no output file

def bad_inputs(tmp, shapes):
    ok = tmp / "ok.npy"
    np.save(ok, scores(300))
    np.save(tmp / "nan.npy", np.r_[scores(299), np.nan].astype(np.float32))
    np.save(tmp / "inf.npy", np.r_[scores(299), np.inf].astype(np.float32))
    np.save(tmp / "short.npy", scores(100))
    (tmp / "text.npy").write_text("not an array\n")
    torch.save({"images": 1}, tmp / "notdata.pt")
    base = ["--strategy", "shift_gsample", "--keep", "0.5"]
    return {
        "nan": ["--scores", str(tmp / "nan.npy"), *base],
        "inf": ["--scores", str(tmp / "inf.npy"), *base],
        "keep 0": ["--scores", str(ok), "--strategy", "random", "--keep", "0"],
        "keep 1.5": ["--scores", str(ok), "--strategy", "random", "--keep", "1.5"],
        "count > pool": ["--scores", str(ok), "--strategy", "shift_gsample", "--count", "250", "--discard-top", "25"],
        "ccs count > pool": ["--scores", str(ok), "--strategy", "ccs", "--keep", "0.95", "--beta", "0.1"],
        "unknown strategy": ["--scores", str(ok), "--strategy", "best_half", "--keep", "0.5"],
        "length mismatch": ["--scores", str(tmp / "short.npy"), *base, "--data", shapes],
        "missing scores": ["--scores", str(tmp / "missing.npy"), *base],
        "non-npy scores": ["--scores", str(tmp / "text.npy"), *base],
        "data not a dataset": ["--scores", str(ok), *base, "--data", str(tmp / "notdata.pt")],
        "unknown scorer": ["--data", shapes, "--scorer", "beauty"],
        "loss without proxy": ["--data", shapes, "--scorer", "loss"],
        "score without data": ["--scorer", "clarity"],
    }


@pytest.mark.parametrize("case", ["nan", "inf", "keep 0", "keep 1.5", "count > pool", "ccs count > pool",
                                  "unknown strategy", "length mismatch", "missing scores", "non-npy scores",
                                  "data not a dataset", "unknown scorer", "loss without proxy", "score without data"])
def test_bad_input_exits_2_with_one_line_and_no_output(case, tmp_path, shapes, capsys):
    out = tmp_path / "out" / "subset.npy"
    with pytest.raises(SystemExit) as e:
        prune.main(bad_inputs(tmp_path, shapes)[case] + ["--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert not out.exists() and not out.with_suffix(".png").exists()


# ----------------------------------------------------------------------------------------------------------------
# The command line's report and picture

def test_report_gives_keep_rate_by_defect_type_and_writes_the_png(shapes, tmp_path, capsys):
    np.save(tmp_path / "s.npy", scores(300))
    out = tmp_path / "shift50.npy"
    prune.main(["--scores", str(tmp_path / "s.npy"), "--strategy", "shift_gsample", "--keep", "0.5", "--data", shapes,
                "--out", str(out)])
    text = capsys.readouterr().out
    assert "keep rate by defect type" in text and "noise" in text and "blur" in text
    assert text.strip().splitlines()[-1].startswith(f"wrote {out}")
    rows = np.load(out)
    assert len(rows) == 150 and rows.dtype == np.int64
    with Image.open(tmp_path / "shift50.png") as img:
        assert img.format == "PNG" and img.width >= 600


# ----------------------------------------------------------------------------------------------------------------
# Scorers

@pytest.fixture(scope="module")
def heuristic_scores(shapes, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("heuristics")
    out = {}
    for name in prune.IMAGE_SCORERS:
        prune.main(["--data", shapes, "--scorer", name, "--out", str(tmp / f"{name}.npy")])
        out[name] = np.load(tmp / f"{name}.npy")
    return out


def auroc(high, low):
    """P(a row of `high` scores above a row of `low`)."""
    return (high[:, None] > low[None, :]).mean()


def test_heuristic_scores_are_float32_finite_one_per_row(heuristic_scores):
    for name, s in heuristic_scores.items():
        assert s.dtype == np.float32 and s.shape == (300,) and np.isfinite(s).all(), name
        assert s.std() > 0, name


def test_clarity_ranks_blurred_rows_below_clean_rows(shapes, heuristic_scores):
    defect = data.load_dataset(shapes)["defect"].numpy()
    s = heuristic_scores["clarity"]
    assert auroc(s[defect == 0], s[defect == 3]) > 0.9  # blur = 3


@pytest.mark.parametrize("name", ["frequency", "edge_density"])
def test_frequency_and_edge_density_rank_noise_rows_distinctly(shapes, heuristic_scores, name):
    defect = data.load_dataset(shapes)["defect"].numpy()
    s = heuristic_scores[name]
    assert auroc(s[defect == 2], s[defect == 0]) > 0.9  # noise = 2: full of fine detail and edges


def test_heuristics_on_flat_and_noisy_images():
    flat = torch.full((2, 3, 16, 16), 100, dtype=torch.uint8)
    noisy = torch.randint(0, 256, (2, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for name, fn in prune.IMAGE_SCORERS.items():
        f, n = fn(flat), fn(noisy)
        assert torch.isfinite(f).all() and torch.all(f == 0), name  # nothing to see: 0, never NaN
        assert torch.all(n > 0), name


def test_image_scorers_work_without_proxy_py(shapes, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "proxy", None)  # `import proxy` now fails, as on a checkout without proxy.py
    importlib.reload(prune)  # prune.py must not import proxy at the top
    prune.main(["--data", shapes, "--scorer", "clarity", "--out", str(tmp_path / "c.npy")])
    assert np.load(tmp_path / "c.npy").shape == (300,)




@pytest.fixture(scope="module")
def tiny_proxy(shapes, tmp_path_factory):
    """An untrained, tiny DiT with random (not zero) output layers, saved the way proxy.py saves it."""
    import proxy
    d = data.load_dataset(shapes)
    torch.manual_seed(0)
    model = proxy.DiT(image_size=16, patch=4, width=32, depth=1, heads=2, text_depth=1, vocab_size=len(d["vocab"]),
                      max_tokens=d["tokens"].shape[1])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = str(tmp_path_factory.mktemp("proxy") / "proxy.pt")
    proxy.save_checkpoint(path, model, 0, d["vocab"])
    return path


@pytest.mark.parametrize("name", ["loss", "grad_norm"])
def test_model_scores_are_float32_finite_and_independent_of_batch_size(shapes, tiny_proxy, tmp_path, name, one_thread):
    runs = []
    for batch in ["64", "7"]:
        out = tmp_path / f"{name}{batch}.npy"
        prune.main(["--data", shapes, "--scorer", name, "--proxy", tiny_proxy, "--draws", "2", "--batch-size", batch,
                    "--device", "cpu", "--out", str(out)])
        runs.append(np.load(out))
    assert runs[0].dtype == np.float32 and runs[0].shape == (300,) and np.isfinite(runs[0]).all()
    assert np.all(runs[0] < 0)  # minus a loss / a norm: higher = better
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-4, atol=1e-6)  # no row's score depends on its batch-mates


def test_grad_norm_equals_per_row_autograd_of_the_last_layer(shapes, tiny_proxy, one_thread):
    """The batched GraNd (one backward per batch) against the plain definition: one backward per row."""
    import proxy
    model, _ = proxy.load_proxy(tiny_proxy, "cpu")
    d = data.load_dataset(shapes)
    images, tokens = d["images"][:4], d["tokens"][:4]
    draws = proxy.fixed_draws(3, (3, 16, 16), 0)
    batched = prune.grad_norm_scorer(model, draws, torch.device("cpu"))(images, tokens)
    t, noise = draws
    for i in range(4):
        model.zero_grad()
        x0 = data.to_float(images[i:i + 1])
        loss = sum(proxy.rf_loss(model, x0, tokens[i:i + 1], t[j:j + 1], noise[j:j + 1]) for j in range(3)) / 3
        loss.sum().backward()
        norm = torch.cat([model.out.weight.grad.flatten(), model.out.bias.grad]).norm()
        assert torch.isclose(-batched[i], norm, rtol=1e-4), (i, batched[i].item(), norm.item())


def test_a_proxy_made_for_other_images_is_bad_input(shapes, tmp_path, capsys):
    import proxy
    path = str(tmp_path / "proxy32.pt")
    proxy.save_checkpoint(path, proxy.DiT(image_size=32, patch=4, width=32, depth=1, heads=2, text_depth=1), 0, [])
    out = tmp_path / "loss.npy"
    with pytest.raises(SystemExit) as e:
        prune.main(["--data", shapes, "--scorer", "loss", "--proxy", path, "--device", "cpu", "--out", str(out)])
    assert e.value.code == 2 and "32px images" in capsys.readouterr().err and not out.exists()
