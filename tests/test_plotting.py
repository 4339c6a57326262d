"""deepyeast/utils/plotting.py: a row of crops drawn as one picture (crop_strip) shows each crop as
crop_rgb makes it, at the positions it reports, with its title, and refuses crops of different sizes."""

import numpy as np
import pytest

from deepyeast.utils.plotting import crop_rgb, crop_strip, plt


def _crops(n, side=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(2, side, side), dtype=np.uint8) for _ in range(n)]


def test_the_strip_holds_each_crop_as_crop_rgb_makes_it_with_white_gaps_and_titles():
    crops = _crops(3)
    fig, ax = plt.subplots()
    centres = crop_strip(ax, crops, ["0.91", "0.50"], gap=2)
    assert centres == [3.5, 13.5, 23.5]  # 8 px crops, 2 px gaps
    (image,) = ax.get_images()
    strip = np.asarray(image.get_array())
    assert strip.shape == (8, 3 * 8 + 2 * 2, 3)
    for k, crop in enumerate(crops):
        assert np.array_equal(strip[:, 10 * k:10 * k + 8], crop_rgb(crop, marker_gain=0.8))
    assert np.all(strip[:, 8:10] == 1.0) and np.all(strip[:, 18:20] == 1.0)
    texts = [(t.get_text(), t.get_position()[0]) for t in ax.texts]
    assert texts == [("0.91", 3.5), ("0.50", 13.5)]  # the third crop untitled
    assert not ax.get_xticks().size and not any(s.get_visible() for s in ax.spines.values())
    plt.close(fig)


def test_an_empty_row_draws_nothing_and_crops_of_two_sizes_are_refused():
    fig, ax = plt.subplots()
    assert crop_strip(ax, []) == [] and not ax.get_images() and not ax.axison
    with pytest.raises(ValueError, match="different sizes"):
        crop_strip(ax, _crops(1, side=8) + _crops(1, side=6))
    plt.close(fig)
