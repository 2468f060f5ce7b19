"""Authentication failures as events (``AuthenticationFailed``), apart from the normal challenge.

RFC 8489 §9.2.4: a request without MESSAGE-INTEGRITY gets 401 with a nonce, which is how every
client starts; a stale nonce gets 438. Neither is a failed login. Credentials that are present
but wrong are, and the core says why, for the log line and the metric.
"""

from __future__ import annotations

from delshare.stun.constants import PROTO_UDP, Attr, Method
from delshare.stun.credentials import rest_password
from delshare.turn.server_events import AuthenticationFailed, Output
from tests.turn.test_server_core import SECRET, T0, USERS, Client, five, make_server


def failures(outputs: list[Output]) -> list[AuthenticationFailed]:
    return [o for o in outputs if isinstance(o, AuthenticationFailed)]


def test_the_first_challenge_and_a_stale_nonce_are_not_failures() -> None:
    server = make_server()
    client = Client(server, five())
    reply = client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, PROTO_UDP))
    assert reply.error is None
    later = T0 + 3600  # the nonce (600 s) is stale by now: 438, then success
    reply = client.request(Method.REFRESH, now=later)
    assert reply.error is not None and reply.error[0] == 438
    assert failures(client.outputs) == []


def test_wrong_password_unknown_user_and_expired_rest_name_are_failures() -> None:
    server = make_server()
    cases = [
        ("alice", "not-" + USERS["alice"], "wrong_password"),
        ("mallory", "whatever", "unknown_user"),
        ("1000:carol", rest_password(SECRET, "1000:carol"), "expired"),
        ("99999999999:carol", "not-the-hmac", "wrong_password"),
    ]
    for port, (user, password, reason) in enumerate(cases, start=1):
        client = Client(server, five(port=port), user=user, password=password)
        reply = client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, PROTO_UDP))
        assert reply.error is not None and reply.error[0] == 401
        found = failures(client.outputs)
        assert [(f.username, f.reason, f.method) for f in found] == [(user, reason, "ALLOCATE")]
        assert found[0].five == client.five
