"""factorkit: PyTorch blocks for factorized multimodal representations.

After the Multimodal Factorization Model (MFM) of Tsai et al., ICLR 2019: one shared,
discriminative factor inferred from all modalities and one private, generative factor
per modality, each pulled toward its prior with an MMD penalty.
"""

from __future__ import annotations

from factorkit.decoders import ImageDecoder, ModalityDecoders, VectorDecoder
from factorkit.fusion import ConcatFusion
from factorkit.generators import FactorGenerator, FactorGenerators
from factorkit.heads import FactorizedHead
from factorkit.latents import FactorizedLatents
from factorkit.masks import any_present, check_presence, fill_absent, random_presence
from factorkit.predictor import Predictor
from factorkit.reconstruction import ReconstructionLoss, reconstruction_loss
from factorkit.surrogate import (
    SurrogateInference,
    SurrogateLoss,
    complete_latents,
    surrogate_loss,
)

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
    "ReconstructionLoss",
    "SurrogateInference",
    "SurrogateLoss",
    "VectorDecoder",
    "__version__",
    "any_present",
    "check_presence",
    "complete_latents",
    "fill_absent",
    "random_presence",
    "reconstruction_loss",
    "surrogate_loss",
]
