"""Training DeforHMR (paper §3.3, supplementary A): data readers, augmentation, losses, the
training loop (DDP, checkpoints, exact resume) and a synthetic data generator.

Submodules import torch; this package's ``__init__`` stays empty so that
``import deforhmr_model.train`` is cheap.
"""
