"""The detector as a scikit-learn estimator: fit on normal digits, score, threshold, save.

Run: python examples/estimator_basics.py   (offline, a few seconds on a CPU)
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import vaeguard
from vaeguard.metrics import evaluate

X, y = load_digits(return_X_y=True)
X = X / 16.0  # pixel intensities in [0, 1]; 17 grey levels, so likelihood="auto" picks the gaussian
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.5, stratify=y, random_state=0)

normal = y_train < 5  # digits 0-4 are normal; 5-9 never reach training
# input_shape declares the rows as 8x8 images (otherwise they are a table of 64 columns): grey
# images get the convolutional network
detector = vaeguard.VAEAnomalyDetector(input_shape=(1, 8, 8), epochs=100, fpr=0.05, random_state=0).fit(X_train[normal])

is_anomaly = (y_test >= 5).astype(int)
scores = detector.anomaly_score(X_test)  # higher = more anomalous
print(f"AUROC {roc_auc_score(is_anomaly, scores):.3f}")
print(f"flagged {np.mean(detector.predict(X_test[is_anomaly == 0]) == -1):.1%} of unseen normals (target 5%)")
print(f"smallest conformal p-value: {detector.p_values(X_test).min():.4f}")
print({k: round(v, 3) for k, v in evaluate(is_anomaly, scores, threshold=detector.threshold_).items() if isinstance(v, float)})

detector.save("digits.vgm")
assert np.array_equal(vaeguard.load("digits.vgm").anomaly_score(X_test), scores)
