"""Value tests for skgnn/gaussians.py against hand-worked cases (mutation testing, issue #11)."""

import dataclasses
import math

import pytest
import torch

from skgnn.gaussians import TAIL_WIDTHS, GaussianExpansion, GaussianWindow

# 20 centres 1.0, 1.5, ..., 10.5 Å: exact in binary, and not starting at zero
CENTERS = 1.0 + 0.5 * torch.arange(20, dtype=torch.float64)


def by_hand(length: float, center: float, width: float) -> float:
    x = (length - center) / width
    return math.exp(-(x**2)) if x * x <= TAIL_WIDTHS**2 else 0.0


def test_tail_widths_is_four_and_a_half():
    assert TAIL_WIDTHS == 4.5


def test_dense_values_by_hand():
    expansion = GaussianExpansion(CENTERS, 0.5)
    length = torch.tensor([1.0, 3.3, 10.9], dtype=torch.float64)
    dense = expansion.dense(length)
    assert dense.shape == (3, 20)
    expected = [[by_hand(d, float(c), 0.5) for c in CENTERS] for d in length.tolist()]
    torch.testing.assert_close(
        dense, torch.tensor(expected, dtype=torch.float64), rtol=1e-13, atol=0
    )
    assert dense[0, 0] == 1.0 and dense[0, 1] == pytest.approx(math.exp(-1.0), rel=1e-14)


def test_a_gaussian_exactly_four_and_a_half_widths_away_is_kept_and_beyond_is_zero():
    expansion = GaussianExpansion(torch.tensor([0.0, 4.5, 4.75, 8.0], dtype=torch.float64), 1.0)
    dense = expansion.dense(torch.tensor([0.0], dtype=torch.float64))[0]
    assert dense[0] == 1.0
    assert dense[1] == pytest.approx(math.exp(-20.25), rel=1e-12)  # on the edge: kept
    assert dense[2] == 0.0 and dense[3] == 0.0  # past it: exact zeros
    # 4 widths away: e^-16, not cut
    four = GaussianExpansion(torch.tensor([4.0], dtype=torch.float64), 1.0)
    assert float(four.dense(torch.tensor([0.0], dtype=torch.float64))[0, 0]) == pytest.approx(
        math.exp(-16.0), rel=1e-12
    )


def test_window_indices_and_values_by_hand():
    expansion = GaussianExpansion(CENTERS, 0.5)
    assert expansion.window_size == 11  # ceil(4.5 * 0.5 / 0.5 + 0.5) = 5 each side
    # nearest centre: round((d - 1) / 0.5); the first is 5 before it, clamped to [0, 9]
    length = torch.tensor([4.0, 4.3, 0.2, -3.0, 10.0, 100.0, 6.1], dtype=torch.float64)
    first = [1, 2, 0, 0, 9, 9, 5]
    window = expansion.window(length)
    assert isinstance(window, GaussianWindow)
    assert window.index.dtype == torch.int64
    assert window.index.tolist() == [list(range(f, f + 11)) for f in first]
    expected = [
        [by_hand(d, float(CENTERS[i]), 0.5) for i in range(f, f + 11)]
        for d, f in zip(length.tolist(), first, strict=True)
    ]
    torch.testing.assert_close(
        window.value, torch.tensor(expected, dtype=torch.float64), rtol=1e-13, atol=0
    )


def test_a_window_as_wide_as_the_centres_starts_at_the_first():
    expansion = GaussianExpansion(CENTERS, 1.0)
    assert expansion.window_size == 20  # min(20, 2 * ceil(9.5) + 1)
    window = expansion.window(torch.tensor([5.0, 10.0], dtype=torch.float64))
    assert window.index.tolist() == [list(range(20))] * 2


@pytest.mark.parametrize(
    "width, size",
    [(0.5, 11), (0.25, 7), (0.75, 17), (0.05, 3)],
    ids=["0.5", "0.25", "0.75", "0.05"],
)
def test_window_size_by_hand(width, size):
    # 2 ceil(4.5 width / 0.5 + 0.5) + 1
    assert GaussianExpansion(CENTERS, width).window_size == size


def test_spacing_by_hand():
    assert GaussianExpansion(CENTERS, 0.5)._spacing == 0.5
    assert GaussianExpansion(torch.tensor([2.0, 3.0], dtype=torch.float64), 0.5)._spacing == 1.0
    assert GaussianExpansion(torch.tensor([2.0], dtype=torch.float64), 0.5)._spacing is None
    assert GaussianExpansion(torch.tensor([2.0], dtype=torch.float64), 0.5).window_size == 1
    # uneven: a step of 0.5 after steps of 1 is not "evenly spaced"
    assert (
        GaussianExpansion(torch.tensor([0.0, 1.0, 1.5], dtype=torch.float64), 0.1)._spacing is None
    )
    # within 1e-4 of a step: even; 2e-4 off: not
    near = torch.tensor([0.0, 1.0, 2.00005], dtype=torch.float64)
    assert GaussianExpansion(near, 0.1)._spacing == 1.0
    off = torch.tensor([0.0, 1.0, 2.0002], dtype=torch.float64)
    assert GaussianExpansion(off, 0.1)._spacing is None
    assert GaussianExpansion(off, 0.1).window_size == 3
    # the tolerance is relative to the step: 1e-4 off a step of 2 is within 2e-4
    wide = torch.tensor([0.0, 2.0, 4.0001], dtype=torch.float64)
    assert GaussianExpansion(wide, 0.1)._spacing == 2.0
    # exactly on the tolerance (1e-4 * 10000 = 1.0, all exact in float64): still even
    edge = torch.tensor([0.0, 10000.0, 20001.0], dtype=torch.float64)
    assert GaussianExpansion(edge, 0.1)._spacing == 10000.0


def test_uneven_centres_window_is_everything_in_order():
    expansion = GaussianExpansion(torch.tensor([0.0, 1.0, 1.5, 4.0], dtype=torch.float64), 0.5)
    window = expansion.window(torch.tensor([3.9], dtype=torch.float64))
    assert window.index.tolist() == [[0, 1, 2, 3]]
    torch.testing.assert_close(
        window.value, expansion.dense(torch.tensor([3.9], dtype=torch.float64))
    )


def test_to_the_same_device_is_the_same_expansion_and_another_copies_the_width():
    expansion = GaussianExpansion(CENTERS, 0.5)
    assert expansion.to("cpu") is expansion
    moved = expansion.to("meta")
    assert moved is not expansion
    assert moved.width == 0.5 and moved.centers.device.type == "meta"
    assert moved.centers.shape == CENTERS.shape


def test_the_expansion_is_frozen():
    expansion = GaussianExpansion(CENTERS, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        expansion.width = 1.0
