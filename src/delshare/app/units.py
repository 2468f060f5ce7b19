"""Sizes and rates for people: binary units with sensible precision."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(n: float) -> str:
    """Binary units with sensible precision: ``1023 B``, ``1.5 KiB``, ``64 MiB``, ``1.2 GiB``."""
    value, unit = float(n), "B"
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            break
        value /= 1024
    if unit == "B":
        return f"{value:.0f} B"
    return f"{value:.1f} {unit}" if value < 9.95 else f"{value:.0f} {unit}"
