"""The ``delshare`` command line (click); ``main`` is the console-script entry point."""

from typing import TYPE_CHECKING

from delshare._exports import lazy_exports

if TYPE_CHECKING:
    from delshare.cli.main import cli, main

__all__ = [
    "cli",
    "main",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "cli": "delshare.cli.main",
        "main": "delshare.cli.main",
    },
)
