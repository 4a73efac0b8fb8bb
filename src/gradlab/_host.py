"""What the host machine can still give, read once here for the CLI's and the optimizer
benchmark's memory checks."""
from __future__ import annotations

import os


def available_memory(physical_fallback=True):
    """Bytes the kernel says can be allocated without swapping (Linux's MemAvailable).

    Where /proc/meminfo does not say (another OS, a restricted container), the machine's
    physical memory with ``physical_fallback``, else None (the caller skips its check).
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if not physical_fallback:
        return None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
