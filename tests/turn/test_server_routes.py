"""``TurnServer.channel_route`` / ``peer_route``: the routes an adapter may cache for ChannelData
(RFC 8656 §12.5), with the explicit clock: valid until the first of channel, permission and
allocation expiry; none without a channel, and none once the allocation is gone."""

from __future__ import annotations

from delshare.stun.constants import PERMISSION_LIFETIME, Attr, Method
from tests.turn.test_server_core import PEER, T0, allocated


def test_routes_hold_until_the_permission_expires() -> None:
    client = allocated()
    server = client.server
    assert server.channel_route(client.five, 0x4001, T0) is None  # no channel yet
    client.request(
        Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001), (Attr.XOR_PEER_ADDRESS, PEER)
    )
    alloc_id = next(iter(server.allocations.values())).id
    until = T0 + PERMISSION_LIFETIME  # the permission ends before the channel (RFC 8656 §12)
    assert server.channel_route(client.five, 0x4001, T0) == (alloc_id, PEER, until)
    assert server.channel_route(client.five, 0x4002, T0) is None
    assert server.peer_route(alloc_id, PEER, T0) == (client.five, 0x4001, until)
    assert server.peer_route(alloc_id, ("127.0.0.1", 5999), T0) is None  # no channel: indication
    assert server.channel_route(client.five, 0x4001, until) is None
    assert server.peer_route(alloc_id, PEER, until) is None


def test_no_route_after_the_allocation_is_deleted() -> None:
    client = allocated()
    server = client.server
    client.request(
        Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001), (Attr.XOR_PEER_ADDRESS, PEER)
    )
    alloc_id = next(iter(server.allocations.values())).id
    client.request(Method.REFRESH, (Attr.LIFETIME, 0))
    assert server.channel_route(client.five, 0x4001, T0) is None
    assert server.peer_route(alloc_id, PEER, T0) is None
