from .adaptive_conv import AdaptiveDilatedConv, adaptive_dilated_conv2d
from .discriminator import Discriminator
from .generator import Generator, GeneratorConfig, GeneratorOutput
from .init import ALPHA_INITS, FUSION_INITS, init_alpha_alive, init_fusion_as_sum, initialise

__all__ = [
    "ALPHA_INITS",
    "FUSION_INITS",
    "AdaptiveDilatedConv",
    "Discriminator",
    "Generator",
    "GeneratorConfig",
    "GeneratorOutput",
    "adaptive_dilated_conv2d",
    "init_alpha_alive",
    "init_fusion_as_sum",
    "initialise",
]
