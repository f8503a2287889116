"""Every score of one fitted network on the far-from-home sets, and research candidates (issue #22).

Not part of the package: the diagnostic of far_benchmarks.py --scores. The default's network
(refitted with score_type="fused" when the default is another score, which gives the same
network: the score type only decides what is stored beside it) is scored with every score,
plus candidates built from the model's own statistics. `fused` is the package's: for grey-level
images it subtracts the image code length (vaeguard.complexity.ImageCodeLength) from the
reconstruction NLL; `fused, plain reconstruction NLL` is the score before that (issue #22).

- `fused two-sided`: `fused` with |z| of the reconstruction part. A likelihood model can give
  a far input a *better* likelihood than its own data (Nalisnick et al., ICLR 2019); an input
  that is more likely than the normal rows is atypical too (typicality).
- `density of states`: the model's statistics (reconstruction NLL, KL, latent distance) as a
  point, robust z-scores on the validation rows, and the distance to the 5th nearest
  validation point: a non-parametric density of the statistics over normal data (Morningstar
  et al., AISTATS 2021).
- `complexity-corrected`: reconstruction NLL minus the input's complexity, its zlib code
  length in nats (Serra et al., ICLR 2020).
- `fused complexity-corrected`: `fused` with the zlib-corrected NLL as its first part (the
  candidate that led to the code length, which costs about as much as the network per image).

Each score gets a conformal threshold from the default's calibration rows (the split the
estimator made, replicated here and checked against its stored calibration scores).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state

from vaeguard import VAEAnomalyDetector, scoring
from vaeguard.calibration import conformal_threshold


def split_indices(est: VAEAnomalyDetector, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration rows, validation rows) of the estimator's fit on n rows, as fit() drew them."""
    rng = check_random_state(est.random_state)
    rng.randint(np.iinfo(np.int32).max)
    order = rng.permutation(n)
    n_cal = max(1, round(est.calibration_fraction * n))
    n_val = min(max(1, round(est.validation_fraction * n)), n - n_cal - 1)
    return order[:n_cal], order[n_cal : n_cal + n_val]


@torch.no_grad()
def statistics(est: VAEAnomalyDetector, X: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row statistics of the fitted model: recon, kl, latent distance, context NLL (if any)."""
    scorer = est.scorer()
    model, state, Xs = scorer.model, scorer.score_state, scorer.prepare(X)
    model.eval()

    def stats(x: torch.Tensor) -> torch.Tensor:
        terms = state.terms(model, x)  # the pixel range's cost included, as every score reads it
        context = state.context.nll(x) if state.context is not None else torch.zeros_like(terms.recon)
        return torch.stack([terms.recon, terms.kl, state.neighbours.distance(terms.mu), context], dim=1)

    out = scoring._run(model, Xs, stats, scorer.rows).double().cpu().numpy()
    code_length = state.code_length.nats(np.asarray(X, np.float32)) if state.code_length is not None else np.zeros(len(X))
    return {"recon": out[:, 0], "kl": out[:, 1], "latent distance": out[:, 2], "context": out[:, 3],
            "zlib": zlib_nats(X), "code length": code_length}


def zlib_nats(X: np.ndarray, level: int = 9) -> np.ndarray:
    """Code length of each image (grey levels as bytes) under zlib at `level`, in nats."""
    pixels = np.clip(np.rint(np.asarray(X) * 255), 0, 255).astype(np.uint8)
    return np.array([8 * len(zlib.compress(row.tobytes(), level)) * math.log(2) for row in pixels])


class Candidates:
    """The scores of the module docstring, from statistics, scaled on the validation rows."""

    def __init__(self, val: dict[str, np.ndarray], has_context: bool):
        self.has_context = has_context
        self.names = ["recon", "kl", "latent distance", "corrected", "recon less code length"]
        val = self._derived(val)
        self.center = {k: np.median(val[k]) for k in self.names}
        self.scale = {k: max(np.subtract(*np.percentile(val[k], [75, 25])), 1e-12) for k in self.names}
        self.reference = self._z(val)[:, :3]
        self.nn = NearestNeighbors(n_neighbors=5).fit(self.reference)

    @staticmethod
    def _derived(s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**s, "corrected": s["recon"] - s["zlib"], "recon less code length": s["recon"] - s["code length"]}

    def _z(self, s: dict[str, np.ndarray]) -> np.ndarray:
        s = self._derived(s)
        return np.stack([(s[k] - self.center[k]) / self.scale[k] for k in self.names], axis=1)

    def scores(self, s: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        z = self._z(s)
        out = {"elbo": s["recon"] + s["kl"], "recon": s["recon"], "kl": s["kl"]}
        if self.has_context:
            out["ratio"] = s["recon"] + s["kl"] - s["context"]
        out["latent distance"] = s["latent distance"]
        out["fused"] = 0.5 * (z[:, 4] + z[:, 2])  # the package's: less the code length where the model has one
        out["fused, plain reconstruction NLL"] = 0.5 * (z[:, 0] + z[:, 2])
        out["fused two-sided"] = 0.5 * (np.abs(z[:, 0]) + z[:, 2])
        out["density of states"] = self.nn.kneighbors(z[:, :3])[0][:, -1]
        out["complexity-corrected"] = s["recon"] - s["zlib"]
        out["fused complexity-corrected"] = 0.5 * (z[:, 3] + z[:, 2])
        return out


def all_scores(est: VAEAnomalyDetector, X_train: np.ndarray, normals: np.ndarray, far: dict,
               epochs: int | None, fpr: float, stats_path: str | None = None) -> dict[str, tuple[np.ndarray, dict, float]]:
    """{score: (test-normal scores, far scores by set, conformal threshold)} for one network.

    With `stats_path`, the per-row statistics of every row group go to that .npz file
    (`GROUP/STATISTIC`; groups: validation, calibration, normals, the far sets) for offline study.
    """
    if est.score_type_ != "fused":
        est = VAEAnomalyDetector(random_state=est.random_state, score_type="fused", input_shape=est.input_shape,
                                 **({} if epochs is None else {"epochs": epochs})).fit(X_train)
    cal_idx, val_idx = split_indices(est, len(X_train))
    cal = statistics(est, X_train[cal_idx])
    if not np.allclose(est.scorer().anomaly_score(X_train[cal_idx]), est.calibration_scores_):
        raise RuntimeError("the replicated calibration split does not match the estimator's")
    groups = {"validation": statistics(est, X_train[val_idx]), "calibration": cal, "normals": statistics(est, normals),
              **{k: statistics(est, v) for k, v in far.items()}}
    if stats_path:
        np.savez(stats_path, **{f"{g}/{k}": v for g, stats in groups.items() for k, v in stats.items()})
    cand = Candidates(groups["validation"], est.score_state_.context is not None)
    cal_scores = cand.scores(cal)
    normal_scores = cand.scores(groups["normals"])
    far_scores = {k: cand.scores(groups[k]) for k in far}
    return {name: (normal_scores[name], {k: f[name] for k, f in far_scores.items()},
                   conformal_threshold(cal_scores[name], fpr)) for name in cal_scores}
