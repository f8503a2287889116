"""Categorical columns scored relative to their levels (VAEConfig.relative_levels).

A level that is merely rare is not evidence: the model reconstructs it loosely in every row,
so under a plain -log p(level | z) a normal row holding it outscores rows whose combination
of values is odd. Each level's term is therefore taken less its mean over the training rows
holding it; a level never seen in training keeps its full term. Model files written before
keep the plain term.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import vaeguard
from vaeguard.model import categorical_nll
from vaeguard.modelfile import read_model_file, write_model_file


def connections(n: int, rng) -> pd.DataFrame:
    """The service follows from the protocol (udp: dns; tcp: http or ssh, dns in 4% of rows);
    `site` is independent of everything, and one of its levels ("remote") is rarer than tcp
    with dns: rare but irrelevant."""
    proto = rng.choice(["tcp", "udp"], n, p=[0.7, 0.3])
    service = np.where(proto == "tcp", rng.choice(["http", "ssh", "dns"], n, p=[0.48, 0.48, 0.04]), "dns")
    site = rng.choice(["north", "south", "east", "remote"], n, p=[0.33, 0.33, 0.335, 0.005])
    return pd.DataFrame({"proto": proto, "service": service, "site": site, "size": rng.normal(size=n) + 2.0 * (proto == "udp")})


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    det = vaeguard.VAEAnomalyDetector(latent_dim=4, hidden_dims=(32,), epochs=30, random_state=0, device="cpu")
    det.fit(connections(3000, rng))
    normal = connections(300, rng)
    normal.loc[:29, "site"] = "remote"  # rare but irrelevant: these rows are normal
    odd = connections(60, rng)
    odd["site"] = "north"
    odd["proto"], odd["service"] = "tcp", "dns"  # every value seen, the combination seldom
    return det, normal, odd


def test_a_rare_level_is_not_evidence_but_an_odd_combination_is(fitted):
    det, normal, odd = fitted
    assert det.config_.relative_levels
    site = det.input_spec_.columns.index("site")
    columns = det.feature_scores(normal)
    rare, common = columns[:30, site], columns[30:, site]
    assert abs(rare.mean() - common.mean()) < 0.5, (rare.mean(), common.mean())
    # the odd combinations outrank the normal rows that hold the rare level
    scores = det.anomaly_score(pd.concat([normal.iloc[:30], odd]))
    assert roc_auc_score(np.r_[np.zeros(30), np.ones(60)], scores) > 0.9  # 0.98 measured; 0.21 with the plain term
    # the offsets are what does it: without them the rare level stands out by its rarity alone
    offsets = det.model_.level_offsets.clone()
    try:
        det.model_.level_offsets.zero_()
        plain = det.feature_scores(normal)[:, site]
    finally:
        det.model_.level_offsets.copy_(offsets)
    assert plain[:30].mean() - plain[30:].mean() > 1.0


def test_a_level_never_seen_keeps_its_full_term(fitted):
    det, normal, _ = fitted
    unseen = normal.iloc[30:60].copy()
    unseen["site"] = "mars"
    site = det.input_spec_.columns.index("site")
    assert det.feature_scores(unseen)[:, site].min() > det.feature_scores(normal.iloc[:30])[:, site].max() + 1.0


def test_offsets_are_saved_and_files_without_them_score_the_plain_term(fitted, tmp_path):
    det, normal, _ = fitted
    path = det.save(tmp_path / "m.vgm")
    np.testing.assert_array_equal(vaeguard.load(path, device="cpu").anomaly_score(normal), det.anomaly_score(normal))
    # a file written before relative_levels: no flag, no offsets tensor
    description, arrays = read_model_file(path)
    assert description["model_config"].pop("relative_levels") is True
    assert arrays.pop("model.level_offsets").shape == (det.n_features_in_,)
    old = vaeguard.load(write_model_file(tmp_path / "old.vgm", description, arrays), device="cpu")
    assert not old.config_.relative_levels and "level_offsets" not in old.model_.state_dict()
    model, X = old.model_, torch.as_tensor(old._validated(normal)[0])
    with torch.no_grad():
        logits = model.decode(model.encode(X)[0])
        for start, width in old.config_.groups:
            expected = categorical_nll(X[:, start : start + width], logits[:, start : start + width])
            torch.testing.assert_close(model(X).feature_nll[:, start], expected, rtol=0, atol=0)


def test_numeric_tables_have_no_level_terms():
    X = np.random.default_rng(1).normal(size=(200, 3))
    det = vaeguard.VAEAnomalyDetector(latent_dim=2, hidden_dims=(8,), epochs=2, random_state=0, device="cpu").fit(X)
    assert not det.config_.relative_levels and "level_offsets" not in det.model_.state_dict()
