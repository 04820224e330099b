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
from factorkit.interpret import (
    FactorContributions,
    JacobianNorms,
    decoder_jacobian_norms,
    factor_contributions,
)
from factorkit.latents import FactorizedLatents
from factorkit.masks import any_present, check_presence, fill_absent, random_presence
from factorkit.predictor import Predictor
from factorkit.probes import (
    content_transfer,
    linear_probe_accuracy,
    linear_probe_r2,
    recombine_latents,
    style_transfer,
    transfer_grid,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "ConcatFusion",
    "FactorContributions",
    "FactorGenerator",
    "FactorGenerators",
    "FactorizedHead",
    "FactorizedLatents",
    "ImageDecoder",
    "JacobianNorms",
    "ModalityDecoders",
    "Predictor",
    "VectorDecoder",
    "__version__",
    "any_present",
    "check_presence",
    "content_transfer",
    "decoder_jacobian_norms",
    "factor_contributions",
    "fill_absent",
    "linear_probe_accuracy",
    "linear_probe_r2",
    "random_presence",
    "recombine_latents",
    "style_transfer",
    "transfer_grid",
]
