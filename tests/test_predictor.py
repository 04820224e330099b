import pytest
import torch

from factorkit import Predictor


def test_predictor_matches_manual_computation() -> None:
    pred = Predictor(4, 3, hidden_size=5).eval()
    f = torch.randn(6, 4)
    l1, l2 = pred.net[0], pred.net[3]
    torch.testing.assert_close(
        pred(f), torch.relu(f @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias
    )


def test_linear_predictor() -> None:
    pred = Predictor(4, 2, hidden_size=0)
    f = torch.randn(3, 4)
    torch.testing.assert_close(pred(f), f @ pred.net.weight.T + pred.net.bias)


def test_predictor_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"shared factor of shape \(B, 4\), got \(3, 5\)"):
        Predictor(4, 2)(torch.randn(3, 5))


def test_predictor_adds_its_offset_and_keeps_it_in_the_state_dict() -> None:
    pred = Predictor(4, 2, offset=[1.5, -2.0]).eval()
    f = torch.randn(3, 4)
    torch.testing.assert_close(pred(f), pred.net(f) + torch.tensor([1.5, -2.0]))
    loaded = Predictor(4, 2)
    loaded.load_state_dict(pred.state_dict())
    torch.testing.assert_close(loaded.eval()(f), pred(f))
    with pytest.raises(ValueError, match="offset must be a float or 2 values"):
        Predictor(4, 2, offset=[1.0, 2.0, 3.0])


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
def test_predictor_names_the_dtype(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match=rf"shared factor .*{dtype}"):
        Predictor(4, 2)(torch.ones(3, 4, dtype=dtype))


def test_predictor_names_the_device() -> None:
    with pytest.raises(ValueError, match="shared factor is on cpu, Predictor's parameters on meta"):
        Predictor(4, 2).to("meta")(torch.randn(3, 4))
