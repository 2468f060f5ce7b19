"""Asyncio adapters: the TURN server's listeners and relays, the TURN client, the splice bridge."""

from typing import TYPE_CHECKING

from delshare._exports import lazy_exports

if TYPE_CHECKING:
    from delshare.aio.client import TurnClient, connect_turn, stun_binding
    from delshare.aio.client_allocation import RelayedStream, TcpAllocation, UdpAllocation
    from delshare.aio.pipe import BridgeStats, bridge
    from delshare.aio.server import RelayConfig, RunningRelay, start_relay

__all__ = [
    "BridgeStats",
    "RelayConfig",
    "RelayedStream",
    "RunningRelay",
    "TcpAllocation",
    "TurnClient",
    "UdpAllocation",
    "bridge",
    "connect_turn",
    "start_relay",
    "stun_binding",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "TurnClient": "delshare.aio.client",
        "connect_turn": "delshare.aio.client",
        "stun_binding": "delshare.aio.client",
        "RelayedStream": "delshare.aio.client_allocation",
        "TcpAllocation": "delshare.aio.client_allocation",
        "UdpAllocation": "delshare.aio.client_allocation",
        "BridgeStats": "delshare.aio.pipe",
        "bridge": "delshare.aio.pipe",
        "RelayConfig": "delshare.aio.server",
        "RunningRelay": "delshare.aio.server",
        "start_relay": "delshare.aio.server",
    },
)
