"""Deformable DETR (Zhu et al., 2021): multi-scale input, deformable encoder and decoder,
its heads, and where the decoder queries come from (learned, or two-stage proposals)."""
