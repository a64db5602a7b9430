"""The loss coefficients, importable without torch (configs validate them before any work)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LossWeights:
    """Loss coefficients; the defaults are the release's. ``dual_*`` are the sweep's targets."""

    content: float = 10.0
    adversarial: float = 0.1
    dual_ir: float = 1.0  # lambda_ir: L1(W_ir, F_ir)
    dual_vi: float = 1.0  # lambda_vi: L1(W_vi, F_vi)
    dual_cross: float = 1.0  # lambda_x:  L1(W_ir, 1 - W_vi)
    gradient_penalty: float = 10.0

    def __post_init__(self) -> None:
        negative = [k for k in ("dual_ir", "dual_vi", "dual_cross") if getattr(self, k) < 0]
        if negative:
            raise ValueError(f"{', '.join(negative)} must be >= 0 (a weight of an L1 term)")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)
