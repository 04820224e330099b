import pytest
import torch
import torch.nn.functional as F
from torch import nn

from factorkit import (
    MFM,
    FactorGenerators,
    FactorizedHead,
    FactorizedLatents,
    MFMLoss,
    MMDPriorLoss,
    ModalityDecoders,
    Predictor,
    SurrogateInference,
    VectorDecoder,
    complete_latents,
    mfm_loss,
)

SIZES = {"a": 6, "b": 3}


def inputs(batch: int = 8) -> dict[str, torch.Tensor]:
    return {m: torch.randn(batch, d) for m, d in SIZES.items()}


def build(*, generative: bool = True) -> MFM:
    encoders = {m: nn.Sequential(nn.Linear(d, 5), nn.ReLU()) for m, d in SIZES.items()}
    head = FactorizedHead(
        dict.fromkeys(SIZES, 5),
        shared_size=4,
        private_size=2 if generative else None,
        encoders=encoders,
    )
    decoders = None
    if generative:
        decoders = ModalityDecoders({m: VectorDecoder(8, 8, d) for m, d in SIZES.items()})
    return MFM(head, FactorGenerators.for_head(head, factor_size=8), decoders, Predictor(8, 3))


class Recorder(nn.Module):
    """A stand-in that records what it was called with and returns a fixed output."""

    def __init__(self, out: object) -> None:
        super().__init__()
        self.out, self.calls = out, []  # type: ignore[var-annotated]

    def forward(self, *args: object, **kwargs: object) -> object:
        self.calls.append((args, kwargs))
        return self.out


def test_mfm_wires_encoder_generators_predictor_and_decoders() -> None:
    z = FactorizedLatents(torch.randn(2, 3), {"a": torch.randn(2, 1)})
    factors = FactorizedLatents(torch.randn(2, 4), {"a": torch.randn(2, 2)})
    encoder, generators = Recorder(z), Recorder(factors)
    reconstructions = {"a": torch.randn(2, 7)}
    decoders = Recorder(reconstructions)
    predictor = nn.Linear(4, 2)
    model = MFM(encoder, generators, decoders, predictor)
    x = {"a": torch.randn(2, 7)}
    mask = torch.ones(2, 5, dtype=torch.bool)
    out = model(x, None, mask=mask)
    assert out.latents is z and out.factors is factors
    assert out.reconstructions == reconstructions
    torch.testing.assert_close(out.prediction, predictor(factors.shared))
    assert encoder.calls == [((x, None), {"mask": mask})]
    assert generators.calls == [((z,), {})]
    assert decoders.calls == [((factors,), {"mask": mask})]
    model(x)
    assert encoder.calls[-1] == ((x, None), {}) and decoders.calls[-1] == ((factors,), {})
    torch.testing.assert_close(model.predict(z), predictor(factors.shared))


def test_decode_and_predict_take_latents_from_anywhere() -> None:
    model = build().eval()
    x = inputs()
    out = model(x)
    again = model.decode(model.encode(x))
    torch.testing.assert_close(again.prediction, out.prediction)
    assert again.reconstructions is not None and out.reconstructions is not None
    torch.testing.assert_close(again.reconstructions["b"], out.reconstructions["b"])
    torch.testing.assert_close(model.predict(out.latents), out.prediction)
    # Surrogate codes for a missing modality go through the same decode.
    present = {"a": torch.tensor([True] * 4 + [False] * 4), "b": torch.ones(8, dtype=torch.bool)}
    surrogate = SurrogateInference({"a": 6, "b": 3}, shared_size=4, private_size=2).eval()
    z = complete_latents(model.encode(x, present), surrogate(x, present))
    missing = model.decode(z)
    assert missing.reconstructions is not None
    assert missing.reconstructions["a"].shape == (8, 6)


def test_discriminative_baseline_has_no_private_part_and_only_the_label_loss() -> None:
    model = build(generative=False)
    assert not model.generative
    assert not any("private" in name for name, _ in model.named_parameters())
    x, y = inputs(), torch.randint(3, (8,))
    out = model(x)
    assert out.reconstructions is None and out.latents.private == {}
    terms = mfm_loss(out, x, y)
    assert set(terms) == {"total", "label"}
    torch.testing.assert_close(terms["total"], F.cross_entropy(out.prediction, y))


