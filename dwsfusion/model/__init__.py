from .adaptive_conv import AdaptiveDilatedConv, adaptive_dilated_conv2d
from .discriminator import Discriminator
from .generator import Generator, GeneratorConfig, GeneratorOutput
from .init import FUSION_INITS, init_fusion_as_sum, initialise

__all__ = [
    "FUSION_INITS",
    "AdaptiveDilatedConv",
    "Discriminator",
    "Generator",
    "GeneratorConfig",
    "GeneratorOutput",
    "adaptive_dilated_conv2d",
    "init_fusion_as_sum",
    "initialise",
]
