"""The Predictor runs the net at a few fixed batch sizes whatever the number of crops (issue 21: memory
flat in the number of micrographs), and the padding does not change the probabilities."""

import os
import subprocess
import sys
import textwrap

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
        if precision == "fp32":
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
    # 14 calls with 12 different last-batch sizes: the net saw at most PAD_STEPS sizes
    assert len(seen) <= PAD_STEPS < len({n % batch or batch for n in counts})


@pytest.mark.slow
def test_resident_memory_stays_flat_over_15_different_numbers_of_crops(made, tmp_path):
    """A fresh process runs the DeepYeast net (fp32, batch 100) on 100 crops, then on 100 + r crops for 15
    different r.  Unpadded, the resident memory grew 800 -> 2,352 MiB (2-core AMD EPYC, 2026-12-06); the
    bound is generous, a quarter of that growth."""
    path, crops = made
    np.save(tmp_path / "crops.npy", crops)
    code = textwrap.dedent(f"""
        import numpy as np
        from deepyeast.engine.inference import InferenceSettings
        from deepyeast.model import read_bundle

        def rss():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS"))

        crops = np.load({str(tmp_path / "crops.npy")!r})
        rng = np.random.default_rng(0)
        big = crops[rng.integers(0, len(crops), 200)]
        pred = read_bundle({path!r}).predictor(InferenceSettings(batch=100))
        pred.outputs(big[:100])
        pred.outputs(big[:199])
        before = rss()
        for r in rng.permutation(np.arange(1, 100))[:15]:
            pred.outputs(big[:100 + r])
        print(before, rss())
    """)
    env = dict(os.environ, PYTHONPATH=_bundles.REPO)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = map(int, proc.stdout.split())
    assert after - before < 400, (before, after)
