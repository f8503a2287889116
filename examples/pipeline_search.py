"""The detector inside a Pipeline and a GridSearchCV, like IsolationForest.

GridSearchCV needs a scorer: here AUROC on labelled validation folds (1 = anomaly), computed
from decision_function (higher = more normal, hence the sign).
Run: python examples/pipeline_search.py
"""

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vaeguard import VAEAnomalyDetector

X, y = load_breast_cancer(return_X_y=True)
is_anomaly = (y == 0).astype(int)  # treat malignant tumours as the anomalies


def auroc(estimator, X, y):
    return roc_auc_score(y, -estimator.decision_function(X))


class NormalOnly(StratifiedKFold):
    """Folds whose training part keeps only normal samples: the detector never sees anomalies."""

    def split(self, X, y, groups=None):
        for train, test in super().split(X, y, groups):
            yield train[y[train] == 0], test


# ~240 normal samples per fold leave 48 for calibration: enough for a 5% false-positive
# target, too few for the default 1% (the detector would warn).
detector = VAEAnomalyDetector(hidden_dims=(32,), epochs=60, fpr=0.05, random_state=0)
pipeline = make_pipeline(StandardScaler(), detector)
search = GridSearchCV(pipeline, {"vaeanomalydetector__latent_dim": [2, 4, 8]}, scoring=auroc, cv=NormalOnly(3))
search.fit(X, is_anomaly)
for params, mean in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"]):
    print(params, f"AUROC {mean:.3f}")
print("best:", search.best_params_)
