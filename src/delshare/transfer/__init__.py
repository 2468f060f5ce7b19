"""Moving files over a link: manifest, sender, receiver (plan, session, install), resume, events."""

from typing import TYPE_CHECKING

from delshare._exports import lazy_exports

if TYPE_CHECKING:
    from delshare.transfer.digest import hash_file
    from delshare.transfer.events import (
        FileReceived,
        FileSent,
        FileStarted,
        OfferArrived,
        ReceiveEvent,
        SendEvent,
    )
    from delshare.transfer.manifest import Manifest, build_manifest
    from delshare.transfer.receiver import ReceiveStats, receive_files
    from delshare.transfer.sender import SendStats, send_files

__all__ = [
    "FileReceived",
    "FileSent",
    "FileStarted",
    "Manifest",
    "OfferArrived",
    "ReceiveEvent",
    "ReceiveStats",
    "SendEvent",
    "SendStats",
    "build_manifest",
    "hash_file",
    "receive_files",
    "send_files",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "hash_file": "delshare.transfer.digest",
        "FileReceived": "delshare.transfer.events",
        "FileSent": "delshare.transfer.events",
        "FileStarted": "delshare.transfer.events",
        "OfferArrived": "delshare.transfer.events",
        "ReceiveEvent": "delshare.transfer.events",
        "SendEvent": "delshare.transfer.events",
        "Manifest": "delshare.transfer.manifest",
        "build_manifest": "delshare.transfer.manifest",
        "ReceiveStats": "delshare.transfer.receiver",
        "receive_files": "delshare.transfer.receiver",
        "SendStats": "delshare.transfer.sender",
        "send_files": "delshare.transfer.sender",
    },
)
