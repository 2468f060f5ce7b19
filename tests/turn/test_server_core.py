"""The sans-IO TURN server core in memory, with an explicit clock (RFC 8489, RFC 8656).

``Client`` plays a long-term-credential client against ``TurnServer``: it signs requests, follows
the 401 challenge once, and answers the core's ``OpenRelay`` commands the way the adapter would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delshare.stun import attributes as at
from delshare.stun.constants import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    PASSWORD_ALGORITHM_MD5,
    PASSWORD_ALGORITHM_SHA256,
    PROTO_TCP,
    PROTO_UDP,
    Attr,
    MessageClass,
    Method,
)
from delshare.stun.credentials import long_term_key, rest_password, userhash
from delshare.stun.framing import ChannelData, decode_channel_data
from delshare.stun.message import Message, decode_message
from delshare.turn.auth import AuthConfig
from delshare.turn.server import TurnServer
from delshare.turn.server_config import ServerConfig
from delshare.turn.server_events import (
    TCP,
    TLS,
    UDP,
    AllocationDeleted,
    BindDataConnection,
    CloseRelay,
    FiveTuple,
    OpenRelay,
    Output,
    SendToClient,
    SendToPeer,
)

REALM = "test.realm"
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
SECRET = "rest-secret"
SERVER = ("192.0.2.1", 3478)
T0 = 1_800_000_000.0  # wall-clock seconds (REST usernames carry Unix times)


def make_server(**overrides: object) -> TurnServer:
    auth = AuthConfig(REALM, USERS, SECRET, nonce_lifetime=600)
    options: dict[str, object] = {"allow_peers": ("127.0.0.0/8", "::1/128", "198.51.100.0/24")}
    options.update(overrides)
    return TurnServer(ServerConfig(auth=auth, **options), nonce_key=b"n" * 32)  # type: ignore[arg-type]


def five(transport: str = UDP, port: int = 40000, host: str = "203.0.113.5") -> FiveTuple:
    return FiveTuple(transport, (host, port), SERVER)


class Client:
    """A TURN client core stand-in: builds, signs and sends requests; reads the answers."""

    def __init__(
        self, server: TurnServer, five_tuple: FiveTuple, user: str = "alice", password: str = ""
    ) -> None:
        self.server = server
        self.five = five_tuple
        self.user = user
        self.password = password or USERS.get(user, "")
        self.nonce: str | None = None
        self.outputs: list[Output] = []
        self.relay_port = 49152

    @property
    def key(self) -> bytes:
        return long_term_key(self.user, REALM, self.password)

    def build(self, method: int, attrs: list[tuple[int, object]], *, auth: bool = True) -> Message:
        msg = Message(method, MessageClass.REQUEST)
        for kind, value in attrs:
            msg.add(kind, value)
        if auth and self.nonce is not None:
            msg.add(at.USERNAME, self.user).add(at.REALM, REALM).add(at.NONCE, self.nonce)
        return msg

    def send_raw(self, data: bytes, now: float = T0) -> list[Output]:
        self.server.receive(self.five, data, now)
        return self.pump(now)

    def pump(self, now: float = T0) -> list[Output]:
        """Collect outputs, answering OpenRelay like an adapter that always finds a port."""
        out: list[Output] = []
        while batch := self.server.next_outputs():
            for item in batch:
                out.append(item)
                if isinstance(item, OpenRelay):
                    self.relay_port += 2
                    host = "::1" if item.family == 6 else "127.0.0.1"
                    bound = item.reserved or (host, self.relay_port)
                    reserve = (bound[0], bound[1] + 1) if item.reserve_next else None
                    self.server.relay_opened(item.alloc_id, bound, now, reserve)
        self.outputs += out
        return out

    def responses(self, out: list[Output]) -> list[Message]:
        found = []
        for o in out:
            if isinstance(o, SendToClient) and o.five == self.five and o.data[0] < 0x40:
                found.append(decode_message(o.data))
            elif isinstance(o, BindDataConnection) and o.five == self.five:
                found.append(decode_message(o.response))  # RFC 6062 §5.4 success response
        return found

    def request(
        self,
        method: int,
        *attrs: tuple[int, object],
        now: float = T0,
        auth: bool = True,
        key: bytes | None = None,
    ) -> Message:
        """Send a request; on a first 401 with a nonce, learn it and retry once."""
        for _ in range(2):
            msg = self.build(method, list(attrs), auth=auth)
            signing = key or self.key
            data = msg.encode(signing if auth and self.nonce else None, fingerprint=True)
            answers = [r for r in self.responses(self.send_raw(data, now)) if r.cls != 1]
            answers = [r for r in answers if r.transaction_id == msg.transaction_id]
            assert len(answers) <= 1
            if not answers:
                return Message(method, MessageClass.INDICATION)  # no answer (deferred)
            response = answers[0]
            if auth and self.nonce is None and response.error and response.error[0] == 401:
                self.nonce = response.get(at.NONCE)
                continue
            return response
        return response

    def allocate(self, *attrs: tuple[int, object], now: float = T0) -> Message:
        transport = PROTO_TCP if self.five.stream else PROTO_UDP
        extra = list(attrs) or [(Attr.REQUESTED_TRANSPORT, transport)]
        return self.request(Method.ALLOCATE, *extra, now=now)


def code(response: Message) -> int | None:
    return response.error[0] if response.error else None


def assert_signed(response: Message, key: bytes) -> None:
    assert response.has_integrity and response.verify_integrity(key)


# -- STUN Binding and authentication (RFC 8489 §9.2) ---------------------------------------------


def test_binding_needs_no_auth_and_reflects_the_client() -> None:
    client = Client(make_server(), five())
    response = client.request(Method.BINDING, auth=False)
    assert response.cls == MessageClass.SUCCESS
    assert response.get(at.XOR_MAPPED_ADDRESS) == client.five.client


def test_401_challenge_has_realm_nonce_and_password_algorithms() -> None:
    client = Client(make_server(), five())
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST).add(at.REQUESTED_TRANSPORT, PROTO_UDP)
    (response,) = client.responses(client.send_raw(msg.encode()))
    assert code(response) == 401
    assert response.get(at.REALM) == REALM
    nonce = response.get(at.NONCE)
    assert nonce is not None and nonce.startswith("obMatJos2")
    algorithms = response.get(at.PASSWORD_ALGORITHMS)
    assert algorithms is not None and (PASSWORD_ALGORITHM_SHA256, b"") in algorithms
    assert not response.has_integrity


def test_wrong_password_gets_401_again() -> None:
    client = Client(make_server(), five(), password="not-it")
    assert code(client.allocate()) == 401


def test_unknown_user_gets_401() -> None:
    client = Client(make_server(), five(), user="mallory", password="x")
    assert code(client.allocate()) == 401


def test_missing_realm_with_integrity_is_400() -> None:
    client = Client(make_server(), five())
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST).add(at.REQUESTED_TRANSPORT, PROTO_UDP)
    msg.add(at.USERNAME, "alice")
    (response,) = client.responses(client.send_raw(msg.encode(client.key)))
    assert code(response) == 400


def test_stale_nonce_gets_438_with_a_fresh_nonce_then_succeeds() -> None:
    client = Client(make_server(), five())
    assert code(client.request(Method.BINDING, auth=False)) is None
    client.allocate()  # learns a nonce at T0
    old = client.nonce
    later = T0 + 601
    response = client.request(Method.REFRESH, now=later)
    assert code(response) == 438
    fresh = response.get(at.NONCE)
    assert fresh and fresh != old
    client.nonce = fresh
    assert code(client.request(Method.REFRESH, now=later)) is None


def test_forged_nonce_is_treated_as_stale() -> None:
    client = Client(make_server(), five())
    client.allocate()
    assert client.nonce is not None
    client.nonce = client.nonce[:-1] + ("0" if client.nonce[-1] != "0" else "1")
    assert code(client.request(Method.REFRESH)) == 438


def test_responses_are_signed_with_the_request_key() -> None:
    client = Client(make_server(), five())
    response = client.allocate()
    assert response.cls == MessageClass.SUCCESS
    assert_signed(response, client.key)
    assert not response.uses_sha256_integrity
    assert response.has(at.FINGERPRINT)


def test_sha256_password_algorithm_and_integrity_are_negotiated() -> None:
    """RFC 8489 §9.2.4: PASSWORD-ALGORITHMS echoed + PASSWORD-ALGORITHM SHA-256."""
    client = Client(make_server(), five())
    client.request(Method.BINDING, auth=False)
    client.allocate()  # learn the nonce
    server_algorithms = ((PASSWORD_ALGORITHM_SHA256, b""), (PASSWORD_ALGORITHM_MD5, b""))
    key = long_term_key("alice", REALM, USERS["alice"], PASSWORD_ALGORITHM_SHA256)
    msg = client.build(
        Method.REFRESH,
        [
            (Attr.PASSWORD_ALGORITHMS, server_algorithms),
            (Attr.PASSWORD_ALGORITHM, (PASSWORD_ALGORITHM_SHA256, b"")),
        ],
    )
    (response,) = client.responses(client.send_raw(msg.encode(key, sha256=True)))
    assert response.cls == MessageClass.SUCCESS
    assert response.uses_sha256_integrity
    assert_signed(response, key)


def test_password_algorithm_without_the_list_is_400() -> None:
    client = Client(make_server(), five())
    client.allocate()
    key = long_term_key("alice", REALM, USERS["alice"], PASSWORD_ALGORITHM_SHA256)
    response = client.request(
        Method.REFRESH, (Attr.PASSWORD_ALGORITHM, (PASSWORD_ALGORITHM_SHA256, b"")), key=key
    )
    assert code(response) == 400


def test_userhash_instead_of_username() -> None:
    client = Client(make_server(), five())
    client.allocate()
    msg = Message(Method.REFRESH, MessageClass.REQUEST)
    msg.add(at.USERHASH, userhash("alice", REALM)).add(at.REALM, REALM)
    msg.add(at.NONCE, client.nonce or "")
    (response,) = client.responses(client.send_raw(msg.encode(client.key)))
    assert response.cls == MessageClass.SUCCESS


def test_rest_credentials_valid_and_expired() -> None:
    server = make_server()
    good_user = f"{int(T0) + 3600}:carol"
    good = Client(server, five(port=1), user=good_user, password=rest_password(SECRET, good_user))
    assert good.allocate().cls == MessageClass.SUCCESS
    old_user = f"{int(T0) - 1}:carol"
    old = Client(server, five(port=2), user=old_user, password=rest_password(SECRET, old_user))
    assert code(old.allocate()) == 401


def test_rest_password_is_hmac_sha1_of_the_username() -> None:
    mac = hmac.new(SECRET.encode(), b"123:x", hashlib.sha1).digest()
    assert rest_password(SECRET, "123:x") == base64.b64encode(mac).decode()


def test_unknown_comprehension_required_attribute_is_420_signed() -> None:
    client = Client(make_server(), five())
    response = client.allocate((Attr.REQUESTED_TRANSPORT, PROTO_UDP), (0x0033, b"\x00\x00\x00\x01"))
    assert code(response) == 420
    assert response.get(at.UNKNOWN_ATTRIBUTES) == (0x0033,)
    assert_signed(response, client.key)


def test_unknown_method_is_400() -> None:
    client = Client(make_server(), five())
    assert code(client.request(0x0FF, auth=False)) == 400


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    server = make_server()
    server.receive(five(), data, T0)
    server.receive(five(TCP), b"\x00\x01\x00\x00\x21\x12\xa4\x42" + data, T0)
    for item in server.next_outputs():
        if isinstance(item, SendToClient):
            decode_message(item.data)


# -- Allocate, Refresh, lifetimes (RFC 8656 §7) -------------------------------------------------


def test_allocate_success_has_relayed_mapped_and_lifetime() -> None:
    client = Client(make_server(), five())
    response = client.allocate((Attr.REQUESTED_TRANSPORT, PROTO_UDP), (Attr.LIFETIME, 30))
    relayed = response.get(at.XOR_RELAYED_ADDRESS)
    assert relayed is not None and relayed[1] == client.relay_port
    assert response.get(at.XOR_MAPPED_ADDRESS) == client.five.client
    assert response.get(at.LIFETIME) == 600  # below the default → default


def test_external_ip_is_advertised() -> None:
    client = Client(make_server(external_ips=(("198.51.100.7", None),)), five())
    relayed = client.allocate().get(at.XOR_RELAYED_ADDRESS)
    assert relayed == ("198.51.100.7", client.relay_port)


def test_external_ip_with_private_maps_only_its_relay_address() -> None:
    """coturn's PUBLIC/PRIVATE: advertised for relays bound on PRIVATE, others as bound."""
    mapped = Client(make_server(external_ips=(("198.51.100.7", "127.0.0.1"),)), five())
    other = Client(make_server(external_ips=(("198.51.100.7", "10.9.9.9"),)), five())
    assert mapped.allocate().get(at.XOR_RELAYED_ADDRESS) == (
        "198.51.100.7",
        mapped.relay_port,
    )
    assert other.allocate().get(at.XOR_RELAYED_ADDRESS) == ("127.0.0.1", other.relay_port)


