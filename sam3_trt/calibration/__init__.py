"""Calibration stage: FP16 keep-lists from data and INT8/FP8 Q/DQ graphs (issue: calibration)."""
