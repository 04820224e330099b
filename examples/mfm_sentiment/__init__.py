"""The sequence MFM on multimodal sentiment data (POM, ICT-MMMO, YouTube, CMU-MOSI).

Composed from factorkit's blocks and its :class:`~factorkit.MFM` recipe, as in the
paper's sentiment experiments (the modules, by role):

- :mod:`~examples.mfm_sentiment.data`: standardised batches with step masks (B, T) and
  per-modality presence (B,); samples with no data at all (length 0) are dropped;
- :mod:`~examples.mfm_sentiment.model`: the encoder (an MFN over all modalities for Z_y,
  one LSTM per modality for Z_a_m), generators, a predictor starting from the mean
  training label, one LSTM decoder per modality, wired by ``MFM``; the discriminative
  baseline is the same with ``decoders=None``; the surrogate for missing modalities;
- :mod:`~examples.mfm_sentiment.run`: training with :func:`~factorkit.mfm_loss`
  (label loss + lambda_x * masked reconstruction + lambda_mmd * MMD on every latent), the
  surrogate (trained afterwards on the frozen MFM: ``model.decode`` of the completed
  codes), the missing-modality tests (surrogate, zero-fill with raw zeros, mean
  imputation), and the command line;
- :mod:`~examples.mfm_sentiment.metrics` and :mod:`~examples.mfm_sentiment.plots`: the
  datasets' metrics, the gradient-flow contributions of F_y and F_a_m to each
  reconstruction per time step, the summary over seeds and the figures.

Run from the repository root::

    python -m examples.mfm_sentiment --data ../shared/data/mfn-sentiment/pom --dataset pom
    python examples/mfm_sentiment --data ../shared/data/mfn-sentiment/mmmo --dataset mmmo
"""
