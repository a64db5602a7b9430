"""Ray Tune sweeps of the dual-weight loss coefficients (and friends), tracked in MLflow."""

from .sweep import SweepConfig, SweepResult, SweepSettings, run_sweep

__all__ = ["SweepConfig", "SweepResult", "SweepSettings", "run_sweep"]
