from .adaptive_conv import AdaptiveDilatedConv, adaptive_dilated_conv2d
from .discriminator import Discriminator
from .generator import Generator, GeneratorConfig, GeneratorOutput

__all__ = [
    "AdaptiveDilatedConv",
    "Discriminator",
    "Generator",
    "GeneratorConfig",
    "GeneratorOutput",
    "adaptive_dilated_conv2d",
]
