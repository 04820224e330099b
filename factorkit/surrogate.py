"""Surrogate inference: the codes of missing modalities, inferred from the observed ones.

When modality m is missing, the MFM keeps its trained generators, decoders and predictor
and infers the codes they need from what was observed: a surrogate shared code Z_y and a
surrogate private code Z_a_m for every missing m. Y_hat and X_hat_m then come from those
codes. :class:`SurrogateInference` serves every missing pattern, per sample, in one
module; :func:`complete_latents` merges its codes with the head's; :func:`surrogate_loss`
is the code-matching term of its objective.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Literal, overload

import torch
from torch import Tensor, nn

from factorkit._layers import mlp
from factorkit._validation import (
    SHARED,
    RecordsModalities,
    check_modality_names,
    check_size,
    check_vectors,
    per_modality,
)
from factorkit._validation import check_finite as check_all_finite
from factorkit.heads import FactorizedHead
from factorkit.latents import FactorizedLatents
from factorkit.masks import any_present, check_presence, fill_absent
from factorkit.reconstruction import masked_mse

__all__ = ["SurrogateInference", "SurrogateLoss", "complete_latents", "surrogate_loss"]

MAX_PATTERN_MODALITIES = 4
"""``mode="per_pattern"`` builds 2^M - 2 encoders; beyond 4 modalities use ``"shared"``."""

Codes = tuple[Tensor, dict[str, Tensor]]


def _split_codes(out: Tensor, sizes: Mapping[str, int], modalities: tuple[str, ...]) -> Codes:
    """Cut a (B, sum of code sizes) output into the shared and the private codes."""
    pieces = dict(zip(sizes, torch.split(out, list(sizes.values()), dim=1), strict=True))
    return pieces[SHARED], {m: pieces[m] for m in modalities}


class _SharedNetwork(nn.Module):
    """One network for every pattern: masked mean of per-modality embeddings + pattern."""

    def __init__(
        self,
        input_sizes: Mapping[str, int],
        output_sizes: Mapping[str, int],
        hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.modalities = tuple(input_sizes)
        self.output_sizes = dict(output_sizes)
        self.embeddings = nn.ModuleDict(
            {m: mlp([d, hidden, hidden]) for m, d in input_sizes.items()}
        )
        # A linear map of the presence bits: one learned vector per modality, so the size
        # stays linear in M while the trunk's nonlinearity can still tell patterns apart.
        self.pattern_embedding = nn.Linear(len(self.modalities), hidden)
        self.trunk = nn.Sequential(
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, sum(self.output_sizes.values())),
        )

    def forward(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Codes:
        bits = torch.stack([present[m] for m in self.modalities], dim=1)
        pooled = sum(
            fill_absent(self.embeddings[m](fill_absent(features[m], present[m])), present[m])
            for m in self.modalities
        )
        assert isinstance(pooled, Tensor)
        count = bits.sum(dim=1, keepdim=True).clamp(min=1).to(pooled.dtype)
        out = self.trunk(pooled / count + self.pattern_embedding(bits.to(pooled.dtype)))
        return _split_codes(out, self.output_sizes, self.modalities)


class _ExpertNetworks(nn.Module):
    """Product of experts: every observed modality proposes each code with a precision."""

    def __init__(
        self,
        input_sizes: Mapping[str, int],
        output_sizes: Mapping[str, int],
        hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.modalities = tuple(input_sizes)
        self.output_sizes = dict(output_sizes)
        width = sum(self.output_sizes.values())
        self.experts = nn.ModuleDict(
            {
                m: mlp([d, hidden, hidden, 2 * width], dropout=dropout)
                for m, d in input_sizes.items()
            }
        )

    def forward(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Codes:
        means: list[Tensor] = []
        log_precisions: list[Tensor] = []
        for m in self.modalities:
            proposal: Tensor = self.experts[m](fill_absent(features[m], present[m]))
            mean, log_precision = proposal.chunk(2, dim=1)
            means.append(mean)
            # An absent expert gets a log-precision far below any learned one: weight 0
            # after the softmax, while the row stays finite if nothing is observed.
            log_precisions.append(
                torch.where(present[m][:, None], log_precision, log_precision.new_tensor(-1e4))
            )
        weights = torch.softmax(torch.stack(log_precisions), dim=0)
        out = (weights * torch.stack(means)).sum(dim=0)
        return _split_codes(out, self.output_sizes, self.modalities)


class _PatternNetworks(nn.Module):
    """One encoder per observed subset, for its missing codes only."""

    def __init__(
        self,
        input_sizes: Mapping[str, int],
        output_sizes: Mapping[str, int],
        hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.modalities = tuple(input_sizes)
        self.output_sizes = dict(output_sizes)
        self.patterns: list[tuple[int, tuple[str, ...], tuple[str, ...]]] = []
        encoders = {}
        for size in range(1, len(self.modalities)):
            for observed in itertools.combinations(self.modalities, size):
                missing = tuple(m for m in self.modalities if m not in observed)
                code = sum(1 << self.modalities.index(m) for m in observed)
                self.patterns.append((code, observed, missing))
                width = sum(self.output_sizes[n] for n in (SHARED, *missing))
                encoders["+".join(observed)] = mlp(
                    [sum(input_sizes[m] for m in observed), hidden, hidden, width],
                    dropout=dropout,
                )
        self.encoders = nn.ModuleDict(encoders)

    def forward(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Codes:
        bits = torch.stack([present[m] for m in self.modalities], dim=1).long()
        weights = 1 << torch.arange(len(self.modalities), device=bits.device)
        pattern = (bits * weights).sum(dim=1)
        first = features[self.modalities[0]]
        batch = first.shape[0]
        shared = first.new_zeros(batch, self.output_sizes[SHARED])
        private = {m: first.new_zeros(batch, self.output_sizes[m]) for m in self.modalities}
        # Every encoder runs on the whole batch and torch.where picks its rows: no host
        # sync and no data-dependent shapes. Inputs are zero-filled first so that rows of
        # other patterns (where a modality of this subset may be NaN) stay finite.
        for code, observed, missing in self.patterns:
            x = torch.cat([fill_absent(features[m], present[m]) for m in observed], dim=1)
            out = self.encoders["+".join(observed)](x)
            sizes = [self.output_sizes[n] for n in (SHARED, *missing)]
            pieces = out.split(sizes, dim=1)
            rows = (pattern == code)[:, None]
            shared = torch.where(rows, pieces[0], shared)
            for m, piece in zip(missing, pieces[1:], strict=True):
                private[m] = torch.where(rows, piece, private[m])
        return shared, private


class SurrogateInference(RecordsModalities):
    """Infer the shared code and the missing private codes from the observed modalities.

    For each sample, only its observed modalities are used (an absent modality's
    features may hold anything, NaN included: they reach no output and no gradient). The
    result holds, per sample, a surrogate Z_y (when anything is missing) and a surrogate
    Z_a_m for every missing m; slots the surrogate does not own are zeros. Its
    ``present`` marks what the surrogate *inferred* (``present[m]`` is True where m was
    missing), so ``result.mask(name)`` gives the rows to use, exactly as for a head's
    latents. Merge it with the head's codes of the observed modalities with
    :func:`complete_latents`, then run the trained generators, decoders and predictor.

    Modes:
        ``"shared"`` (default): one network for every pattern. Each modality has its
        own embedding MLP; the embeddings of the observed modalities are averaged and a
        learned embedding of the presence bits is added; a trunk MLP maps this to Z_y and
        every Z_a_m. Parameters grow linearly with the number of modalities.
        ``"experts"``: a product of experts, one network for every pattern. Each
        modality's expert MLP proposes Z_y and every Z_a_m with a per-dimension
        log-precision; each code is the precision-weighted mean of the proposals of the
        sample's observed modalities (a softmax of the log-precisions over them). With
        one modality observed the code is its expert's proposal alone, so each expert
        can be trained to stand alone; with several, the better informed experts
        dominate each dimension. Parameters grow linearly with the number of modalities.
        ``"per_pattern"``: one MLP per observed subset (2^M - 2 of them, M <= 4), each on
        the concatenated features of its subset and producing only the codes its pattern
        misses. None of the three is the reference code's surrogate, which builds, for
        each single missing modality only, separate Z_y and Z_a encoders over the raw
        observed sequences, trained jointly with the MFM with attached targets (see the
        docs' "Fidelity to the MFM" page); training a surrogate after the MFM, frozen,
        on detached targets, is factorkit's choice.

    A sample with every modality missing has nothing to infer from: ``forward`` raises
    ``ValueError``. Under ``torch.compile`` the check is skipped (it needs a host sync);
    such samples then get zeros, the prior mean, with nothing marked inferred.

    The objective (see :func:`surrogate_loss`): for observed masks drawn at random
    (e.g. :func:`~factorkit.random_presence`) on data where the modalities are known,

        L = sum_{Z in {Z_y, Z_a_missing}} ||Z_surrogate - Z_full||^2    (surrogate_loss)
          + ell_Y(Y, D(G_y(Z_y_surrogate)))                             (label)
          + sum_{m missing} lambda_m * ell_X(X_m, F_m(G(Z_surrogate)))  (reconstruction)

    Args:
        input_sizes: modality name -> feature size D_m (the features that feed the
            :class:`~factorkit.FactorizedHead`). At least two modalities.
        shared_size: Dy, size of the shared code.
        private_size: Da, size of each private code: one int for all, or per modality.
        mode: ``"shared"``, ``"experts"`` or ``"per_pattern"``.
        hidden_size: width of every hidden layer (default ``max(64, shared_size)``).
        dropout: dropout after every hidden activation.

    Shapes:
        features[m]: (B, D_m). present[m]: (B,) bool, True where observed.
        Returns: shared (B, Dy), private[m] (B, Da_m), present[m] (B,) bool (inferred).

    Examples:
        Training jointly with the main model (``head``, ``generators``, ``decoders``,
        ``predictor``), on batches where every modality is known:

            z = head(x)                                   # full-data codes
            main = mfm_loss(z, x, y)                      # the usual MFM objective
            observed = random_presence(head.modalities, len(y), 0.5)
            missing = {m: ~observed[m] for m in observed}
            z_sur = surrogate(x, observed)                # sees only the observed x
            f = generators(complete_latents(z, z_sur, observed))
            loss = (main + surrogate_loss(z_sur, z)
                    + F.cross_entropy(predictor(f.shared), y)
                    + reconstruction_loss(decoders(f), x, missing))

        Training afterwards, with the main model frozen: the same lines with ``main``
        left out, ``z = head(x)`` under ``torch.no_grad()``, the main model's parameters
        set to ``requires_grad_(False)``, and an optimizer over
        ``surrogate.parameters()`` only (gradients still flow through the frozen
        generators, decoders and predictor into the surrogate).

        At test time, with ``observed`` the real mask:

            z = complete_latents(head(x, observed), surrogate(x, observed))
            f = generators(z)
            y_hat, x_hat = predictor(f.shared), decoders(f)

        Refining mean imputation (``base``), in training and at test time alike:
        ``x_mean`` holds the missing modalities' training means and the observed ones'
        features, and the surrogate learns the correction to the head's codes of it:

            z_sur = surrogate(x, observed, base=head(x_mean))
    """

    def __init__(
        self,
        input_sizes: Mapping[str, int],
        *,
        shared_size: int,
        private_size: int | Mapping[str, int],
        mode: Literal["shared", "experts", "per_pattern"] = "shared",
        hidden_size: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.modalities = check_modality_names(input_sizes.keys())
        if len(self.modalities) < 2:
            raise ValueError(
                f"surrogate inference needs at least two modalities, got {list(self.modalities)}"
            )
        self.input_sizes = per_modality(dict(input_sizes), self.modalities, "input_sizes")
        self.shared_size = check_size(shared_size, "shared_size")
        self.private_sizes = per_modality(private_size, self.modalities, "private_size")
        hidden = check_size(hidden_size or max(64, shared_size), "hidden_size")
        output_sizes = {SHARED: self.shared_size, **self.private_sizes}
        if mode == "shared":
            self.network: nn.Module = _SharedNetwork(
                self.input_sizes, output_sizes, hidden, dropout
            )
        elif mode == "experts":
            self.network = _ExpertNetworks(self.input_sizes, output_sizes, hidden, dropout)
        elif mode == "per_pattern":
            if len(self.modalities) > MAX_PATTERN_MODALITIES:
                raise ValueError(
                    f'mode="per_pattern" builds one network per missing pattern and allows '
                    f"at most {MAX_PATTERN_MODALITIES} modalities, got {len(self.modalities)}; "
                    f'use mode="shared"'
                )
            self.network = _PatternNetworks(self.input_sizes, output_sizes, hidden, dropout)
        else:
            raise ValueError(f'mode must be "shared", "experts" or "per_pattern", got {mode!r}')
        self.mode = mode

    def modality_record(self) -> dict[str, Any]:
        """Mode, input and code sizes by modality (checked when a checkpoint loads)."""
        return {
            "mode": self.mode,
            "input_sizes": self.input_sizes,
            "shared_size": self.shared_size,
            "private_sizes": self.private_sizes,
        }

    @classmethod
    def for_head(
        cls,
        head: FactorizedHead,
        *,
        mode: Literal["shared", "experts", "per_pattern"] = "shared",
        hidden_size: int | None = None,
        dropout: float = 0.0,
    ) -> SurrogateInference:
        """Build a surrogate for the inputs and code sizes of a :class:`FactorizedHead`."""
        return cls(
            head.input_sizes,
            shared_size=head.shared_size,
            private_size=head.private_sizes,
            mode=mode,
            hidden_size=hidden_size,
            dropout=dropout,
        )

    def forward(
        self,
        features: Mapping[str, Tensor],
        present: Mapping[str, Tensor] | None = None,
        *,
        base: FactorizedLatents | None = None,
    ) -> FactorizedLatents:
        """Infer Z_y and the missing Z_a_m of each sample from its observed modalities.

        Args:
            features: modality name -> (B, D_m) features; absent rows may hold anything.
            present: modality name -> (B,) bool, True where observed (``None``: all).
            base: codes to refine, e.g. the head's codes of the input with the missing
                modalities mean-imputed: the network's output is added to them, so the
                surrogate starts from that estimate and learns its correction (its
                ``present`` is ignored; rows that are not inferred are dropped, NaN
                included).

        Returns:
            The surrogate codes; ``present[m]`` marks the rows where Z_a_m was inferred.

        Shapes:
            features[m]: (B, D_m). present[m]: (B,) bool. base: shared (B, Dy),
            private[m] (B, Da_m). Returns: shared (B, Dy), private[m] (B, Da_m).
        """
        batch = check_vectors(features, self.input_sizes, module=self)
        if present is None:
            first = features[self.modalities[0]]
            present = {m: first.new_ones(batch, dtype=torch.bool) for m in self.modalities}
        present = check_presence(present, self.modalities, batch)
        observed_any = any_present(present)
        if not torch.compiler.is_compiling() and not bool(observed_any.all()):
            rows = (~observed_any).nonzero().flatten().tolist()
            raise ValueError(
                f"samples {rows[:10]}{'...' if len(rows) > 10 else ''} have every modality "
                f"missing; surrogate inference needs at least one observed modality"
            )
        shared, private = self.network(features, present)
        if base is not None:
            self._check_base(base, batch)
            shared = shared + base.shared
            private = {m: private[m] + base.private[m] for m in self.modalities}
        inferred = {m: ~present[m] & observed_any for m in self.modalities}
        return FactorizedLatents(
            fill_absent(shared, any_present(inferred)),
            {m: fill_absent(private[m], inferred[m]) for m in self.modalities},
            inferred,
        )

    def _check_base(self, base: FactorizedLatents, batch: int) -> None:
        if base.modalities != self.modalities:
            raise ValueError(
                f"base codes have modalities {list(base.modalities)}, "
                f"the surrogate {list(self.modalities)}"
            )
        sizes = {SHARED: self.shared_size, **self.private_sizes}
        for name, code in base.items():
            if tuple(code.shape) != (batch, sizes[name]):
                raise ValueError(
                    f"base code {name!r}: expected shape {(batch, sizes[name])}, "
                    f"got {tuple(code.shape)}"
                )

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, shared_size={self.shared_size}, "
            f"private_sizes={self.private_sizes}"
        )


def complete_latents(
    observed: FactorizedLatents,
    inferred: FactorizedLatents,
    present: Mapping[str, Tensor] | None = None,
) -> FactorizedLatents:
    """Fill the missing slots of a head's latents with a surrogate's codes.

    Private code m comes from ``observed`` where modality m is present and from
    ``inferred`` elsewhere; the shared code comes from ``observed`` where every modality
    is present and from ``inferred`` elsewhere. Selection uses :func:`torch.where`, so
    the unused side gets no gradient.

    Args:
        observed: the head's latents; its ``present`` is the mask unless ``present`` is
            given. Codes computed from the full data may be passed with the simulated
            mask as ``present`` (the head's private codes only see their own modality, so
            observed slots are the same; this saves a second head pass in training).
        inferred: the latents of :class:`SurrogateInference` for the same mask.
        present: modality name -> (B,) bool, True where observed.

    Returns:
        Latents with every code available (``present`` is ``None``).

    Shapes:
        shared: (B, Dy). private[m]: (B, Da_m). present[m]: (B,) bool.
    """
    if observed.modalities != inferred.modalities:
        raise ValueError(
            f"observed latents have modalities {list(observed.modalities)}, "
            f"inferred ones {list(inferred.modalities)}"
        )
    for (name, a), (_, b) in zip(observed.items(), inferred.items(), strict=True):
        if a.shape != b.shape:
            raise ValueError(
                f"latent {name!r}: observed code of shape {tuple(a.shape)}, "
                f"inferred code of shape {tuple(b.shape)}"
            )
    mask = observed.present if present is None else present
    if mask is None:
        return FactorizedLatents(observed.shared, observed.private)
    mask = check_presence(mask, observed.modalities, observed.batch_size)
    everything = torch.stack(list(mask.values())).all(dim=0)
    return FactorizedLatents(
        torch.where(everything[:, None], observed.shared, inferred.shared),
        {
            m: torch.where(mask[m][:, None], observed.private[m], inferred.private[m])
            for m in observed.modalities
        },
    )


@overload
def surrogate_loss(
    surrogate: FactorizedLatents,
    target: FactorizedLatents,
    *,
    detach_target: bool = ...,
    weights: Mapping[str, float] | None = ...,
    per_latent: Literal[False] = ...,
    check_finite: bool = ...,
) -> Tensor: ...


@overload
def surrogate_loss(
    surrogate: FactorizedLatents,
    target: FactorizedLatents,
    *,
    detach_target: bool = ...,
    weights: Mapping[str, float] | None = ...,
    per_latent: Literal[True],
    check_finite: bool = ...,
) -> tuple[Tensor, dict[str, Tensor]]: ...


def surrogate_loss(
    surrogate: FactorizedLatents,
    target: FactorizedLatents,
    *,
    detach_target: bool = True,
    weights: Mapping[str, float] | None = None,
    per_latent: bool = False,
    check_finite: bool = True,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """Code matching: MSE between surrogate codes and the full-data codes they stand for.

    One term per latent, each the MSE averaged over the rows it covers and the code's
    features (0 when it covers none): Z_y over the samples where the surrogate inferred
    it (anything missing), Z_a_m over the samples where m was missing. Rows whose target
    code was not itself inferred (``target.mask(name)`` False, e.g. a modality absent
    from the training data too) are dropped. This is one part of the surrogate
    objective; the label loss and the reconstruction of the missing modalities through
    the main model are the caller's (see :class:`SurrogateInference`).

    Args:
        surrogate: output of :class:`SurrogateInference` (its ``present`` marks the
            inferred rows).
        target: the head's codes for the same samples from more (usually all)
            modalities.
        detach_target: stop the gradient into the target codes (default), so the main
            model is not pulled toward its surrogate. The reference MFM code leaves
            them attached: ``False`` reproduces that.
        weights: a weight per latent (``"shared"`` or a modality name); unnamed ones 1.
        per_latent: also return the unweighted term of every latent (for logging).
        check_finite: raise on NaN/inf in the compared rows of either code, as
            :func:`~factorkit.reconstruction_loss` does (one host sync; skipped under
            :func:`torch.compile`).

    Returns:
        The weighted sum of the terms (a scalar), and with ``per_latent=True`` also a
        dict latent name -> unweighted term.

    Raises:
        ValueError: latents or shapes that differ, unknown weight names, or (with
            ``check_finite``) non-finite compared values: the message names each such
            latent, whether the surrogate or the target code, and the count.

    Shapes:
        surrogate, target: shared (B, Dy), private[m] (B, Da_m). Returns: ().
    """
    if surrogate.modalities != target.modalities:
        raise ValueError(
            f"surrogate latents have modalities {list(surrogate.modalities)}, "
            f"target ones {list(target.modalities)}"
        )
    names = [name for name, _ in surrogate.items()]
    if weights is not None and set(weights) - set(names):
        unknown = sorted(set(weights) - set(names))
        raise ValueError(f"weights: unknown {unknown}; latents are {names}")
    if detach_target:
        target = target.detach()
    targets = dict(target.items())
    terms, rows = {}, {}
    for name, code in surrogate.items():
        if code.shape != targets[name].shape:
            raise ValueError(
                f"latent {name!r}: surrogate code of shape {tuple(code.shape)}, "
                f"target code of shape {tuple(targets[name].shape)}"
            )
        rows[name] = _both(surrogate.mask(name), target.mask(name))
        terms[name] = masked_mse(code, targets[name], rows[name])
    first = terms[SHARED]
    total = sum(
        (terms[n] * (1.0 if weights is None else weights.get(n, 1.0)) for n in names),
        start=torch.zeros((), dtype=first.dtype, device=first.device),
    )
    # As in reconstruction_loss: read the total first, name the culprits only if needed.
    if check_finite and not torch.compiler.is_compiling() and not bool(total.isfinite()):
        batch = first.new_ones(surrogate.shared.shape[0], dtype=torch.bool)
        compared = {n: batch if r is None else r for n, r in rows.items()}
        codes = {"surrogate code": dict(surrogate.items()), "target code": targets}
        check_all_finite(codes, compared, kind="latent")
    return (total, terms) if per_latent else total


def _both(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None or b is None:
        return b if a is None else a
    return a & b


class SurrogateLoss(nn.Module):
    """Module form of :func:`surrogate_loss`.

    Args:
        detach_target: stop the gradient into the target codes (default ``True``).
        weights: a weight per latent (``"shared"`` or a modality name); unnamed ones 1.
        check_finite: raise on NaN/inf in the compared rows (one host sync per call;
            see :func:`surrogate_loss`).

    Shapes:
        surrogate, target: shared (B, Dy), private[m] (B, Da_m). Returns: ().
    """

    def __init__(
        self,
        *,
        detach_target: bool = True,
        weights: Mapping[str, float] | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.detach_target = detach_target
        self.weights = None if weights is None else dict(weights)
        self.check_finite = check_finite

    def forward(self, surrogate: FactorizedLatents, target: FactorizedLatents) -> Tensor:
        """The weighted code-matching loss; see :func:`surrogate_loss`."""
        return surrogate_loss(
            surrogate,
            target,
            detach_target=self.detach_target,
            weights=self.weights,
            check_finite=self.check_finite,
        )

    def extra_repr(self) -> str:
        return (
            f"detach_target={self.detach_target}, weights={self.weights}, "
            f"check_finite={self.check_finite}"
        )