def test_external_ip_of_the_other_family_is_not_advertised() -> None:
    client = Client(make_server(external_ips=(("2001:db8::7", None),)), five())
    relayed = client.allocate().get(at.XOR_RELAYED_ADDRESS)
    assert relayed == ("127.0.0.1", client.relay_port)


def test_lifetime_is_capped_at_the_maximum() -> None:
    client = Client(make_server(max_lifetime=900), five())
    response = client.allocate((Attr.REQUESTED_TRANSPORT, PROTO_UDP), (Attr.LIFETIME, 99999))
    assert response.get(at.LIFETIME) == 900


def test_missing_requested_transport_is_400() -> None:
    client = Client(make_server(), five())
    assert code(client.allocate((Attr.LIFETIME, 600))) == 400


def test_unsupported_transport_is_442() -> None:
    client = Client(make_server(), five())
    assert code(client.allocate((Attr.REQUESTED_TRANSPORT, 99))) == 442


def test_tcp_allocation_over_udp_is_400() -> None:
    client = Client(make_server(), five(UDP))
    assert code(client.allocate((Attr.REQUESTED_TRANSPORT, PROTO_TCP))) == 400


@pytest.mark.parametrize(
    "attr",
    [(Attr.EVEN_PORT, True), (Attr.DONT_FRAGMENT, True), (Attr.RESERVATION_TOKEN, b"12345678")],
)
def test_tcp_allocation_refuses_udp_only_attributes(attr: tuple[int, object]) -> None:
    client = Client(make_server(), five(TCP))
    assert code(client.allocate((Attr.REQUESTED_TRANSPORT, PROTO_TCP), attr)) == 400


