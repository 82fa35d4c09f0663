"""Optical flow between frame pairs (TV-L1 or RAFT), its uint8 storage, and the `motion` descriptor.

A new method is one file with `@register_flow_method("name")` on a `FlowMethod` subclass, imported here.
"""

from . import raft, tvl1  # noqa: F401  register "raft" and "tvl1"
from .base import FLOW_METHODS, FlowMethod, register_flow_method
from .motion import descriptor_layout, motion_descriptor
from .quantize import dequantize_flow, quantize_flow

__all__ = [
    "FLOW_METHODS",
    "FlowMethod",
    "dequantize_flow",
    "descriptor_layout",
    "motion_descriptor",
    "quantize_flow",
    "register_flow_method",
]
