"""Shared test settings."""

import torch

# The test models are tiny: a second intra-op thread buys nothing and, on a busy machine,
# costs several-fold in spin-waiting.
torch.set_num_threads(1)