def test_dont_fragment_is_passed_to_the_adapter() -> None:
    client = Client(make_server(), five())
    response = client.allocate((Attr.REQUESTED_TRANSPORT, PROTO_UDP), (Attr.DONT_FRAGMENT, True))
    assert response.cls == MessageClass.SUCCESS
    (command,) = [o for o in client.outputs if isinstance(o, OpenRelay)]
    assert command.dont_fragment


def test_dont_fragment_without_support_is_420() -> None:
    client = Client(make_server(dont_fragment=False), five())
    response = client.allocate((Attr.REQUESTED_TRANSPORT, PROTO_UDP), (Attr.DONT_FRAGMENT, True))
    assert code(response) == 420
    assert response.get(at.UNKNOWN_ATTRIBUTES) == (Attr.DONT_FRAGMENT,)


def test_bad_address_family_is_440() -> None:
    client = Client(make_server(), five())
    response = client.allocate(
        (Attr.REQUESTED_TRANSPORT, PROTO_UDP), (Attr.REQUESTED_ADDRESS_FAMILY, 7)
    )
    assert code(response) == 440


def test_second_allocate_on_the_same_five_tuple_is_437() -> None:
    client = Client(make_server(), five())
    assert client.allocate().cls == MessageClass.SUCCESS
    assert code(client.allocate()) == 437


