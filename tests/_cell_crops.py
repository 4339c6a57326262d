"""Small synthetic cell crops with class-dependent protein patterns, for the feature/forest tests.

A crop is uint8 2 x 64 x 64: channel 0 (marker) a bright ellipse (the cell) on a
dim noisy background, channel 1 (protein) a pattern chosen by the class:
0 diffuse fill, 1 ring at the cell edge, 2 a few bright dots, 3 one central blob.
"""

import os

import numpy as np

from deepyeast.data.crop_png import encode_crop
from deepyeast.constants import IMAGE_SIZE

YY, XX = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE].astype(float)


def cell_crop(rng, label, n_patterns=4):
    cy, cx = 31.5 + rng.normal(0, 1.5, 2)
    a, b = rng.uniform(11, 17, 2)
    th = rng.uniform(0, np.pi)
    u = (YY - cy) * np.cos(th) + (XX - cx) * np.sin(th)
    v = -(YY - cy) * np.sin(th) + (XX - cx) * np.cos(th)
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    cell = r < 1
    marker = 15 + 110 * cell * rng.uniform(0.7, 1.3) + rng.normal(0, 6, cell.shape)
    kind = label % n_patterns
    level = rng.uniform(60, 160)
    if kind == 0:
        protein = level * cell
    elif kind == 1:
        protein = level * 1.5 * ((r > 0.75) & (r < 1.0))
    elif kind == 2:
        protein = np.zeros(cell.shape)
        for _ in range(rng.integers(3, 7)):
            rr, ang = rng.uniform(0, 0.8), rng.uniform(0, 2 * np.pi)
            py, px = cy + rr * a * np.cos(ang), cx + rr * b * np.sin(ang)
            protein += level * 2 * np.exp(-((YY - py) ** 2 + (XX - px) ** 2) / 2.0)
    else:
        protein = level * 1.5 * (r < 0.4)
    protein = protein + 8 + rng.normal(0, 5, cell.shape)
    return np.clip(np.stack([marker, protein]), 0, 255).astype(np.uint8)


def write_archive(root, counts, n_classes=4, seed=0, list_prefix="HOwt_transfer"):
    """Write crops under ``root/plateNN`` and list files ``{list_prefix}_{split}.txt``.

    counts: dict split -> cells per class.  Returns dict split -> [(relpath, label)].
    """
    rng = np.random.default_rng(seed)
    out = {}
    k = 0
    for split, per_class in counts.items():
        entries = []
        for label in range(n_classes):
            for i in range(per_class):
                plate = f"plate{1 + label:02d}"
                rel = f"{plate}/{900 + k // 5}-{i}-{k}-0.png"
                os.makedirs(os.path.join(root, plate), exist_ok=True)
                with open(os.path.join(root, rel), "wb") as f:
                    f.write(encode_crop(cell_crop(rng, label)))
                entries.append((rel, label))
                k += 1
        with open(os.path.join(root, f"{list_prefix}_{split}.txt"), "w") as f:
            f.writelines(f"{rel} {lab}\n" for rel, lab in entries)
        out[split] = entries
    return out
