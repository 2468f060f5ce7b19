"""Sans-IO keep-alive schedule of a client allocation: Refresh, permissions, channels.

Theory of operation. An allocation lives ``lifetime`` seconds from its last Allocate/Refresh
success (RFC 8656 §7.2, §7.3); permissions live 300 s (§9) and channel bindings 600 s (§12)
from their last install. The adapter records what the server granted (``refreshed``,
``permitted``, ``channel_bound``), asks ``due(now)`` what to renew, and sleeps until
``next_deadline()``. Each renewal is scheduled a margin before expiry: one minute, or half the
lifetime when that is shorter, so a short server-imposed lifetime still gets refreshed in time.
"""

from __future__ import annotations

from dataclasses import dataclass

from delshare.stun.attributes import Address
from delshare.stun.constants import CHANNEL_LIFETIME, CHANNEL_MAX, CHANNEL_MIN, PERMISSION_LIFETIME

MARGIN = 60.0  # renew this long before expiry (or at half-life, whichever is sooner)


def renew_after(lifetime: float) -> float:
    """Seconds after a grant at which to renew it."""
    return max(lifetime - MARGIN, lifetime / 2)


@dataclass(frozen=True)
class RenewalsDue:
    """What to renew now."""

    refresh: bool
    permissions: tuple[str, ...]
    channels: tuple[tuple[int, Address], ...]

    def __bool__(self) -> bool:
        return self.refresh or bool(self.permissions) or bool(self.channels)


class AllocationSchedule:
    """Renewal deadlines of one allocation (RFC 8656 §7-§12)."""

    def __init__(
        self, lifetime: float, now: float, permission_lifetime: float = PERMISSION_LIFETIME
    ):
        self.permission_lifetime = permission_lifetime
        self.lifetime = lifetime
        self.expires = now + lifetime
        self.refresh_at = now + renew_after(lifetime)
        self.permissions: dict[str, float] = {}  # ip -> renew at
        self.channels: dict[int, tuple[Address, float]] = {}  # channel -> (peer, renew at)
        self._next_channel = CHANNEL_MIN

    def refreshed(self, lifetime: float, now: float) -> None:
        """A Refresh succeeded with LIFETIME ``lifetime`` (RFC 8656 §7.3)."""
        self.lifetime = lifetime
        self.expires = now + lifetime
        self.refresh_at = now + renew_after(lifetime)

    def permitted(self, ips: list[str], now: float) -> None:
        """CreatePermission succeeded for ``ips`` (RFC 8656 §9.2)."""
        for ip in ips:
            self.permissions[ip] = now + renew_after(self.permission_lifetime)

    def forget_permission(self, ip: str) -> None:
        """Stop renewing the permission for ``ip``."""
        self.permissions.pop(ip, None)

    def channel_for(self, peer: Address) -> int:
        """The channel bound (or to bind) to ``peer`` (RFC 8656 §12)."""
        for channel, (bound, _) in self.channels.items():
            if bound == peer:
                return channel
        if self._next_channel > CHANNEL_MAX:
            raise OverflowError("no free channel numbers")
        channel, self._next_channel = self._next_channel, self._next_channel + 1
        return channel

    def forget_channel(self, channel: int) -> None:
        """Stop renewing ``channel``; it lapses within 600 s (RFC 8656 §12)."""
        self.channels.pop(channel, None)

    def channel_bound(self, channel: int, peer: Address, now: float) -> None:
        """ChannelBind succeeded; it also installs a permission for the peer's IP (§12.2)."""
        self.channels[channel] = (peer, now + renew_after(CHANNEL_LIFETIME))
        self.permitted([peer[0]], now)

    def due(self, now: float) -> RenewalsDue:
        """What must be renewed at ``now``."""
        return RenewalsDue(
            refresh=self.refresh_at <= now,
            permissions=tuple(ip for ip, at in self.permissions.items() if at <= now),
            channels=tuple((ch, peer) for ch, (peer, at) in self.channels.items() if at <= now),
        )

    def next_deadline(self) -> float:
        """The earliest renewal deadline."""
        deadlines = [self.refresh_at, *self.permissions.values()]
        deadlines += [at for _, at in self.channels.values()]
        return min(deadlines)