def test_retransmitted_allocate_gets_the_same_response() -> None:
    client = Client(make_server(), five())
    client.allocate()  # learn the nonce, create the allocation
    client.request(Method.REFRESH, (Attr.LIFETIME, 0))  # delete it
    msg = client.build(Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, PROTO_UDP)])
    data = msg.encode(client.key, fingerprint=True)
    first = [o for o in client.send_raw(data) if isinstance(o, SendToClient)]
    again = [o for o in client.send_raw(data) if isinstance(o, SendToClient)]
    assert len(first) == 1 and first == again


def test_requests_without_an_allocation_are_437() -> None:
    client = Client(make_server(), five())
    assert code(client.request(Method.REFRESH)) == 437
    assert client.nonce is not None  # it was authenticated first
    assert (
        code(client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, ("127.0.0.1", 1))))
        == 437
    )


def test_other_user_on_the_allocation_is_441() -> None:
    server = make_server()
    alice = Client(server, five())
    alice.allocate()
    bob = Client(server, five(), user="bob")
    assert code(bob.request(Method.REFRESH)) == 441


def test_per_user_quota_is_486() -> None:
    server = make_server(max_allocations_per_user=2)
    results = [code(Client(server, five(port=p)).allocate()) for p in (1, 2, 3)]
    assert results == [None, None, 486]
    assert code(Client(server, five(port=4), user="bob").allocate()) is None


def test_total_quota_is_508() -> None:
    server = make_server(max_allocations=1)
    assert code(Client(server, five(port=1)).allocate()) is None
    assert code(Client(server, five(port=2), user="bob").allocate()) == 508


def test_full_server_redirects_to_an_alternate_of_the_client_family() -> None:
    """RFC 8489 §10, §14.15: 300 + ALTERNATE-SERVER, signed; only same-family alternates."""
    alternates = (("2001:db8::9", 3478), ("198.51.100.9", 3479), ("198.51.100.10", 3478))
    server = make_server(max_allocations=1, alternate_servers=alternates)
    assert Client(server, five()).allocate().cls == MessageClass.SUCCESS
    picked = []
    for port in (2, 3, 4):
        client = Client(server, five(port=port), user="bob")
        response = client.allocate()
        assert code(response) == 300
        assert response.verify_integrity(client.key)
        picked.append(response.get(at.ALTERNATE_SERVER))
    assert picked == [("198.51.100.9", 3479), ("198.51.100.10", 3478), ("198.51.100.9", 3479)]


