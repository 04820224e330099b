"""factorkit: PyTorch blocks for factorized multimodal representations.

After the Multimodal Factorization Model (MFM) of Tsai et al., ICLR 2019: one shared,
discriminative factor inferred from all modalities and one private, generative factor
per modality, each pulled toward its prior with an MMD penalty.
"""

from __future__ import annotations

from factorkit.kernels import GaussianKernel, InverseMultiquadraticKernel, Kernel, SumKernel
from factorkit.mmd_loss import MMDPriorLoss, PriorSampler, gaussian_prior_mmd, mmd

__version__ = "0.1.0.dev0"

__all__ = [
    "GaussianKernel",
    "InverseMultiquadraticKernel",
    "Kernel",
    "MMDPriorLoss",
    "PriorSampler",
    "SumKernel",
    "__version__",
    "gaussian_prior_mmd",
    "mmd",
]
