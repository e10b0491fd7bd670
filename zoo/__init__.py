"""DETR and Deformable DETR models, losses and matching."""

__version__ = "0.1.0"
