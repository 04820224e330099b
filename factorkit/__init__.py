"""factorkit: PyTorch blocks for factorized multimodal representations.

After the Multimodal Factorization Model (MFM) of Tsai et al., ICLR 2019: one shared,
discriminative factor inferred from all modalities and one private, generative factor
per modality, each pulled toward its prior with an MMD penalty.
"""

from __future__ import annotations

from factorkit.decoders import ImageDecoder, ModalityDecoders, VectorDecoder
from factorkit.distributed import all_gather_with_grad
from factorkit.fusion import ConcatFusion
from factorkit.generators import FactorGenerator, FactorGenerators
from factorkit.heads import FactorizedHead
from factorkit.latents import FactorizedLatents
from factorkit.masks import any_present, check_presence, fill_absent, random_presence
from factorkit.predictor import Predictor

__version__ = "0.1.0.dev0"

__all__ = [
    "ConcatFusion",
    "FactorGenerator",
    "FactorGenerators",
    "FactorizedHead",
    "FactorizedLatents",
    "ImageDecoder",
    "ModalityDecoders",
    "Predictor",
    "VectorDecoder",
    "__version__",
    "all_gather_with_grad",
    "any_present",
    "check_presence",
    "fill_absent",
    "random_presence",
]