def test_draining_server_redirects_new_allocations_and_keeps_live_ones() -> None:
    server = make_server(alternate_servers=(("198.51.100.9", 3478),))
    live = Client(server, five())
    assert live.allocate().cls == MessageClass.SUCCESS
    server.start_draining()
    newcomer = Client(server, five(port=2), user="bob")
    assert code(newcomer.allocate()) == 300
    refresh = live.request(Method.REFRESH, (Attr.LIFETIME, 600))
    assert refresh.cls == MessageClass.SUCCESS  # the live allocation runs on
    assert code(live.allocate()) == 437  # a new Allocate on the same 5-tuple is still a mismatch


def test_draining_without_alternate_is_508() -> None:
    server = make_server(alternate_servers=(("2001:db8::9", 3478),))  # none of the client's family
    server.start_draining()
    assert code(Client(server, five()).allocate()) == 508


def test_draining_over_tls_is_508_not_a_redirect() -> None:
    """A TLS client cannot follow ALTERNATE-SERVER without ALTERNATE-DOMAIN (RFC 8489 §10)."""
    server = make_server(alternate_servers=(("198.51.100.9", 3478),))
    server.start_draining()
    assert code(Client(server, five(TLS)).allocate()) == 508
    assert code(Client(server, five(TCP, port=2)).allocate()) == 300


def test_relay_transports_can_be_switched_off() -> None:
    no_udp = Client(make_server(udp_relays=False), five(TCP))
    assert code(no_udp.allocate((Attr.REQUESTED_TRANSPORT, PROTO_UDP))) == 442
    no_tcp = Client(make_server(tcp_relays=False), five(TCP))
    assert code(no_tcp.allocate((Attr.REQUESTED_TRANSPORT, PROTO_TCP))) == 442
    assert no_tcp.allocate((Attr.REQUESTED_TRANSPORT, PROTO_UDP)).cls == MessageClass.SUCCESS


def test_reconfigure_changes_passwords_for_new_requests_only() -> None:
    server = make_server()
    live = Client(server, five())
    assert live.allocate().cls == MessageClass.SUCCESS
    auth = AuthConfig(REALM, {**USERS, "alice": "new-password"}, SECRET, nonce_lifetime=600)
    server.reconfigure(ServerConfig(auth=auth, allow_peers=("127.0.0.0/8",)))
    assert server.allocation(1) is not None  # nothing live was touched
    old = Client(server, five(port=2))
    assert code(old.allocate()) == 401
    new = Client(server, five(port=3), password="new-password")
    assert new.allocate().cls == MessageClass.SUCCESS


def test_a_live_allocation_keeps_its_key_after_a_password_change() -> None:
    """A reload that changes alice's password must not cut her live relay at its next Refresh
    (coturn keeps a session's key too); removing alice does: the user is revoked."""
    server = make_server()
    live = Client(server, five())
    assert live.allocate().cls == MessageClass.SUCCESS
    changed = AuthConfig(REALM, {**USERS, "alice": "new-password"}, SECRET, nonce_lifetime=600)
    server.reconfigure(ServerConfig(auth=changed, allow_peers=("127.0.0.0/8",)))
    assert live.request(Method.REFRESH).cls == MessageClass.SUCCESS
    permit = live.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, ("127.0.0.1", 1)))
    assert permit.cls == MessageClass.SUCCESS
    other = Client(server, five(port=2))  # the old password opens nothing new
    assert code(other.allocate()) == 401
    removed = {name: pw for name, pw in USERS.items() if name != "alice"}
    server.reconfigure(
        ServerConfig(auth=AuthConfig(REALM, removed, SECRET, nonce_lifetime=600),
                     allow_peers=("127.0.0.0/8",))
    )  # fmt: skip
    assert code(live.request(Method.REFRESH)) == 401


def test_denied_peers_are_refused_unless_allowed() -> None:
    server = make_server(deny_peers=("198.51.100.0/24",), allow_peers=("198.51.100.8/32",))
    client = Client(server, five())
    client.allocate()
    denied = client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, ("198.51.100.7", 1)))
    allowed = client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, ("198.51.100.8", 1)))
    assert code(denied) == 403
    assert allowed.cls == MessageClass.SUCCESS


