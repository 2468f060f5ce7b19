"""The send/receive orchestration behind ``delshare send`` and ``delshare receive``.

Pair through the rendezvous (:mod:`delshare.pairing`), gather and exchange candidates, race the
paths (:mod:`delshare.link.race`), then move the files (:mod:`delshare.transfer`), reporting
:mod:`delshare.app.events` to whatever user interface is attached.
"""

from typing import TYPE_CHECKING

from delshare._exports import lazy_exports

if TYPE_CHECKING:
    from delshare.app.common import SessionOptions
    from delshare.app.demo import run_demo
    from delshare.app.manual import run_listen, run_send_to
    from delshare.app.receive import ReceiveOptions, run_receive
    from delshare.app.send import run_send

__all__ = [
    "ReceiveOptions",
    "SessionOptions",
    "run_demo",
    "run_listen",
    "run_receive",
    "run_send",
    "run_send_to",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "SessionOptions": "delshare.app.common",
        "run_demo": "delshare.app.demo",
        "run_listen": "delshare.app.manual",
        "run_send_to": "delshare.app.manual",
        "ReceiveOptions": "delshare.app.receive",
        "run_receive": "delshare.app.receive",
        "run_send": "delshare.app.send",
    },
)
