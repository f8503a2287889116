"""The latent neighbour model and the "fused" score (reconstruction + latent density)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from vaeguard import VAEAnomalyDetector
from vaeguard.defaults import grey_spread
from vaeguard.latent import LatentNeighbours
from vaeguard.model import VAE, VAEConfig
from vaeguard.scoring import ScoreState, anomaly_scores, fit_latent_neighbours, fused_parts

FAST = dict(latent_dim=4, hidden_dims=(32,), epochs=3, batch_size=16, random_state=0, device="cpu")


def test_distance_is_the_kth_nearest_reference_code():
    rng = np.random.default_rng(0)
    codes, queries = 3 * rng.normal(size=(300, 3)), 3 * rng.normal(size=(700, 3))
    codes[150:] = codes[:150]  # duplicated training rows give tied distances
    queries[:40] = codes[:40] + 1e-6
    model = LatentNeighbours(300, 3).fit(torch.as_tensor(codes, dtype=torch.float32))
    stored = model.codes.double().numpy()
    brute = np.sort(np.linalg.norm(queries.astype(np.float32)[:, None] - stored[None], axis=-1), axis=1)[:, 4]
    got = model.distance(torch.as_tensor(queries, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, brute, rtol=1e-6)
    assert LatentNeighbours(3, 2).k == 3  # fewer codes than neighbours: the farthest one
    odd = torch.as_tensor(queries[:200], dtype=torch.float32)
    odd[:130] = float("nan")  # more rows than one pass over every code takes
    odd[130, 1] = float("inf")  # an overflowed code: infinitely far
    got = model.distance(odd).numpy()
    assert np.isnan(got[:130]).all() and got[130] == np.inf and np.array_equal(got[131:], model.distance(odd[131:]).numpy())


def test_distance_of_a_row_does_not_depend_on_the_rows_beside_it():
    """The ranking product rounds by a row's place in the block; the exact re-rank must not."""
    rng = np.random.default_rng(1)
    model = LatentNeighbours(2000, 16).fit(torch.as_tensor(rng.normal(size=(2000, 16)), dtype=torch.float32))
    queries = torch.as_tensor(rng.normal(size=(600, 16)), dtype=torch.float32)
    together = model.distance(queries)
    order = torch.as_tensor(rng.permutation(600))
    assert torch.equal(model.distance(queries[order]), together[order])
    assert torch.equal(torch.cat([model.distance(q[None]) for q in queries[:50]]), together[:50])


def test_fused_score_is_the_mean_of_two_robust_z_scores_and_batch_invariant():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 6)).astype(np.float32)
    model = VAE(VAEConfig(input_dim=6, latent_dim=2, hidden_dims=(8,), likelihood="gaussian"))
    state = ScoreState(n_reference=80, latent_dim=2)
    fit_latent_neighbours(model, state, X[:80], X[80:])
    recon = anomaly_scores(model, X, "recon")
    with torch.no_grad():
        distance = state.neighbours.distance(model.encode(torch.as_tensor(X))[0]).double().numpy()
    q = lambda v: np.quantile(v, [0.25, 0.5, 0.75])  # noqa: E731
    (r25, r50, r75), (d25, d50, d75) = q(recon[80:]), q(distance[80:])
    expected = 0.5 * ((recon - r50) / (r75 - r25) + (distance - d50) / (d75 - d25))
    fused = anomaly_scores(model, X, "fused", state=state)
    np.testing.assert_allclose(fused, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused_parts(model, X, state), np.stack([recon, distance], axis=1), rtol=1e-5, atol=1e-6)
    # repeatable bit for bit; whatever the batch a row sits in, equal up to float32 rounding:
    # with a 4-wide encoder head (latent_dim 2) the BLAS kernel rounds by row position within
    # the fixed-size block (~1e-7); default-size models are bit-identical (test_model)
    np.testing.assert_array_equal(anomaly_scores(model, X, "fused", state=state), fused)
    one_by_one = np.concatenate([anomaly_scores(model, X[i : i + 1], "fused", state=state) for i in range(10)])
    np.testing.assert_allclose(one_by_one, fused[:10], rtol=1e-5, atol=1e-6)


def test_fused_needs_latent_neighbours():
    model = VAE(VAEConfig(input_dim=4, latent_dim=2, hidden_dims=(8,), likelihood="gaussian"))
    with pytest.raises(ValueError, match="needs a score state with latent neighbours"):
        anomaly_scores(model, np.zeros((2, 4), np.float32), "fused")
    with pytest.raises(ValueError, match="needs a score state with latent neighbours"):
        fused_parts(model, np.zeros((2, 4), np.float32), ScoreState(image_shape=(1, 2, 2)))
    with pytest.raises(ValueError, match="holds no latent neighbours"):
        fit_latent_neighbours(model, ScoreState(), np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32))


