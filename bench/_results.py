"""Keep bench/RESULTS.md (each benchmark script owns one section, replaced on rerun) and say what was measured:
the machine, the checkout's commit, an older commit's tree to measure against."""

import datetime
import os
import platform
import re
import shutil
import subprocess

from deepyeast.utils.io import atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is rewritten by the script named in it; figures are measured, never typed in.\n"


def machine_description():
    """One line naming the CPU model, core count and memory of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}"


def update_section(title, markdown, path=RESULTS, machine=None):
    """Replace (or append) the ``## title`` section of ``path`` (bench/RESULTS.md) with ``markdown``.

    A line with the date (UTC) and the machine (default: this CPU) is added under the heading.
    """
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = f"## {title}\n\n_Measured {stamp} on {machine or machine_description()}._\n\n{markdown.strip()}\n"
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else HEADER
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: body + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + body
    atomic_write_text(path, text.rstrip("\n") + "\n")


def commit():
    """The checkout's commit (short hash, ``+`` when it has uncommitted changes), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+" if dirty else "")


def export_ref(ref, folder, parts=("deepyeast", "models", "analysis")):
    """The tree of git commit ``ref`` of this repository, exported (``git archive``) under ``folder``:
    (path, full commit id, commit date).  ``parts``: the folders exported (default the package, the nets and
    the step scripts); empty: the whole tree (what ``make`` needs).  Reused when already there."""
    sha, date = subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%H %cs", ref], capture_output=True,
                               text=True, check=True).stdout.split()
    path = os.path.join(folder, f"ref_{sha[:12]}" if parts else f"tree_{sha[:12]}")
    if not os.path.isdir(path) or not all(os.path.isdir(os.path.join(path, d)) for d in parts):
        tmp = path + ".part"
        os.makedirs(tmp, exist_ok=True)
        archive = subprocess.run(["git", "-C", REPO, "archive", sha, *parts], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        if os.path.isdir(path):  # an export of fewer parts by an older bench: this function's own, made again from git
            shutil.rmtree(path)
        os.replace(tmp, path)
    return path, sha, date
