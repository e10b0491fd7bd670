"""Multi-scale deformable attention (Deformable DETR's MSDeformAttn)."""

from msda_ops.reference import ms_deform_attn_reference

__all__ = ["ms_deform_attn_reference"]
__version__ = "0.1.0"
