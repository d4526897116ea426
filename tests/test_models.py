import pytest
import torch

from precond_core.models import MLP, count_parameters, large_cnn, small_cnn


def _expected_cnn(cin, ch, n_conv, side_out):
    conv = (cin * ch * 9 + ch) + (n_conv - 1) * (ch * ch * 9 + ch)
    return conv + ch * side_out * side_out * 10 + 10


@pytest.mark.parametrize("cin", [1, 3])
def test_parameter_counts(cin):
    assert count_parameters(small_cnn(cin)) == _expected_cnn(cin, 3, 4, 2)
    assert count_parameters(large_cnn(cin)) == _expected_cnn(cin, 32, 16, 2)


def test_talk_counts():
    # the talk's figures for 3-channel 32x32 input
    assert count_parameters(small_cnn(3)) == 466
    assert count_parameters(large_cnn(3)) == 140906


@pytest.mark.parametrize("f", [small_cnn, large_cnn])
@pytest.mark.parametrize("cin", [1, 3])
def test_output_shape(f, cin):
    assert f(cin)(torch.zeros(2, cin, 32, 32)).shape == (2, 10)


def test_mlp_and_bad_input():
    m = MLP([64, 16, 10])
    assert m(torch.zeros(5, 8, 8)).shape == (5, 10)
    assert count_parameters(m) == 64 * 16 + 16 + 16 * 10 + 10
    with pytest.raises(ValueError, match="in_channels"):
        small_cnn(2)
    with pytest.raises(ValueError, match="sizes"):
        MLP([10])
    with pytest.raises(ValueError, match="activation"):
        MLP([3, 2], activation="gelu")
