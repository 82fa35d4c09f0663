"""Optical flow between frame pairs (TV-L1 or RAFT), its uint8 storage, and the `motion` descriptor.

A new method is one file with a `FlowMethod` subclass plus its `FLOW_METHODS.register_lazy` line in
base.py (so `--flow-method` lists it without importing it).
"""

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
