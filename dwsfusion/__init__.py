"""DWSFusion: dual weight supervision for lightweight infrared-visible image fusion.

The pure library (torch, NumPy, OpenCV; never Ray or MLflow): model, losses, training step,
colour handling, fusion of any image size, metrics, checkpoints.
"""

__version__ = "0.1.0"
