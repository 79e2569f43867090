"""DeforHMR: 3D human mesh recovery from single images (library).

Importing this package is cheap: submodules (which import torch) are loaded on
first use, so ``import deforhmr_model`` never fails for a missing optional piece.
"""
__version__ = "0.1.0"
