"""The machine's arithmetic limit: the CPU's data-sheet peak from its ISA and clock, the best
measured GEMM rate per precision, and percentages of them that cannot exceed 100%.

Used by bench/bench_engine.py; the arithmetic (:func:`isa_flops_per_cycle`,
:func:`limits`, :func:`percent`) is tested in tests/test_bench_peak.py.
"""

import os
import re
import subprocess
import time

FLAGS_THAT_MATTER = ("avx", "fma", "avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
                     "amx_int8")
"""CPU flags (``/proc/cpuinfo``) that decide the fp32 and bf16 matrix-multiply paths."""

PRECISIONS = ("fp32", "bf16")


# ---------------------------------------------------------------------------- the CPU

def cpu_description(cpuinfo="/proc/cpuinfo"):
    """dict(model, vendor, flags (the ones of FLAGS_THAT_MATTER present), ghz, clock_source, cores).

    The clock is ``lscpu``'s "CPU max MHz" where it gives one (the turbo ceiling), else the
    ``cpu MHz`` of ``/proc/cpuinfo`` (nominal in a VM), else half the BogoMIPS.
    """
    model = vendor = ""
    flags, mhz, bogo = set(), None, None
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and not model:
                    model = value
                elif key == "vendor_id" and not vendor:
                    vendor = value
                elif key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "cpu MHz" and mhz is None:
                    mhz = float(value)
                elif key == "bogomips" and bogo is None:
                    bogo = float(value)
    except OSError:
        pass
    ghz, source = None, "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"^CPU max MHz:\s*([\d.]+)", out, re.M)
        if m and float(m.group(1)) > 0:
            ghz, source = float(m.group(1)) / 1e3, "lscpu CPU max MHz"
    except (OSError, subprocess.SubprocessError):
        pass
    if ghz is None and mhz:
        ghz, source = mhz / 1e3, "/proc/cpuinfo cpu MHz (nominal; turbo may be higher)"
    if ghz is None and bogo:
        ghz, source = bogo / 2e3, "BogoMIPS / 2"
    return dict(model=model or "unknown CPU", vendor=vendor, flags=[f for f in FLAGS_THAT_MATTER if f in flags],
                ghz=ghz, clock_source=source, cores=len(os.sched_getaffinity(0)))


def isa_flops_per_cycle(flags):
    """Upper bound of FLOPs per cycle per core, {"fp32": n, "bf16": n, "basis": {precision: text}}.

    A multiply-add is 2 FLOPs; two FMA units per core at the widest vector the flags allow
    (an upper bound: AMD Zen 4 splits 512-bit work into two 256-bit halves, so it reaches half):

    * fp32: AVX-512 2 x 16 lanes x 2 = 64; AVX2+FMA 2 x 8 x 2 = 32; AVX 16; else 8.
    * bf16: AMX (``amx_bf16``) 1,024 multiply-adds per cycle = 2,048; AVX512-BF16
      (``vdpbf16ps``: 32 pairs, 2 units) 128; without either, bf16 runs through fp32 units.
    """
    flags = set(flags)
    if "avx512f" in flags:
        fp32, basis = 64, "AVX-512 FMA, 2 units x 16 lanes x 2"
    elif "avx2" in flags and "fma" in flags:
        fp32, basis = 32, "AVX2 FMA, 2 units x 8 lanes x 2"
    elif "avx" in flags:
        fp32, basis = 16, "AVX, 8 lanes x 2 (add + mul)"
    else:
        fp32, basis = 8, "SSE, 4 lanes x 2 (add + mul)"
    if "amx_bf16" in flags:
        bf16, bbasis = 2048, "AMX-BF16 tiles, 1,024 multiply-adds"
    elif "avx512_bf16" in flags:
        bf16, bbasis = 128, "AVX512-BF16 dot products, 2 units x 32 pairs x 2"
    else:
        bf16, bbasis = fp32, "no bf16 instructions: fp32 units"
    return {"fp32": fp32, "bf16": bf16, "basis": {"fp32": basis, "bf16": bbasis}}


def isa_peaks(cpu, threads):
    """GFLOP/s per precision of ``threads`` cores at the CPU's clock (None without a clock)."""
    per = isa_flops_per_cycle(cpu["flags"])
    if not cpu.get("ghz"):
        return {p: None for p in PRECISIONS}
    return {p: per[p] * cpu["ghz"] * threads for p in PRECISIONS}


# ---------------------------------------------------------------------------- percentages

def limits(gemm, workloads):
    """The measured limit per precision and what set it.

    ``gemm``: {(precision, path, shape): GFLOP/s}; ``workloads``: {name: (precision, GFLOP/s)}.
    The limit of a precision is its best GEMM rate, unless a workload of that precision ran
    faster: then the GEMMs understated the machine and that workload is the limit.  Returns
    {precision: (GFLOP/s, source text)}.
    """
    out = {}
    for p in PRECISIONS:
        cands = [(v, f"GEMM {path} {shape}") for (q, path, shape), v in gemm.items() if q == p]
        cands += [(v, f"workload '{name}' (faster than every GEMM)") for name, (q, v) in workloads.items() if q == p]
        if cands:
            out[p] = max(cands, key=lambda c: c[0])
    return out