def test_mfm_loss_equals_the_paper_objective_written_out() -> None:
    model = build()
    x, y = inputs(), torch.randint(3, (8,))
    present = {"a": torch.tensor([True, False] * 4), "b": torch.ones(8, dtype=torch.bool)}
    out = model(x, present)
    torch.manual_seed(5)
    terms = mfm_loss(out, x, y, lambda_x={"a": 0.5, "b": 2.0}, lambda_mmd=3.0)
    # Independent recomputation: masked MSE by hand, the MMD against the same prior draws.
    assert out.reconstructions is not None
    keep = present["a"]
    rec_a = (out.reconstructions["a"][keep] - x["a"][keep]).square().mean()
    rec_b = (out.reconstructions["b"] - x["b"]).square().mean()
    torch.manual_seed(5)
    prior = MMDPriorLoss()
    mmds = {name: prior(z, mask=out.latents.mask(name)) for name, z in out.latents.items()}
    label = F.cross_entropy(out.prediction, y)
    expected = label + 0.5 * rec_a + 2.0 * rec_b + 3.0 * sum(mmds.values())
    assert list(terms) == [
        "total",
        "label",
        "reconstruction/a",
        "reconstruction/b",
        "mmd/shared",
        "mmd/a",
        "mmd/b",
    ]
    torch.testing.assert_close(terms["reconstruction/a"], rec_a)
    torch.testing.assert_close(terms["reconstruction/b"], rec_b)
    for name, value in mmds.items():
        torch.testing.assert_close(terms[f"mmd/{name}"], value)
    torch.testing.assert_close(terms["total"], expected)
    # The module form gives the same, and a zero weight leaves its terms out.
    torch.manual_seed(5)
    module = MFMLoss(lambda_x={"a": 0.5, "b": 2.0}, lambda_mmd=3.0, prior=MMDPriorLoss())
    torch.testing.assert_close(module(out, x, y)["total"], expected)
    assert set(mfm_loss(out, x, y, lambda_mmd=0.0)) == {
        "total",
        "label",
        "reconstruction/a",
        "reconstruction/b",
    }


def test_mfm_loss_l1_and_callable_label_losses() -> None:
    x = inputs()
    y = torch.randn(8)
    model = build()
    model.predictor = Predictor(8, 1, offset=2.5)
    out = model(x)
    terms = mfm_loss(out, x, y, label_loss="l1", lambda_mmd=0.0, lambda_x=0.0)
    torch.testing.assert_close(terms["label"], (out.prediction[:, 0] - y).abs().mean())
    custom = mfm_loss(out, x, y, label_loss=lambda p, t: (p[:, 0] - t).square().mean())
    torch.testing.assert_close(custom["label"], (out.prediction[:, 0] - y).square().mean())
    with pytest.raises(ValueError, match=r"labels of shape \(3,\) do not match"):
        mfm_loss(out, x, y[:3], label_loss="l1")
    with pytest.raises(ValueError, match="label_loss must be"):
        MFMLoss("mse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"lambda_x modalities: missing \['b'\]"):
        mfm_loss(out, x, y, label_loss="l1", lambda_x={"a": 1.0})


def test_mfm_loss_passes_the_step_mask_to_the_reconstruction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import factorkit.models

    seen = {}

    def fake(*args: object, **kwargs: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        seen.update(kwargs)
        return torch.zeros(()), {"a": torch.zeros(()), "b": torch.zeros(())}

    monkeypatch.setattr(factorkit.models, "reconstruction_loss", fake)
    x = inputs()
    out = build()(x)
    step_mask = torch.ones(8, 4, dtype=torch.bool)
    mfm_loss(out, x, torch.randint(3, (8,)), mask=step_mask, lambda_mmd=0.0)
    assert seen["mask"] is step_mask


def test_the_inference_path_exports_with_a_dynamic_batch() -> None:
    model = build().eval()
    surrogate = SurrogateInference({"a": 6, "b": 3}, shared_size=4, private_size=2).eval()

    class Inference(nn.Module):
        """Prediction and reconstructions with the missing codes inferred."""

        def __init__(self) -> None:
            super().__init__()
            self.model, self.surrogate = model, surrogate

        def forward(
            self, x: dict[str, torch.Tensor], present: dict[str, torch.Tensor]
        ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
            z = complete_latents(self.model.encode(x, present), self.surrogate(x, present))
            out = self.model.decode(z)
            return out.prediction, out.reconstructions

    batch = torch.export.Dim("batch", min=1)
    dims = {m: {0: batch} for m in SIZES}
    x = inputs(5)
    present = {
        "a": torch.tensor([True, False, True, True, False]),
        "b": torch.ones(5, dtype=torch.bool),
    }
    exported = torch.export.export(Inference(), (x, present), dynamic_shapes=(dims, dims))
    full = torch.export.export(model, (x,), dynamic_shapes=(dims,))
    for batch_size in (1, 11):
        x = inputs(batch_size)
        present = {"a": torch.rand(batch_size) < 0.5, "b": torch.ones(batch_size, dtype=torch.bool)}
        eager = Inference()(x, present)
        got = exported.module()(x, present)
        torch.testing.assert_close(got[0], eager[0], rtol=0, atol=0)
        for m in SIZES:
            torch.testing.assert_close(got[1][m], eager[1][m], rtol=0, atol=0)  # type: ignore[index]
        out, ref = full.module()(x), model(x)
        torch.testing.assert_close(out.prediction, ref.prediction, rtol=0, atol=0)
        assert out.latents == ref.latents


@pytest.mark.slow
def test_mfm_and_its_loss_compile_without_graph_breaks() -> None:
    model = build()  # two vector decoders: the grouped decoder path
    x, y = inputs(), torch.randint(3, (8,))
    present = {"a": torch.tensor([True, False] * 4), "b": torch.ones(8, dtype=torch.bool)}
    prior = MMDPriorLoss(estimator="analytic")  # no prior draws: eager and compiled agree

    def total(x: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        return mfm_loss(model(x, present), x, y, prior=prior)["total"]

    model.eval()
    compiled = torch.compile(total, fullgraph=True)
    torch.testing.assert_close(compiled(x, present), total(x, present), rtol=1e-5, atol=1e-5)
