"""This process's memory as Linux reports it (``/proc/self/status``), for the engine's heap policy and the benches."""


def status_mib(field):
    """The memory field ``field`` of /proc/self/status (``RssAnon``, ``VmRSS``, ``VmHWM``, ...) of this process in
    MiB (float), or None where it cannot be read (not Linux, no such field)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None
