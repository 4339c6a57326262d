#!/usr/bin/env python3
"""Build the Docker image and time it: cold, cached, after a source change; its size; the in-image test.

    python bench/bench_docker.py [--base] [--no-test] [--no-write]

Runs `make docker` (the engine it picks: Docker where an engine answers, else podman)
    1. cold: DOCKER_BUILD_FLAGS=--no-cache (every layer rebuilt: Debian and PyPI packages
       downloaded again); with --base, the base images are removed first and made again
       (debootstrap where no registry answers), and that time is reported apart;
    2. cached, nothing changed;
    3. cached, one source file of the checkout changed (only the last layers rebuilt);
then reads the image size and, unless --no-test, times `pytest -m docker tests/test_docker.py`
(the in-image checks on the image just built).  Writes the "Docker image" section of
bench/RESULTS.md, with the machine's load average at the start (the build shares the CPUs
with whatever else runs).  About 10-20 minutes on 2 cores.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench._results import update_section  # noqa: E402

IMAGE = "deepyeast"
CHANGED = os.path.join(REPO, "deepyeast", "_bench_docker_change.py")


def timed(cmd, env=None):
    """Run ``cmd`` in the repository; return (seconds, output); raise with the output's tail on failure."""
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}")
    return seconds, proc.stdout


def engine():
    """docker where a Docker engine answers, else podman (as make docker chooses)."""
    if shutil.which("docker") and subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL).returncode == 0:
        return "docker"
    return "podman"


def fmt(seconds):
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", action="store_true", help="also remove and remake the base images")
    ap.add_argument("--no-test", action="store_true", help="skip timing the in-image test")
    ap.add_argument("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)
    eng = engine()
    load = open("/proc/loadavg").read().split()[:3]
    rows = []
    env = dict(os.environ, IMAGE=IMAGE, DOCKER_ENGINE=eng)
    if args.base:
        for suite in ("bookworm", "bullseye"):
            subprocess.run([eng, "rmi", "-f", f"docker.io/library/debian:{suite}"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        seconds, _ = timed(["make", "--no-print-directory", "docker-base"], env=env)
        rows.append(("base images debian:bookworm + debian:bullseye (`make docker-base`)", seconds))
    seconds, log = timed(["make", "--no-print-directory", "docker", "DOCKER_BUILD_FLAGS=--no-cache"], env=env)
    rows.append(("cold build (`make docker DOCKER_BUILD_FLAGS=--no-cache`)", seconds))
    seconds, _ = timed(["make", "--no-print-directory", "docker"], env=env)
    rows.append(("cached build, nothing changed", seconds))
    try:
        with open(CHANGED, "w") as f:
            f.write(f"# bench/bench_docker.py: a changed source file ({time.time()})\n")
        seconds, _ = timed(["make", "--no-print-directory", "docker"], env=env)
    finally:
        os.remove(CHANGED)
    rows.append(("cached build, one source file changed", seconds))
    timed(["make", "--no-print-directory", "docker"], env=env)  # back to the checkout as it is
    size = int(subprocess.run([eng, "image", "inspect", "--format", "{{.Size}}", IMAGE], text=True,
                              stdout=subprocess.PIPE, check=True).stdout.strip())
    if not args.no_test:
        pytest = os.path.join(REPO, ".venv", "bin", "pytest")
        seconds, out = timed([pytest if os.path.exists(pytest) else "pytest", "-q", "-p", "no:cacheprovider",
                              "-m", "docker", "tests/test_docker.py"], env=dict(os.environ, CI="true"))
        rows.append((f"in-image test (`pytest -m docker tests/test_docker.py`, image cached): "
                     f"{out.strip().splitlines()[-1].strip('= ')}", seconds))
    lines = [f"`python bench/bench_docker.py{' --base' if args.base else ''}` with {eng}; load average at the start "
             f"{' / '.join(load)} (1/5/15 min).", "",
             f"Image `{IMAGE}`: {size / 1e9:.2f} GB ({eng} image inspect).", "",
             "| step | time |", "|---|---:|"]
    lines += [f"| {name} | {fmt(seconds)} |" for name, seconds in rows]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section("Docker image (bench/bench_docker.py)", text)


if __name__ == "__main__":
    main()
