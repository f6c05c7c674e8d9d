"""Exercise 2: exact sampling without replacement (prune.gumbel_top_k) and Shift-Gsample (prune.shift_gsample).

Sampling is checked by counting: thousands of draws with a fixed seed against the exact probabilities of picking
one item, or a pair, sequentially without replacement. Bounds are 5 binomial standard deviations.
"""
import numpy as np
import pytest

from api import exercise_api
from data import DataError

gumbel_top_k, shift_gsample = exercise_api(2)


def frequencies(draw, n_items, trials=20000, seed=0):
    """How often each item (or each sorted pair, for draws of two) comes out of `trials` calls of draw(rng)."""
    rng, counts = np.random.default_rng(seed), {}
    for _ in range(trials):
        key = tuple(sorted(int(i) for i in np.atleast_1d(draw(rng))))
        counts[key] = counts.get(key, 0) + 1
    return {k: v / trials for k, v in counts.items()}


def close(freq, p, trials=20000):
    return abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / trials) + 1e-12


def test_gumbel_top_k_returns_count_distinct_positions():
    """count distinct integer positions into log_w; count = N returns every position."""
    rng, log_w = np.random.default_rng(0), np.log(np.arange(1.0, 11.0))
    for count in (1, 4, 10):
        pick = np.asarray(gumbel_top_k(log_w, count, rng))
        assert pick.shape == (count,) and pick.dtype.kind in "iu", (pick, pick.dtype)
        assert len(set(pick.tolist())) == count and 0 <= pick.min() and pick.max() < 10
    assert sorted(np.asarray(gumbel_top_k(log_w, 10, rng)).tolist()) == list(range(10))


def test_gumbel_top_k_first_pick_has_probability_w_over_sum_w():
    """One pick: item i comes out with probability w_i / sum w (20000 draws)."""
    w = np.array([1.0, 2.0, 3.0, 4.0])
    freq = frequencies(lambda rng: gumbel_top_k(np.log(w), 1, rng), 4)
    for i, p in enumerate(w / w.sum()):
        assert close(freq.get((i,), 0.0), p), f"item {i}: drawn {freq.get((i,), 0.0):.4f}, exact {p:.4f}"


def test_gumbel_top_k_pairs_follow_sequential_sampling_without_replacement():
    """Two picks: P({i, j}) = p_i p_j / (1 - p_i) + p_j p_i / (1 - p_j), not p_i p_j (20000 draws)."""
    w = np.array([1.0, 2.0, 3.0, 6.0])
    p = w / w.sum()
    freq = frequencies(lambda rng: gumbel_top_k(np.log(w), 2, rng), 4)
    for i in range(4):
        for j in range(i + 1, 4):
            exact = p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j])
            got = freq.get((i, j), 0.0)
            assert close(got, exact), f"pair {i, j}: drawn {got:.4f}, exact {exact:.4f}"


def test_gumbel_top_k_works_in_log_space_far_out_in_the_tail():
    """log w = -1000 and -1000 + log 3 (exp underflows to 0): the picks still follow 1 : 3."""
    log_w = np.array([-1000.0, -1000.0 + np.log(3.0)])
    freq = frequencies(lambda rng: gumbel_top_k(log_w, 1, rng), 2, trials=4000)
    assert close(freq.get((1,), 0.0), 0.75, trials=4000), freq


def test_shift_gsample_returns_exactly_count_sorted_unique_int64_rows():
    """The subset format: sorted, unique int64 row indices, exactly `count` of them."""
    scores = np.random.default_rng(0).normal(size=200)
    for count in (1, 40, 100):
        rows = shift_gsample(scores, count, np.random.default_rng(1))
        assert rows.dtype == np.int64 and len(rows) == count and np.all(np.diff(rows) > 0), \
            f"{len(rows)} rows of {rows.dtype}, increasing: {bool(np.all(np.diff(rows) > 0))} (see prune.as_subset)"


def test_shift_gsample_never_takes_from_the_discarded_top():
    """The top round(discard_top / 100 * N) rows of the ranking are never kept, whatever the seed."""
    scores = np.random.default_rng(0).normal(size=200)
    top = set(np.argsort(-scores, kind="stable")[:50].tolist())
    for seed in range(20):
        rows = shift_gsample(scores, 100, np.random.default_rng(seed), discard_top=25.0)
        assert not top & set(rows.tolist()), "a row from the discarded top 25% was kept"


def test_shift_gsample_breaks_ties_by_row_index():
    """Equal scores: the ranking is the row order, so the discarded top is the first rows."""
    rows = shift_gsample(np.zeros(40), 20, np.random.default_rng(0), discard_top=25.0)
    assert rows.min() >= 10, "with all scores equal, rows 0-9 are the top 25% (use prune.ranking)"


def test_one_pick_follows_the_gaussian_of_the_rank_percentile_exactly():
    """One row of 20: rank r >= 5 (top 25% gone) is kept with p ~ exp(-(q - 40)^2 / 200), q = 100 (r + 1/2) / 20."""
    scores = -np.arange(20.0)  # row r has rank r
    freq = frequencies(lambda rng: shift_gsample(scores, 1, rng, discard_top=25.0, mu=40.0, sigma=10.0), 20)
    q = 100 * (np.arange(5, 20) + 0.5) / 20
    p = np.exp(-(q - 40) ** 2 / 200)
    p /= p.sum()
    for r, pr in zip(range(5, 20), p):
        assert close(freq.get((r,), 0.0), pr), f"rank {r}: drawn {freq.get((r,), 0.0):.4f}, exact {pr:.4f}"


def test_without_discard_top_it_follows_the_released_configs_by_keep_ratio():
    """discard_top None: default_discard_top(count / N): the top 25% at keep 50%, 5% at keep 90%, nothing at 100%."""
    scores = -np.arange(40.0)
    for count, first in [(20, 10), (36, 2), (40, 0)]:
        seen = set()
        for seed in range(30):
            seen |= set(shift_gsample(scores, count, np.random.default_rng(seed)).tolist())
        assert min(seen) == first, f"keep {count}/40: first kept row {min(seen)}, expected {first}"


def test_a_subset_larger_than_what_is_left_is_refused():
    """More rows than remain below the discarded top: a DataError (prune.check_pool), not a short subset."""
    with pytest.raises(DataError):
        shift_gsample(np.zeros(40), 31, np.random.default_rng(0), discard_top=25.0)


def test_the_same_rng_seed_gives_the_same_subset():
    """All randomness comes from `rng`: one seed, one subset; another seed, another."""
    scores = np.random.default_rng(0).normal(size=200)
    pick = lambda seed: shift_gsample(scores, 50, np.random.default_rng(seed))
    assert np.array_equal(pick(3), pick(3)) and not np.array_equal(pick(3), pick(4))
