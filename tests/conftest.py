"""Shared test settings."""

import os

# The test models are tiny: a second intra-op thread buys nothing and, on a busy machine,
# costs several-fold in spin-waiting. OMP_NUM_THREADS is also what threads="auto" (the
# estimator's and the CLI's default) honours, so every fit and score in the tests keeps to one.
os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)
