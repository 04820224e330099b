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
