"""Shared pytest setup: tests import their tiny models from this folder, run offline and single-threaded."""

import os
import sys
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

# The tiny test models run faster on one thread (and far faster on a machine whose cores are shared).
torch.set_num_threads(1)