def percent(rate, limit):
    """100 x rate / limit, for a rate that cannot exceed the limit (ValueError otherwise)."""
    if limit is None or limit <= 0:
        return None
    if rate > limit * (1 + 1e-9):
        raise ValueError(f"{rate:.1f} GFLOP/s exceeds the limit {limit:.1f}: the limit is not one")
    return 100.0 * rate / limit


def percent_of_isa(rate, isa_peak):
    """100 x rate / isa_peak, or None where there is no clock or the rate beats it (a turbo clock above
    the one read): a data-sheet peak that a measurement beats is not printed as a percentage."""
    if not isa_peak or rate > isa_peak:
        return None
    return 100.0 * rate / isa_peak


# ---------------------------------------------------------------------------- measuring

def best_seconds(fn, reps=3, warmup_s=0.3):
    """Best wall seconds of ``reps`` calls of ``fn`` after warm-up calls for ``warmup_s`` seconds (at least 1)."""
    t0 = time.perf_counter()
    fn()
    while time.perf_counter() - t0 < warmup_s:
        fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_rates(sizes=(1024, 2048, 4096), reps=3, warmup_s=0.3, precisions=PRECISIONS):
    """GFLOP/s of dense products per precision, path and shape, after warm-up: {(precision, path, shape): GFLOP/s}.

    Paths: ``torch.mm`` (n x n times n x n; MKL for fp32, oneDNN for bf16 on x86),
    ``F.linear`` (the same product as ``x @ w.T``: oneDNN's matmul), and a 1 x 1
    convolution in channels-last (one GEMM of (16 x n/32 x 32) rows through oneDNN's
    convolution: the path of the net's layers, AMX where present).  ``precisions``: which of
    :data:`PRECISIONS` to time.
    """
    import torch
    import torch.nn.functional as F
    out = {}
    with torch.inference_mode():
        for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            if p not in precisions:
                continue
            for n in sizes:
                a = torch.randn(n, n).to(dtype)
                b = torch.randn(n, n).to(dtype)
                flops = 2.0 * n ** 3
                out[(p, "torch.mm", f"{n}^3")] = flops / best_seconds(lambda: torch.mm(a, b), reps, warmup_s) / 1e9
                out[(p, "F.linear", f"{n}^3")] = flops / best_seconds(lambda: F.linear(a, b), reps, warmup_s) / 1e9
                hw = max(n // 32, 1)
                x = torch.randn(16, n, hw, 32).to(dtype).contiguous(memory_format=torch.channels_last)
                w = torch.randn(n, n, 1, 1).to(dtype)
                flops = 2.0 * 16 * hw * 32 * n * n
                out[(p, "oneDNN conv 1x1 NHWC", f"{16 * hw * 32}x{n}x{n}")] = (
                    flops / best_seconds(lambda: F.conv2d(x, w), reps, warmup_s) / 1e9)
    return out


def merge_best(acc, new):
    """acc[k] = max(acc[k], new[k]) for every key (best of interleaved rounds); returns acc."""
    for k, v in new.items():
        acc[k] = max(acc.get(k, v), v)
    return acc


# ---------------------------------------------------------------------------- what a goal asks of the machine

def net_arithmetic(prototxt, phase="TEST"):
    """(FLOPs of one cell's forward pass, FLOPs of one training iteration at the net's batch) of the net
    of ``prototxt``: its Convolution and InnerProduct products (:meth:`deepyeast.engine.Net.flop_counts`;
    an iteration is the forward pass plus the weight and input gradients Caffe computes)."""
    from deepyeast.engine import Net
    net = Net(prototxt, phase=phase)
    counts = net.flop_counts()
    batch = net.layer(next(iter(counts))).top_shapes[0][0]
    return sum(f for f, _, _ in counts.values()) / float(batch), float(sum(sum(v) for v in counts.values()))


def ceiling(limit_gflops, gflop_per_unit):
    """Units per second at 100% of a measured limit: ``limit_gflops`` (GFLOP/s) over the work of one
    unit (GFLOP), e.g. cells/s of a network that did nothing but its products at the GEMM rate."""
    if not limit_gflops or limit_gflops <= 0 or gflop_per_unit <= 0:
        raise ValueError(f"a ceiling needs a positive limit and work per unit, got {limit_gflops}, {gflop_per_unit}")
    return limit_gflops / gflop_per_unit


def reach(goal, ceiling_value, higher_is_better=True):
    """Whether a goal is within a machine's ceiling: "within" or "beyond" (a rate goal is beyond a
    machine whose ceiling is below it; a time goal, ``higher_is_better=False``, one whose ceiling --
    the least time -- is above it)."""
    ok = ceiling_value >= goal if higher_is_better else ceiling_value <= goal
    return "within" if ok else "beyond"


def measured_limit(precision, threads, sizes=(1024, 2048), reps=3):
    """(GFLOP/s, source text) of ``precision`` on ``threads`` threads: the best of :func:`gemm_rates`
    at ``sizes`` (the engine bench's full set adds 4096), torch's thread count restored after."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        rates = gemm_rates(sizes, reps=reps, precisions=(precision,))
    finally:
        torch.set_num_threads(before)
    return limits(rates, {})[precision]
