"""Evaluation of DeforHMR (paper Table 1): metrics, joint protocols, dataset runs and tables.

Submodules import torch; this package's ``__init__`` stays empty so that
``import deforhmr_model.eval`` is cheap.
"""