def test_additional_address_family_gives_a_dual_allocation() -> None:
    """RFC 8656 §7.2: IPv4 and IPv6 relayed addresses; peers of both families are allowed."""
    client = Client(make_server(), five())
    response = client.allocate(
        (Attr.REQUESTED_TRANSPORT, PROTO_UDP), (Attr.ADDITIONAL_ADDRESS_FAMILY, FAMILY_IPV6)
    )
    relayed = response.get_all(at.XOR_RELAYED_ADDRESS)
    assert [ip for ip, _ in relayed] == ["127.0.0.1", "::1"]
    assert not response.has(at.ADDRESS_ERROR_CODE)
    both = client.request(
        Method.CREATE_PERMISSION,
        (Attr.XOR_PEER_ADDRESS, ("127.0.0.1", 1)),
        (Attr.XOR_PEER_ADDRESS, ("::1", 1)),
    )
    assert both.cls == MessageClass.SUCCESS
    refresh6 = client.request(Method.REFRESH, (Attr.REQUESTED_ADDRESS_FAMILY, FAMILY_IPV6))
    assert refresh6.cls == MessageClass.SUCCESS


def test_additional_address_family_without_ipv6_relays_gives_address_error_code() -> None:
    client = Client(make_server(ipv6_relays=False), five())
    response = client.allocate(
        (Attr.REQUESTED_TRANSPORT, PROTO_UDP), (Attr.ADDITIONAL_ADDRESS_FAMILY, FAMILY_IPV6)
    )
    assert len(response.get_all(at.XOR_RELAYED_ADDRESS)) == 1
    assert response.get(at.ADDRESS_ERROR_CODE) == (
        FAMILY_IPV6,
        440,
        "Address Family not Supported",
    )
    v6 = client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, ("::1", 1)))
    assert code(v6) == 443


def test_adapter_failing_the_second_family_gives_address_error_code() -> None:
    server = make_server()
    client = Client(server, five())
    assert code(client.request(Method.REFRESH)) == 437  # learns the nonce
    msg = client.build(
        Method.ALLOCATE,
        [(Attr.REQUESTED_TRANSPORT, PROTO_UDP), (Attr.ADDITIONAL_ADDRESS_FAMILY, FAMILY_IPV6)],
    )
    server.receive(client.five, msg.encode(client.key, fingerprint=True), T0)
    opens = [o for o in server.next_outputs() if isinstance(o, OpenRelay)]
    assert [o.family for o in opens] == [4, 6]
    server.relay_opened(opens[0].alloc_id, ("127.0.0.1", 50000), T0)
    assert not [o for o in server.next_outputs() if isinstance(o, SendToClient)]  # waits for v6
    server.relay_failed(opens[1].alloc_id, T0, 508, "no IPv6 port", family=6)
    answers = [o for o in server.next_outputs() if isinstance(o, SendToClient)]
    response = decode_message(answers[0].data)
    assert response.cls == MessageClass.SUCCESS
    assert response.get(at.ADDRESS_ERROR_CODE) == (FAMILY_IPV6, 508, "no IPv6 port")


@pytest.mark.parametrize(
    "extra",
    [
        [(Attr.ADDITIONAL_ADDRESS_FAMILY, FAMILY_IPV4)],
        [
            (Attr.ADDITIONAL_ADDRESS_FAMILY, FAMILY_IPV6),
            (Attr.REQUESTED_ADDRESS_FAMILY, FAMILY_IPV4),
        ],
    ],
)
def test_bad_additional_address_family_is_400(extra: list[tuple[int, object]]) -> None:
    client = Client(make_server(), five())
    assert code(client.allocate((Attr.REQUESTED_TRANSPORT, PROTO_UDP), *extra)) == 400


def test_relay_port_exhaustion_is_508() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate()  # nonce
    client.request(Method.REFRESH, (Attr.LIFETIME, 0))
    msg = client.build(Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, PROTO_UDP)])
    server.receive(client.five, msg.encode(client.key), T0)
    opens = [o for o in server.next_outputs() if isinstance(o, OpenRelay)]
    server.relay_failed(opens[0].alloc_id, T0)
    (response,) = client.responses(client.pump())
    assert code(response) == 508
    assert code(client.allocate()) is None  # the failed one left nothing behind


def test_refresh_zero_deletes_and_expiry_deletes() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate()
    response = client.request(Method.REFRESH, (Attr.LIFETIME, 0))
    assert response.get(at.LIFETIME) == 0
    assert any(isinstance(o, CloseRelay) for o in client.outputs)
    other = Client(server, five(port=7))
    other.allocate()
    deadline = server.get_timer()
    assert deadline is not None and deadline == pytest.approx(T0 + 600)
    server.handle_timer(T0 + 599)
    assert not any(isinstance(o, AllocationDeleted) for o in server.next_outputs())
    server.handle_timer(T0 + 600)
    assert any(isinstance(o, AllocationDeleted) for o in server.next_outputs())
    assert code(other.request(Method.REFRESH, now=T0 + 600)) == 437