def test_grey_spread_tells_near_binary_from_grey_levels():
    assert grey_spread(np.array([[0.0, 1.0, 1.0, 0.0]])) == 0.0
    assert grey_spread(np.full((3, 4), 0.5)) == pytest.approx(1.0)
    assert VAEAnomalyDetector(**FAST).fit(np.full((30, 4), 0.5)).likelihood_ == "gaussian"


def _grey_textures(n: int, kind: str, seed: int) -> np.ndarray:
    """16x16 grey-level images: horizontal (normal) or vertical (anomaly) sine gratings."""
    rng = np.random.default_rng(seed)
    t = np.arange(16)
    out = np.empty((n, 16, 16), np.float32)
    for img in out:
        wave = 0.5 + 0.3 * np.sin(2 * np.pi * (t / rng.uniform(5, 8) + rng.uniform()))
        img[:] = wave[:, None] if kind == "normal" else wave[None, :]
    out += rng.normal(0, 0.05, out.shape).astype(np.float32)
    return np.clip(out, 0, 1).reshape(n, -1)


def test_default_on_grey_level_images_separates_a_new_kind_well():
    """Grey-level images get the gaussian likelihood and the fused score; an unseen texture
    orientation is found far better than chance (measured AUROC 0.978; the former default,
    bernoulli + ratio, scored 0.002 here and bernoulli + elbo 0.708)."""
    normal = _grey_textures(300, "normal", 0)
    det = VAEAnomalyDetector(latent_dim=4, hidden_dims=(64,), epochs=10, random_state=0, device="cpu").fit(normal)
    assert det.likelihood_ == "gaussian" and det.score_type_ == "fused"
    test = np.vstack([_grey_textures(100, "normal", 1), _grey_textures(100, "anomaly", 2)])
    labels = np.r_[np.zeros(100), np.ones(100)]
    assert roc_auc_score(labels, det.anomaly_score(test)) > 0.9


def test_large_training_sets_keep_a_capped_random_subset_of_codes():
    """Scoring cost is bounded: at most MAX_REFERENCE_CODES codes, drawn from the training rows."""
    from vaeguard.latent import MAX_REFERENCE_CODES

    X = np.random.default_rng(2).normal(size=(MAX_REFERENCE_CODES + 1500, 4))
    det = VAEAnomalyDetector(**{**FAST, "epochs": 1, "batch_size": 256}).fit(X)
    assert det.score_type_ == "fused"
    assert det.score_state_.config()["latent_neighbours"] == MAX_REFERENCE_CODES == len(det.score_state_.neighbours.codes)
    small = VAEAnomalyDetector(**{**FAST, "epochs": 1}).fit(X[:500])
    held_out = round(small.calibration_fraction * 500) + round(small.validation_fraction * 500)
    assert len(small.score_state_.neighbours.codes) == 500 - held_out  # every training row


def test_candidate_search_keeps_what_topk_finds():
    """The grouped search (`latent._candidates`) keeps, in row order, every value at or under a
    bound on the row's m-th smallest: the m smallest `topk` finds among them, also for rows tied
    at the m-th value (duplicated codes); a NaN row gets none. Off its ground (half precision,
    more candidates than sets) the k-th exact distance comes from `topk` itself."""
    from vaeguard.latent import _GROUP, _SETS, _candidates, _kth_exact

    rng = np.random.default_rng(2)
    ranking = rng.normal(size=(300, 2 * _GROUP * _SETS)).astype(np.float32)
    ranking[:60, 200:260] = ranking[:60, :60]  # duplicated codes: ties at every rank
    ranking[60:70] = np.round(ranking[60:70], 1)  # many ties
    ranking[70] = np.nan  # the ranking of a NaN code
    ranking = torch.as_tensor(ranking)
    for m in (1, 10, _SETS):
        rows, cols = _candidates(ranking, m)
        assert np.all(np.diff(rows) >= 0) and 70 not in rows
        counts = np.bincount(rows, minlength=300)
        want = ranking.topk(m, dim=1, largest=False).values
        for row in (0, 30, 65, 69, 150, 299):
            kept = ranking[row, cols[rows == row]]
            assert len(set(cols[rows == row].tolist())) == counts[row] >= m
            assert torch.equal(kept.sort().values[:m], want[row])  # the m smallest are kept
        if m == 10:  # and not many more where nothing ties: the search is a search
            assert counts[150:].max() < 4 * m
    codes = torch.as_tensor(rng.normal(size=(ranking.shape[1], 3)))
    chunk = torch.as_tensor(rng.normal(size=(300, 3)))
    half = ranking.bfloat16()
    nearest = half.topk(10, dim=1, largest=False).indices
    want = (codes[nearest] - chunk[:, None]).square().sum(dim=-1).kthvalue(5, dim=1).values.sqrt()
    assert torch.equal(_kth_exact(half, chunk, codes, 5, 10), want)
