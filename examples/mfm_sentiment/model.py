"""Networks of the sentiment example, composed with factorkit's recipe.

- encoder: a :class:`~factorkit.FactorizedEncoder` of the MFN
  (:class:`~factorkit.MemoryFusionEncoder`) over all modalities for Z_y and one
  :class:`~factorkit.SequenceEncoder` (LSTM) per modality for Z_a_m;
- generators :class:`~factorkit.FactorGenerators`, predictor
  :class:`~factorkit.Predictor` (starting from the mean training label for regression);
- decoders: a :class:`~factorkit.ModalityDecoders` of one
  :class:`~factorkit.SequenceDecoder` (LSTM) per modality;

all wired by :class:`~factorkit.MFM`; ``generative=False`` gives the discriminative
baseline (the same networks without decoders). :class:`SequenceSurrogate` infers the
codes of missing modalities for ``model.decode``.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from examples.mfm_sentiment.data import Batch
from factorkit import (
    MFM,
    FactorGenerators,
    FactorizedEncoder,
    FactorizedLatents,
    MemoryFusionEncoder,
    ModalityDecoders,
    Predictor,
    SequenceDecoder,
    SequenceEncoder,
    SurrogateInference,
    complete_latents,
    fill_absent,
)
from factorkit.sequence import DecoderFeed

__all__ = ["SequenceSurrogate", "build_mfm", "predict_with_surrogate"]


def build_mfm(
    feature_sizes: Mapping[str, int],
    output_size: int,
    *,
    offset: Tensor | None = None,
    generative: bool = True,
    hidden_size: int = 32,
    memory_size: int = 32,
    shared_size: int = 32,
    private_size: int = 16,
    factor_size: int = 32,
    dropout: float = 0.2,
    decoder_feed: DecoderFeed = "every",
) -> MFM:
    """The sequence MFM (or, with ``generative=False``, the discriminative baseline: the
    same encoders, generators and predictor, with ``decoders=None``).

    Args:
        feature_sizes: modality name -> D_m.
        output_size: regression targets K or classes C.
        offset: (K,) added to the regression output (the mean training label), so
            training starts from the mean; ``None`` for classification.
        generative: build the decoders (the MFM) or not (the discriminative baseline).
        hidden_size: LSTM state size of every encoder (and of the decoders with
            ``decoder_feed="every"``).
        memory_size: size of the MFN multi-view memory.
        shared_size: size of Z_y.
        private_size: size of each Z_a_m.
        factor_size: size of every factor F.
        dropout: dropout in the encoders, generators and predictor.
        decoder_feed: ``"every"`` (the factors at every step, hidden size
            ``hidden_size``: the default, one cuDNN call) or ``"hidden"`` (the reference
            code's decoder: the factors at step 0, then its own hidden state, whose size
            is that of [F_a_m, F_y]).
    """
    names = sorted(feature_sizes)
    # The private encoders are built first: the order in which the old example drew the
    # initial weights.
    private = {
        m: SequenceEncoder(feature_sizes[m], hidden_size, private_size, dropout=dropout)
        for m in names
    }
    shared = MemoryFusionEncoder(
        {m: feature_sizes[m] for m in names}, hidden_size, memory_size, shared_size, dropout=dropout
    )
    generators = FactorGenerators(
        shared_size, dict.fromkeys(names, private_size), factor_size=factor_size, dropout=dropout
    )
    decoder_hidden = None if decoder_feed == "hidden" else hidden_size
    decoders = None
    if generative:
        decoders = ModalityDecoders(
            {
                m: SequenceDecoder(
                    factor_size,
                    factor_size,
                    feature_sizes[m],
                    hidden_size=decoder_hidden,
                    feed=decoder_feed,
                )
                for m in names
            }
        )
    predictor = Predictor(
        factor_size,
        output_size,
        dropout=dropout,
        offset=0.0 if offset is None else offset.tolist(),
    )
    return MFM(FactorizedEncoder(shared, private), generators, decoders, predictor)


class SequenceSurrogate(nn.Module):
    """Surrogate inference for sequences: a small LSTM per modality, then
    :class:`~factorkit.SurrogateInference` on those features.

    Args:
        feature_sizes: modality name -> D_m.
        shared_size: size of Z_y; private_size: size of each Z_a_m (the MFM's).
        hidden_size: LSTM state size and feature size per modality.
        dropout: dropout of the surrogate network.

    Shapes:
        x[m]: (B, T, D_m). mask: (B, T). observed[m]: (B,) bool.
        Returns: latents with shared (B, Dy) and private[m] (B, Da).
    """

    def __init__(
        self,
        feature_sizes: Mapping[str, int],
        *,
        shared_size: int,
        private_size: int,
        hidden_size: int = 32,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        names = sorted(feature_sizes)
        self.encoders = nn.ModuleDict(
            {m: SequenceEncoder(feature_sizes[m], hidden_size, hidden_size) for m in names}
        )
        self.inference = SurrogateInference(
            dict.fromkeys(names, hidden_size),
            shared_size=shared_size,
            private_size=private_size,
            dropout=dropout,
        )

    def forward(
        self, x: Mapping[str, Tensor], mask: Tensor, observed: Mapping[str, Tensor]
    ) -> FactorizedLatents:
        features = {
            m: enc(fill_absent(x[m], observed[m]), mask=mask) for m, enc in self.encoders.items()
        }
        latents: FactorizedLatents = self.inference(features, observed)
        return latents


def predict_with_surrogate(model: MFM, surrogate: SequenceSurrogate, batch: Batch) -> Tensor:
    """Predictions where ``batch.present`` marks the observed modalities: the codes of
    the missing ones come from the surrogate."""
    latents = model.encode(batch.x, batch.present, mask=batch.mask)
    return model.predict(complete_latents(latents, surrogate(batch.x, batch.mask, batch.present)))