def test_refresh_extends_the_lifetime() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate()
    client.request(Method.REFRESH, now=T0 + 500)
    server.handle_timer(T0 + 700)
    assert not any(isinstance(o, AllocationDeleted) for o in server.next_outputs())
    server.handle_timer(T0 + 1100)
    assert any(isinstance(o, AllocationDeleted) for o in server.next_outputs())


def test_even_port_reservation_token_round_trip() -> None:
    server = make_server()
    first = Client(server, five(port=1))
    response = first.allocate((Attr.REQUESTED_TRANSPORT, PROTO_UDP), (Attr.EVEN_PORT, True))
    opens = [o for o in first.outputs if isinstance(o, OpenRelay)]
    assert opens[-1].even_port and opens[-1].reserve_next
    token = response.get(at.RESERVATION_TOKEN)
    assert isinstance(token, bytes) and len(token) == 8
    second = Client(server, five(port=2))
    reply = second.allocate((Attr.REQUESTED_TRANSPORT, PROTO_UDP), (Attr.RESERVATION_TOKEN, token))
    relayed = reply.get(at.XOR_RELAYED_ADDRESS)
    assert relayed == ("127.0.0.1", first.relay_port + 1)
    third = Client(server, five(port=3))
    again = third.allocate((Attr.REQUESTED_TRANSPORT, PROTO_UDP), (Attr.RESERVATION_TOKEN, token))
    assert code(again) == 508  # used up


def test_reservation_token_with_even_port_is_400() -> None:
    client = Client(make_server(), five())
    response = client.allocate(
        (Attr.REQUESTED_TRANSPORT, PROTO_UDP),
        (Attr.RESERVATION_TOKEN, b"12345678"),
        (Attr.EVEN_PORT, False),
    )
    assert code(response) == 400


# -- permissions, channels, data (RFC 8656 §9-12) ------------------------------------------------


PEER = ("127.0.0.1", 5000)


def allocated(**overrides: object) -> Client:
    client = Client(make_server(**overrides), five())
    assert client.allocate().cls == MessageClass.SUCCESS
    return client


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "172.16.0.1", "0.0.0.0",
             "224.0.0.1", "255.255.255.255"]
)  # fmt: skip
def test_create_permission_to_private_targets_is_403(host: str) -> None:
    client = allocated(allow_peers=())
    assert (
        code(client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, (host, 80)))) == 403
    )


def test_loopback_is_refused_by_default_and_allowed_by_flag() -> None:
    refused = allocated(allow_peers=())
    assert code(refused.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, PEER))) == 403
    allowed = allocated()
    assert code(allowed.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, PEER))) is None


def test_create_permission_without_peer_is_400_and_wrong_family_is_443() -> None:
    client = allocated()
    assert code(client.request(Method.CREATE_PERMISSION)) == 400
    assert (
        code(client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, ("::1", 1)))) == 443
    )


def test_send_indication_needs_a_permission() -> None:
    client = allocated()
    ind = Message(Method.SEND, MessageClass.INDICATION)
    ind.add(at.XOR_PEER_ADDRESS, PEER).add(at.DATA, b"hello")
    assert not [o for o in client.send_raw(ind.encode()) if isinstance(o, SendToPeer)]
    client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, PEER))
    sent = [o for o in client.send_raw(ind.encode()) if isinstance(o, SendToPeer)]
    assert [(s.peer, s.data) for s in sent] == [(PEER, b"hello")]
    # permissions last 300 s (RFC 8656 §9)
    late = [o for o in client.send_raw(ind.encode(), now=T0 + 301) if isinstance(o, SendToPeer)]
    assert not late


def test_peer_data_becomes_data_indication_only_with_permission() -> None:
    client = allocated()
    alloc_id = next(iter(client.server.allocations.values())).id
    client.server.receive_peer_datagram(alloc_id, PEER, b"x", T0)
    assert not client.pump()
    client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, ("127.0.0.1", 1)))
    client.server.receive_peer_datagram(alloc_id, PEER, b"from peer", T0)
    (msg,) = client.responses(client.pump())
    assert msg.method == Method.DATA and msg.cls == MessageClass.INDICATION
    assert msg.get(at.DATA) == b"from peer"
    assert msg.get(at.XOR_PEER_ADDRESS) == PEER


