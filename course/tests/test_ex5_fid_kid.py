"""Exercise 5: FID and KID from scratch (evaluate.mean_cov, evaluate.frechet_distance, evaluate.kid).

FID is checked against closed forms (equal, diagonal and commuting covariances) and against an independent route
through the eigenvalues of S1 S2; KID against the unbiased MMD^2 counted pair by pair.
"""
import numpy as np

import evaluate
from api import exercise_api

mean_cov, frechet_distance, kid = exercise_api(5)


def spd(d, rng, rank=None):
    """A random symmetric positive (semi-)definite d x d matrix of the given rank."""
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d)


def test_mean_cov_is_the_mean_and_numpys_unbiased_covariance_in_float64():
    """mean_cov(x) = (x.mean(0), np.cov(x, rowvar=False)): N - 1 in the denominator, float64 even from float32."""
    x = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32)
    mu, cov = mean_cov(x)
    assert mu.dtype == np.float64 and cov.dtype == np.float64 and cov.shape == (7, 7), \
        f"float64 mean [D] and covariance [D, D], got {mu.dtype} and {cov.dtype} {cov.shape}"
    assert np.allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12), "the mean over rows"
    assert np.allclose(cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10), "the unbiased covariance (N - 1)"


def test_fid_of_a_distribution_with_itself_is_zero():
    """Same mean, same covariance: 0 (to 1e-9 of the trace; to 1e-6 for a rank-3 covariance, where the square roots
    of round-off eigenvalues of 1e-16 add 1e-8 each)."""
    rng = np.random.default_rng(1)
    for rank, tol in ((None, 1e-9), (3, 1e-6)):
        mu, s = rng.normal(size=8), spd(8, rng, rank)
        assert abs(frechet_distance(mu, s, mu, s)) < tol * np.trace(s)


def test_equal_covariances_leave_the_squared_distance_of_the_means():
    """S1 = S2: FID = |mu1 - mu2|^2."""
    rng = np.random.default_rng(2)
    mu1, mu2, s = rng.normal(size=6), rng.normal(size=6), spd(6, rng)
    assert np.isclose(frechet_distance(mu1, s, mu2, s), ((mu1 - mu2) ** 2).sum(), rtol=1e-9)


def test_diagonal_covariances_match_the_closed_form():
    """Diagonal a and b: FID = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2."""
    rng = np.random.default_rng(3)
    mu1, mu2, a, b = rng.normal(size=5), rng.normal(size=5), rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert np.isclose(frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected, rtol=1e-9), \
        f"{frechet_distance(mu1, np.diag(a), mu2, np.diag(b)):.8g} against the closed form {expected:.8g}"


def test_commuting_covariances_match_the_closed_form():
    """S1 = Q diag(a) Q^T and S2 = Q diag(b) Q^T (one rotation Q): Tr (S1 S2)^1/2 = sum_i sqrt(a_i b_i)."""
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu = np.zeros(6)
    expected = a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()
    assert np.isclose(frechet_distance(mu, s1, mu, s2), expected, rtol=1e-9), \
        f"{frechet_distance(mu, s1, mu, s2):.8g} against the closed form {expected:.8g}"


def test_general_covariances_match_the_eigenvalues_of_S1_S2():
    """Any SPD pair: the trace term equals sum_i sqrt(lambda_i(S1 S2)) from np.linalg.eigvals, for d = 3 and 16."""
    rng = np.random.default_rng(5)
    for d in (3, 16):
        mu1, mu2, s1, s2 = rng.normal(size=d), rng.normal(size=d), spd(d, rng), spd(d, rng)
        tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)).sum()
        expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
        got = frechet_distance(mu1, s1, mu2, s2)
        assert isinstance(got, float) and np.isclose(got, expected, rtol=1e-8), (d, got, expected)


def test_fid_is_symmetric_and_survives_more_dimensions_than_samples():
    """FID(a, b) = FID(b, a); with 10 samples in 32 dimensions (singular covariances) it is finite and >= 0."""
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(10, 32)), rng.normal(size=(10, 32)) + 0.3
    ab, ba = evaluate.fid(x, y), evaluate.fid(y, x)
    assert np.isfinite(ab) and ab > 0 and np.isclose(ab, ba, rtol=1e-8), (ab, ba)


def test_kid_of_whole_sets_is_the_unbiased_mmd_counted_pair_by_pair():
    """One subset holding every row: MMD^2_u with k(x, y) = (x.y / d + 1)^3, the within-set sums over i != j."""
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) + 0.5
    k = lambda u, v: (u @ v / 5 + 1) ** 3
    m = 12
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    mean, std = kid(x, y, n_subsets=3, subset_size=m)
    assert np.isclose(mean, kxx + kyy - 2 * kxy, rtol=1e-9) and abs(std) < 1e-9, (mean, kxx + kyy - 2 * kxy)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_a_shift():
    """Two samples of N(0, I): |KID| below 3 std of its subsets; shifted by 0.5: clearly positive."""
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    mean, std = kid(a, b, n_subsets=20, subset_size=100)
    shifted, _ = kid(a, b + 0.5, n_subsets=20, subset_size=100)
    assert std > 0 and abs(mean) < 3 * std, (mean, std)
    assert shifted > 10 * std, (shifted, std)


def test_kid_draws_its_subsets_from_the_seed():
    """The same seed gives the same (mean, std), another seed other subsets; subsets larger than a set shrink to it."""
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(60, 4)), rng.normal(size=(50, 4))
    first = kid(a, b, n_subsets=5, subset_size=20, seed=1)
    assert first == kid(a, b, n_subsets=5, subset_size=20, seed=1), \
        "one np.random.default_rng(seed) draws the subsets"
    assert first != kid(a, b, n_subsets=5, subset_size=20, seed=2), "the seed must choose the subsets"
    assert all(np.isfinite(kid(a, b, n_subsets=2, subset_size=1000)))
