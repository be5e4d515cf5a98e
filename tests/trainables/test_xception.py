"""Xception: parameter counts by hand, the paper's full-size count, and the small-input adaptation."""

import pytest
import torch
from torch import nn

from gantune.trainables.xception import MiddleBlock, SeparableConv2d, Xception, XceptionBlock, downsampling_plan


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_separable_conv_parameter_count():
    # depthwise 3x3 per input channel + pointwise 1x1, no biases
    assert n_params(SeparableConv2d(64, 128)) == 64 * 9 + 64 * 128


def test_entry_block_parameter_count():
    cin, cout = 64, 128
    sep1 = cin * 9 + cin * cout + 2 * cout  # + batch-norm scale and shift
    sep2 = cout * 9 + cout * cout + 2 * cout
    shortcut = cin * cout + 2 * cout  # 1x1 conv, no bias, + batch norm
    assert n_params(XceptionBlock(cin, cout, cout, downsample=True, start_with_relu=False)) == sep1 + sep2 + shortcut


def test_middle_block_parameter_count_and_identity_shortcut():
    c = 16
    block = MiddleBlock(c)
    assert n_params(block) == 3 * (c * 9 + c * c + 2 * c)
    # With the last batch norm's scale and shift at 0 the body outputs 0: only the shortcut is left.
    last_bn = block.body[-1]
    nn.init.zeros_(last_bn.weight)
    nn.init.zeros_(last_bn.bias)
    x = torch.randn(2, c, 5, 5)
    assert torch.equal(block.eval()(x), x)


def test_full_size_matches_the_paper_network():
    # Keras' Xception (the reference implementation of Chollet 2017) at 1000 classes:
    # 22,855,952 trainable parameters (its 54,528 non-trainable ones are batch-norm statistics,
    # buffers in PyTorch).
    assert n_params(Xception(3, 1000, 299)) == 22_855_952


@pytest.mark.parametrize("size, exit_px", [(28, 4), (64, 4), (80, 5), (299, 10)])
def test_exit_map_never_vanishes(size, exit_px):
    model = Xception(1, 2, size, width=1 / 16, middle_repeats=1).eval()
    with torch.no_grad():
        x = model.exit[0](model.middle(model.entry(model.stem(torch.zeros(1, 1, size, size)))))
    assert x.shape[-2:] == (exit_px, exit_px)


def test_downsampling_plan_drops_earliest_strides():
    assert downsampling_plan(28) == [False, False, True, True, True]
    assert downsampling_plan(80) == [False, True, True, True, True]
    assert downsampling_plan(299) == [True] * 5


def test_middle_repeats_and_width():
    model = Xception(3, 2, 28, width=0.25, middle_repeats=3)
    assert len(model.middle) == 3
    assert model.fc.in_features == 512
    with pytest.raises(ValueError, match="middle_repeats"):
        Xception(3, 2, 28, middle_repeats=-1)
