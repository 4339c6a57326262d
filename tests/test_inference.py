"""The Predictor runs the net at a few fixed batch sizes whatever the number of crops (issue 21: memory
flat in the number of micrographs), and the padding changes the probabilities only by float32 rounding."""

import numpy as np
import pytest
import torch

import _bundles
from deepyeast.engine.inference import PAD_STEPS, InferenceSettings, padded_batch
from deepyeast.model import read_bundle


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    path, crops, _ = _bundles.make_bundle(str(d / "model"), str(d), seed=0)
    return path, crops


def test_padded_batch_takes_few_sizes_and_never_drops_a_crop():
    for batch in (1, 2, 7, 8, 9, 16, 100, 128, 1000):
        sizes = [padded_batch(m, batch) for m in range(1, batch + 1)]
        quantum = -(-batch // PAD_STEPS)
        assert len(set(sizes)) <= PAD_STEPS and sizes[-1] == batch
        assert all(m <= s <= batch and s - m < quantum for m, s in enumerate(sizes, 1))
    assert sorted(set(padded_batch(m, 100) for m in range(1, 101))) == [13, 26, 39, 52, 65, 78, 91, 100]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_net_sees_a_fixed_set_of_batch_sizes_and_the_same_probabilities(made, net_batches, precision):
    path, crops = made
    batch = 16
    pred = read_bundle(path).predictor(InferenceSettings(precision=precision, batch=batch))
    rng = np.random.default_rng(1)
    counts = [1, 2, 3, 5, 6, 9, 11, 14, 16, 17, 19, 23, 30, 33]
    seen = set()
    for n in counts:
        x = crops[rng.integers(0, len(crops), n)]
        del net_batches[:]
        got = pred.outputs(x)["prob"]
        assert got.shape == (n, 12)
        assert net_batches == [padded_batch(min(batch, n - s), batch) for s in range(0, n, batch)]
        seen.update(net_batches)
        # today's unpadded run: the same net on each batch as it is
        with torch.inference_mode():
            want = np.concatenate([pred.module(torch.from_numpy(x[s:s + batch].astype(np.float32))).float().numpy()
                                   for s in range(0, n, batch)])
        if precision == "fp32":  # oneDNN's blocking depends on the batch size: float32 rounding moves
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # (seen: 3.9e-7, 6.1e-6 relative)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
    # 14 calls with 12 different last-batch sizes: the net saw at most PAD_STEPS sizes
    assert len(seen) <= PAD_STEPS < len({n % batch or batch for n in counts})
