"""Error lines that name the next step (issue 11), for failures too slow to stage end to end."""

from __future__ import annotations

from delshare.app.hints import ALLOW_PEER_HINT, AUTH_HINT, explain, resume_hint
from delshare.errors import PairingError
from delshare.link.race import NoPathError
from delshare.link.records import LinkError
from delshare.transfer.errors import TransferInterruptedError
from delshare.turn.client_errors import AuthenticationError, PeerConnectError


def test_a_receiver_that_times_out_waiting_hears_about_lan_mode() -> None:
    """One side in LAN mode, the other on a rendezvous: the receiver waits 30 s for nobody."""
    line = explain(PairingError("timed out waiting for the peer"), "receive")
    assert "without --rendezvous" in line and "new code" in line


def test_wrapped_turn_failures_keep_their_hint() -> None:
    try:
        try:
            raise AuthenticationError("ALLOCATE", 401, "Unauthenticated")
        except AuthenticationError as exc:
            raise LinkError("TURN server x:3478: ALLOCATE failed: 401 Unauthenticated") from exc
    except LinkError as wrapped:
        assert explain(wrapped, "send").endswith(f"({AUTH_HINT})")
    refused = PeerConnectError("CONNECT", 403, "Forbidden peer address")
    assert ALLOW_PEER_HINT in explain(refused, "receive")
    assert ALLOW_PEER_HINT in explain(NoPathError("x: CONNECT failed: 403 Forbidden"), "send")


def test_interruptions_say_how_to_resume_per_side() -> None:
    lost = TransferInterruptedError("link lost while receiving: reset")
    assert explain(lost, "receive").endswith(resume_hint("receive"))
    assert "ask the sender for a new code" in resume_hint("receive")
    assert "run `delshare send` again" in explain(lost, "send")