def test_channel_bind_and_channel_data_both_ways() -> None:
    client = allocated()
    response = client.request(
        Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001), (Attr.XOR_PEER_ADDRESS, PEER)
    )
    assert response.cls == MessageClass.SUCCESS
    sent = client.send_raw(ChannelData(0x4001, b"abc").encode(pad=False))
    assert [(o.peer, o.data) for o in sent if isinstance(o, SendToPeer)] == [(PEER, b"abc")]
    alloc_id = next(iter(client.server.allocations.values())).id
    client.server.receive_peer_datagram(alloc_id, PEER, b"back", T0)
    (out,) = [o for o in client.pump() if isinstance(o, SendToClient)]
    assert decode_channel_data(out.data) == ChannelData(0x4001, b"back")


@pytest.mark.parametrize("number", [0x3FFF, 0x8000, 0xFFFF])
def test_channel_number_out_of_range_is_400(number: int) -> None:
    client = allocated()
    response = client.request(
        Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, number), (Attr.XOR_PEER_ADDRESS, PEER)
    )
    assert code(response) == 400


def test_channel_rebinding_rules() -> None:
    client = allocated()

    def bind(number: int, peer: tuple[str, int]) -> int | None:
        return code(
            client.request(
                Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, number), (Attr.XOR_PEER_ADDRESS, peer)
            )
        )

    assert bind(0x4001, PEER) is None
    assert bind(0x4001, PEER) is None  # refresh
    assert bind(0x4001, ("127.0.0.1", 5001)) == 400  # channel taken by another peer
    assert bind(0x4002, PEER) == 400  # peer already on another channel
    assert bind(0x4003, ("10.1.1.1", 1)) == 403


def test_channel_bind_on_tcp_allocation_is_400() -> None:
    client = Client(make_server(), five(TCP))
    client.allocate()
    response = client.request(
        Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001), (Attr.XOR_PEER_ADDRESS, PEER)
    )
    assert code(response) == 400


def test_stream_channel_data_is_padded() -> None:
    client = Client(make_server(), five(TCP))
    client.allocate((Attr.REQUESTED_TRANSPORT, PROTO_UDP))
    client.request(
        Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001), (Attr.XOR_PEER_ADDRESS, PEER)
    )
    alloc_id = next(iter(client.server.allocations.values())).id
    client.server.receive_peer_datagram(alloc_id, PEER, b"12345", T0)
    (out,) = [o for o in client.pump() if isinstance(o, SendToClient)]
    assert len(out.data) == 4 + 8


def test_client_closed_on_stream_deletes_the_allocation() -> None:
    client = Client(make_server(), five(TCP))
    client.allocate()
    client.server.client_closed(client.five, T0)
    assert any(isinstance(o, CloseRelay) for o in client.pump())
    assert not client.server.allocations


def test_per_ip_quota_is_486() -> None:
    server = make_server(max_allocations_per_ip=1)
    assert code(Client(server, five(port=1)).allocate()) is None
    assert code(Client(server, five(port=2), user="bob").allocate()) == 486
    assert code(Client(server, five(port=3, host="203.0.113.6"), user="bob").allocate()) is None


def test_requests_over_the_rate_are_dropped_until_tokens_refill() -> None:
    server = make_server(request_rate=1.0, request_burst=3)
    client = Client(server, five())
    answered = [client.request(Method.BINDING, auth=False).cls for _ in range(5)]
    assert answered.count(MessageClass.SUCCESS) == 3
    other = Client(server, five(host="203.0.113.9"))
    assert other.request(Method.BINDING, auth=False).cls == MessageClass.SUCCESS
    later = client.request(Method.BINDING, auth=False, now=T0 + 2)
    assert later.cls == MessageClass.SUCCESS


def test_response_cache_is_bounded_per_client_in_all_and_in_time() -> None:
    from delshare.turn.server_state import PENDING, ResponseCache

    cache = ResponseCache(ttl=40.0, max_entries=4, max_per_client=2)
    a, b = five(port=1), five(port=2)
    for n in range(3):
        cache.store(a, bytes([n]) * 12, b"answer", T0)
    assert len(cache) == 2  # the third answer of ``a`` is not remembered
    assert cache.lookup(a, bytes([2]) * 12, T0) is None
    cache.mark_pending(b, b"p" * 12, T0)
    assert cache.lookup(b, b"p" * 12, T0) is PENDING
    for n in range(3):
        cache.store(five(port=10 + n), b"x" * 12, b"answer", T0)
    assert len(cache) == 4  # oldest went first
    assert cache.lookup(a, bytes([0]) * 12, T0) is None
    assert cache.lookup(five(port=12), b"x" * 12, T0 + 41) is None and len(cache) == 0
