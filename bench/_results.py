"""Keep bench/RESULTS.md: each benchmark script owns one section, replaced on rerun."""

import datetime
import os
import platform
import re

from deepyeast.utils.io import atomic_write_text

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
