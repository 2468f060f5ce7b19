"""DEL: move files directly between devices, with a TURN TCP relay (RFC 6062) when needed.

The Python API (:mod:`delshare.api`, docs/api.md) is re-exported here and imported on first
use, so ``import delshare`` stays cheap for the command line.
"""

from typing import TYPE_CHECKING

from delshare._exports import lazy_exports

if TYPE_CHECKING:
    from delshare.api import FileResult, TransferResult, TurnServer, receive, send

__version__ = "0.1.0"

_API = "delshare.api"
__all__ = ["FileResult", "TransferResult", "TurnServer", "__version__", "receive", "send"]
__getattr__ = lazy_exports(__name__, {name: _API for name in __all__ if name != "__version__"})
