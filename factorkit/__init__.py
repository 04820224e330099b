"""factorkit: PyTorch blocks for factorized multimodal representations.

After the Multimodal Factorization Model (MFM) of Tsai et al., ICLR 2019: one shared,
discriminative factor inferred from all modalities and one private, generative factor
per modality, each pulled toward its prior with an MMD penalty.
"""

from __future__ import annotations

from factorkit.decoders import ImageDecoder, ModalityDecoders, VectorDecoder
from factorkit.distributed import all_gather_with_grad
from factorkit.fusion import ConcatFusion
from factorkit.generators import FactorGenerators
from factorkit.heads import FactorizedEncoder, FactorizedHead
from factorkit.interpret import (
    FactorContributions,
    JacobianNorms,
    decoder_jacobian_norms,
    factor_contributions,
)
from factorkit.kernels import GaussianKernel, InverseMultiquadraticKernel, Kernel, SumKernel
from factorkit.latents import FactorizedLatents
from factorkit.masks import any_present, check_presence, fill_absent, random_presence
from factorkit.metrics import (
    accuracy,
    accuracy_2,
    accuracy_7,
    f1,
    mae,
    pearson_corr,
    per_target_corr,
    per_target_mae,
    weighted_f1,
)
from factorkit.mfn import MemoryFusionEncoder
from factorkit.mmd_loss import MMDPriorLoss, PriorSampler, gaussian_prior_mmd, mmd
from factorkit.models import MFM, MFMLoss, MFMOutput, mfm_loss
from factorkit.predictor import Predictor
from factorkit.probes import (
    content_transfer,
    linear_probe_accuracy,
    linear_probe_r2,
    recombine_latents,
    style_transfer,
    transfer_grid,
)
from factorkit.reconstruction import ReconstructionLoss, reconstruction_loss
from factorkit.sequence import (
    SequenceDecoder,
    SequenceEncoder,
    infer_padding_mask,
    lengths_to_mask,
)
from factorkit.surrogate import SurrogateInference, SurrogateLoss, complete_latents, surrogate_loss

__version__ = "0.1.0.dev0"

__all__ = [
    "MFM",
    "ConcatFusion",
    "FactorContributions",
    "FactorGenerators",
    "FactorizedEncoder",
    "FactorizedHead",
    "FactorizedLatents",
    "GaussianKernel",
    "ImageDecoder",
    "InverseMultiquadraticKernel",
    "JacobianNorms",
    "Kernel",
    "MFMLoss",
    "MFMOutput",
    "MMDPriorLoss",
    "MemoryFusionEncoder",
    "ModalityDecoders",
    "Predictor",
    "PriorSampler",
    "ReconstructionLoss",
    "SequenceDecoder",
    "SequenceEncoder",
    "SumKernel",
    "SurrogateInference",
    "SurrogateLoss",
    "VectorDecoder",
    "__version__",
    "accuracy",
    "accuracy_2",
    "accuracy_7",
    "all_gather_with_grad",
    "any_present",
    "check_presence",
    "complete_latents",
    "content_transfer",
    "decoder_jacobian_norms",
    "f1",
    "factor_contributions",
    "fill_absent",
    "gaussian_prior_mmd",
    "infer_padding_mask",
    "lengths_to_mask",
    "linear_probe_accuracy",
    "linear_probe_r2",
    "mae",
    "mfm_loss",
    "mmd",
    "pearson_corr",
    "per_target_corr",
    "per_target_mae",
    "random_presence",
    "recombine_latents",
    "reconstruction_loss",
    "style_transfer",
    "surrogate_loss",
    "transfer_grid",
    "weighted_f1",
]
