"""Torch-side measurements of training: gradients, updates, drift, retain sets.

Everything here runs inside the training process and only *measures*; what the numbers mean is
decided by the pure detectors in `tunescope.diagnose`.
"""
