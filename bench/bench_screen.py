#!/usr/bin/env python3
"""A whole screen from micrograph to call in one process: where the time goes, and cells per second.

Renders (or reuses) a synthetic screen and keeps the whole fields of its first N proteins
(main set), then, one micrograph at a time as a worker of a chunked run does it:

1. reads the micrograph (``read_row_micrograph``);
2. segments the marker, stage by stage (``deepyeast.data.segment_cells``: background correction,
   threshold and hole filling, watershed split with its distance transform and h-maxima,
   size and border filters);
3. cuts the 64 x 64 crops (``cells_and_crops`` with the mask);
4. runs the DeepYeast deploy net (BatchNorm folded; ``deepyeast.engine.fold.deploy_net``) on
   the crops in batches, bf16 and fp32 (random weights: the time does not depend on them);
5. makes the calls: each cell's class, and each protein's (Dirichlet MAP, as classify).

Baseline in the same run: the segmentation kernels this project used before issue 24
(``scipy.ndimage`` Gaussians, grey opening and distance transform, ``skimage`` h-maxima over
the whole image), on the same fields, with their masks compared to ours.

CPU seconds are this process's; torch and OpenCV run one thread each by default (``--threads``),
as one worker process per core does, so that CPU seconds are work (a loaded machine inflates the
wall time of threads that wait for each other, and their spinning inflates CPU time).  The goal
is 280 cells/s from micrograph to call on 2 cores; "projected on 2 cores" divides the cells by
the CPU seconds of all steps and multiplies by 2, i.e. assumes the micrographs are shared by two
single-threaded worker processes that each keep a core busy (the Dask run's scaling with 1 and 2 workers is measured
by the chunked classify's own bench).  Writes the "Whole screen, micrograph to call" section
of bench/RESULTS.md.

    python bench/bench_screen.py [--quick] [--work /tmp/bench_screen] [--proteins 40] [--no-write]
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from deepyeast.data import segment_cells as seg  # noqa: E402


# ---------------------------------------------------------------------------- the previous kernels (baseline)

def reference_segment(marker, p):
    """segment_marker with the kernels used before issue 24 (scipy.ndimage, skimage h_maxima on the whole image)."""
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed
    img = ndi.gaussian_filter(np.asarray(marker, np.float32), p.smooth_sigma)
    size = 2 * int(p.background_radius) + 1
    eroded = ndi.grey_erosion(img, size=(size, size), mode="reflect")
    smooth = p.background_radius / 4.0
    pad = int(p.background_radius) + int(np.ceil(4 * smooth))
    ext = np.pad(eroded, pad, mode="reflect", reflect_type="odd")
    bg = ndi.gaussian_filter(ndi.grey_dilation(ext, size=(size, size), mode="nearest"), smooth, mode="nearest")
    corrected = img - np.minimum(bg[pad:pad + img.shape[0], pad:pad + img.shape[1]], img)
    fg, _ = seg.foreground(corrected, p)
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    dist = ndi.gaussian_filter(ndi.distance_transform_edt(fg).astype(np.float32), 1.0)
    seeds, _ = ndi.label(h_maxima(dist, p.split_depth))
    labels = watershed(-dist, seeds, mask=fg)
    comp, n = ndi.label(fg & (labels == 0))
    if n:
        labels[comp > 0] = comp[comp > 0] + labels.max()
    return seg.filter_cells(labels.astype(np.int32), p.min_area, p.max_area, p.border_margin)[0]


# ---------------------------------------------------------------------------- timing

class Clock:
    """Accumulates wall and CPU seconds per named stage."""

    def __init__(self):
        self.wall, self.cpu = {}, {}
        self._t = None

    def start(self):
        self._t = (time.perf_counter(), time.process_time())

    def lap(self, name):
        w, c = time.perf_counter(), time.process_time()
        self.wall[name] = self.wall.get(name, 0.0) + w - self._t[0]
        self.cpu[name] = self.cpu.get(name, 0.0) + c - self._t[1]
        self._t = (w, c)


def unfused_relu(net):
    """``net`` with each Convolution + in-place ReLU step run as before issue 24: ``relu_(conv2d(...))``."""
    import torch
    for step in net._steps:
        if step.fused and step.layers[0].caffe_type == "Convolution":
            step.run = (lambda bottoms, layer=step.layers[0]: [torch.relu_(layer.forward(bottoms)[0])])
    return net


def segment_staged(marker, p, clock):
    """segment_marker, stage by stage on ``clock``; returns the mask."""
    corrected = seg.correct_background(marker, p.background_radius, p.smooth_sigma)
    clock.lap("segmentation: background correction")
    fg, _ = seg.foreground(corrected, p)
    clock.lap("segmentation: threshold, holes")
    labels = seg.split_touching(fg, p.split_depth)
    clock.lap("segmentation: watershed split")
    mask, _ = seg.filter_cells(labels, p.min_area, p.max_area, p.border_margin)
    clock.lap("segmentation: filters")
    return mask


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "deepyeast_bench_screen"),
                    help="folder of the synthetic screen (made once, reused)")
    ap.add_argument("--size", default="small", help="synthetic screen size (default %(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--proteins", type=int, default=40, help="proteins whose fields are run (default %(default)s)")
    ap.add_argument("--batch", type=int, default=100, help="network batch (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and OpenCV threads: 1 (default) is one worker process per core, as a chunked run")
    ap.add_argument("--quick", action="store_true", help="the fields of 12 proteins")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)
    if args.quick:
        args.proteins = 12

    screen = os.path.join(args.work, f"{args.size}_seed{args.seed}_p{args.proteins}")
    fields = os.path.join(screen, "main", "fields")
    if not os.path.exists(os.path.join(fields, "images.csv")):
        from deepyeast.data.make_synthetic import make_screen
        # first: its worker pool forks, safe only before this process runs threads (OpenCV, torch)
        make_screen(screen, args.size, seed=args.seed, jobs=2, save_fields=args.proteins, progress=False)

    import torch
    from bench_engine import DEPLOY, random_deploy_weights
    from deepyeast.analysis.protein_level import dirichlet_map
    from deepyeast.data.screen_tables import read_images_table
    from deepyeast.engine.fold import deploy_net
    from deepyeast.data.crop_png import quiet_cv2
    from deepyeast.data.micrographs import read_row_micrograph
    torch.set_num_threads(args.threads)
    quiet_cv2().setNumThreads(args.threads)
    rows = read_images_table(os.path.join(fields, "images.csv"), require=("protein",))
    p = seg.SegmentParams()
    first = read_row_micrograph(rows[0])[0]
    seg.segment_marker(first, p)  # warm-up: imports, OpenCV's first calls
    reference_segment(first, p)
    load0 = os.getloadavg()[0]
    weights = random_deploy_weights()
    nets = {prec: deploy_net(DEPLOY, weights, precision=prec) for prec in ("bf16", "fp32")}
    base_nets = {prec: unfused_relu(deploy_net(DEPLOY, weights, precision=prec)) for prec in ("bf16", "fp32")}
    with torch.inference_mode():  # warm up the nets
        for net in list(nets.values()) + list(base_nets.values()):
            net(data=torch.zeros(args.batch, 2, 64, 64))

    # steps 1-3, one micrograph at a time; the baseline segmentation on the same marker
    ours, ref = Clock(), Clock()
    crops, proteins, n_same, shape = [], [], 0, None
    for rec in rows:
        ours.start()
        micro = read_row_micrograph(rec)
        shape = micro.shape[1:]
        ours.lap("read micrograph")
        mask = segment_staged(micro[0], p, ours)
        _, cells, cr = seg.cells_and_crops(micro, mask)
        ours.lap("crops")
        crops.append(cr)
        proteins += [rec["protein"]] * len(cr)
        ref.start()
        ref_mask = reference_segment(micro[0], p)
        ref.lap("segmentation, previous kernels (scipy.ndimage, skimage)")
        n_same += bool(np.array_equal(ref_mask, mask))
    crops = np.concatenate(crops)
    x = crops.astype(np.float32) - 128.0  # a mean image would be subtracted here; the time is the same
    n_cells, n_img = len(crops), len(rows)

    # steps 4-5 per precision; the baseline (Convolution then a separate in-place ReLU, as before
    # issue 24) runs the same batches interleaved with ours
    calls, unfused_same = {}, True
    for prec, net in nets.items():
        probs, base_probs = [], []
        with torch.inference_mode():
            for s in range(0, n_cells, args.batch):
                batch = torch.from_numpy(x[s:s + args.batch])
                ours.start()
                probs.append(net(data=batch)["prob"].float().numpy())
                ours.lap(f"network {prec}")
                ref.start()
                base_probs.append(base_nets[prec](data=batch)["prob"].float().numpy())
                ref.lap(f"network {prec}, Convolution then a separate ReLU")
        probs = np.concatenate(probs)
        unfused_same &= bool(np.array_equal(probs, np.concatenate(base_probs)))
        ours.start()
        cell_calls = probs.argmax(1)
        ids, _, _, theta = dirichlet_map(probs, np.asarray(proteins, object))
        calls[prec] = (cell_calls, theta.argmax(1))
        ours.lap(f"calls ({prec} probabilities)")
    load1 = os.getloadavg()[0]

    # ------------------------------------------------------------------ table
    seg_stages = [k for k in ours.cpu if k.startswith("segmentation")]
    common = ["read micrograph"] + seg_stages + ["crops"]
    lines = [f"`python bench/bench_screen.py{' --quick' if args.quick else ''} --proteins {args.proteins}`: the "
             f"fields of the first {args.proteins} main proteins of a synthetic `{args.size}` screen (seed "
             f"{args.seed}): {n_img} micrographs of {shape[1]} x {shape[0]} px, {n_cells} cells found "
             f"({n_cells / max(n_img, 1):.1f} per micrograph); one process, torch {torch.__version__}, "
             f"{args.threads} thread(s) for torch and OpenCV; network batch {args.batch}.", "",
             "| step | CPU s | wall s | CPU ms per micrograph | CPU ms per cell |", "|---|---:|---:|---:|---:|"]
    for name in common + [k for k in ours.cpu if k not in common]:
        lines.append(f"| {name} | {ours.cpu[name]:.2f} | {ours.wall[name]:.2f} | {1e3 * ours.cpu[name] / n_img:.1f} "
                     f"| {1e3 * ours.cpu[name] / n_cells:.2f} |")
    for name in ref.cpu:
        lines.append(f"| baseline: {name} | {ref.cpu[name]:.2f} | {ref.wall[name]:.2f} | "
                     f"{1e3 * ref.cpu[name] / n_img:.1f} | {1e3 * ref.cpu[name] / n_cells:.2f} |")
    seg_cpu = sum(ours.cpu[k] for k in seg_stages)
    ref_cpu = sum(v for k, v in ref.cpu.items() if k.startswith("segmentation"))
    base_name = "network {}, Convolution then a separate ReLU"
    net_ratio = "; ".join(f"{prec} {ref.cpu[base_name.format(prec)] / ours.cpu[f'network {prec}']:.2f}x"
                          for prec in nets)
    lines += ["", f"Network: Convolution + ReLU as one oneDNN call (ReLU its post-op) against a separate in-place "
              f"ReLU, same batches interleaved: {net_ratio} less CPU; probabilities "
              f"{'identical' if unfused_same else 'DIFFERENT'}."]
    lines += ["", f"Segmentation: {ref_cpu / seg_cpu:.2f}x less CPU than the previous kernels in this run "
              f"({1e3 * seg_cpu / n_img:.1f} against {1e3 * ref_cpu / n_img:.1f} ms per micrograph); masks equal "
              f"to the previous kernels' on {n_same} of {n_img} micrographs (the Gaussians now run in OpenCV: float32 "
              "rounding can move a pixel at the threshold; bench/bench_segment.py scores the masks)."]
    summary = []
    for prec in ("bf16", "fp32"):
        names = common + [f"network {prec}", f"calls ({prec} probabilities)"]
        cpu = sum(ours.cpu[k] for k in names)
        wall = sum(ours.wall[k] for k in names)
        summary.append(f"{prec}: {n_cells / wall:.0f} cells/s wall in this process, {n_cells / cpu:.0f} cells per "
                       f"CPU-second, projected on 2 cores {2 * n_cells / cpu:.0f} cells/s (goal >= 280: "
                       f"{'met' if 2 * n_cells / cpu >= 280 else 'NOT met'}); network "
                       f"{100 * ours.cpu[f'network {prec}'] / cpu:.0f}% of the CPU, segmentation "
                       f"{100 * seg_cpu / cpu:.0f}%")
    lines += ["", "Micrograph to call: " + "; ".join(summary) + "."]
    changed = int(np.sum(calls["bf16"][0] != calls["fp32"][0]))
    lines.append(f"bf16 against fp32 (random weights, so near-ties are common): {changed} of {n_cells} cell calls "
                 "differ.")
    if max(load0, load1) > (os.cpu_count() or 1) * 1.2:
        lines.append(f"- the machine was loaded by other work (1-minute load average {load0:.1f} at the start, "
                     f"{load1:.1f} at the end, on {os.cpu_count()} cores): wall times are inflated; CPU seconds less "
                     "so, but they share caches and memory bandwidth; rerun on an idle machine")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        from _results import update_section
        update_section("Whole screen, micrograph to call (bench/bench_screen.py)", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
