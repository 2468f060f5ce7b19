"""The one exception hierarchy of DEL: every error raised on purpose derives from ``DelshareError``.

The CLI turns any of them into one line and an exit code, never a traceback; adapters translate
``OSError`` at their boundary. The first classes live here; each layer adds its own under them,
in the module named on the right. The tree (``tests/test_errors.py`` keeps it true)::

    DelshareError                the root                                    errors
      StunDecodeError            bytes that are not STUN or ChannelData      errors
        MalformedRequestError    framed, an attribute malformed: 400         errors
      RemoteProtocolError        the peer broke a protocol                   errors
        StunProtocolError        refuse a request: code, reason, attributes  errors
          CredentialsRefused     401 for wrong credentials (not a first challenge)  turn.auth
      LocalProtocolError         our side broke a protocol (a bug)           errors
        IllegalTransition        a state machine move its table forbids      turn.server_state
      TransactionError           a client request got an error response      errors
        AuthenticationError      401 after credentials, or 441              turn.client_errors
        TryAlternateError        300 with ALTERNATE-SERVER                   turn.client_errors
        AllocationError          Allocate or Refresh refused                 turn.client_errors
        PeerConnectError         Connect refused (403, 446, 447)             turn.client_errors
        ResponseIntegrityError   a response failed MESSAGE-INTEGRITY         turn.client_errors
      TransactionTimeout         no response in time                         errors
      TurnConnectionError        TURN server unreachable or connection lost  turn.client_errors
      TurnUriError               not a TURN URI                              turn.uri
      TlsSetupError              a certificate, key or CA file cannot be loaded  tls
      PairingError               code, PAKE, rendezvous or ticket failed     errors
        RendezvousRefused        the rendezvous refuses a request (a limit)  pairing.mailbox
      CandidateError             the peer's candidate list is malformed      link.candidates
      LinkError                  the encrypted link failed                   link.crypto
        LinkAuthError            the peer does not know the key              link.crypto
        LinkProtocolError        malformed or oversized record               link.crypto
        RecordIntegrityError     a record's AEAD tag did not verify          link.crypto
        LinkClosedError          the link ended (cleanly or not)             link.crypto
        LinkTimeoutError         the handshake took too long                 link.crypto
        NoPathError              no raced path authenticated in time         link.race
      TransferError              the file transfer failed or was refused     errors
        ManifestError            the file list cannot be sent or received    transfer.errors
          UnsafePathError        a path could escape the output folder       transfer.errors
        DestinationExistsError   a file exists and may not be overwritten    transfer.errors
        InsufficientSpaceError   no room for the offer                       transfer.errors
        DeclinedError            the local user declined                     transfer.errors
        RefusedByPeerError       the peer rejected or aborted                transfer.errors
        IntegrityError           a file's BLAKE3 digest differs              transfer.errors
        SourceChangedError       a source changed while being sent           transfer.errors
        TransferInterruptedError the link broke or stalled; resumable        transfer.errors
          PeerTimeoutError       the peer sent nothing for too long          transfer.errors
          StreamInterruptedError a stream (``send -``) broke: not resumable  transfer.errors
          FinishedLinkLostError  the link broke after this side finished     app.session
            DoneMaybeLostError   the link broke after the receiver's done    app.receive
        PeerProtocolError        the peer broke the transfer protocol        transfer.errors
          MessageTooLargeError   a control message over its bound            transfer.protocol
        OutputDirError           the output folder is missing                transfer.errors
        LocalIOError             a local read or write failed                transfer.errors
      UsageProblem               the command line cannot work (exit 2)       app.common
      ConfigError                the client config file is unreadable/invalid  config
      CheckFailed                a ``turn-check`` step failed                cli.turn_check

``StunDecodeError``, ``TurnUriError`` are also ``ValueError``; ``TurnConnectionError`` is also
``ConnectionError``; ``LocalProtocolError`` is also ``RuntimeError``. A peer's misbehaviour is a
``RemoteProtocolError`` wherever it is caught: ``LinkProtocolError`` and the transfer's
``PeerProtocolError`` are ones too (h11's local/remote split). ``StunProtocolError`` is the one
refusal a TURN handler or the authenticator raises; the server's dispatch point answers it with
its code and attributes (401/438 challenges, 420 UNKNOWN-ATTRIBUTES, 300 ALTERNATE-SERVER).
"""

from __future__ import annotations


class DelshareError(Exception):
    """Root of every error DEL raises on purpose."""


class StunDecodeError(DelshareError, ValueError):
    """Malformed STUN message or ChannelData frame."""


class MalformedRequestError(StunDecodeError):
    """A well-framed STUN message whose attribute ``attribute`` has a malformed value or TLV.

    ``method``, ``cls`` and ``transaction_id`` come from the valid header, so a server can answer
    400 Bad Request to a request (RFC 8489 §6.3.1).
    """

    def __init__(
        self, reason: str, method: int, cls: int, transaction_id: bytes, attribute: int | None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.method = method
        self.cls = cls
        self.transaction_id = transaction_id
        self.attribute = attribute


class RemoteProtocolError(DelshareError):
    """The peer broke a protocol: what it sent is malformed or out of order (h11's split)."""


class LocalProtocolError(DelshareError, RuntimeError):
    """Our own side tried a move its protocol forbids: a bug here, never the peer's doing."""


class StunProtocolError(RemoteProtocolError):
    """Refuse a request: the error response's ``code``, ``reason`` and extra ``attributes``
    (RFC 8489 §14.8), e.g. 420 with UNKNOWN-ATTRIBUTES, 401/438 with REALM and NONCE, 300 with
    ALTERNATE-SERVER."""

    def __init__(self, code: int, reason: str, *attributes: tuple[int, object]) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.attributes = attributes


class TransactionError(DelshareError):
    """A client request answered with an error response (code, reason)."""

    def __init__(self, method: str, code: int, reason: str) -> None:
        super().__init__(f"{method} failed: {code} {reason}")
        self.method = method
        self.code = code
        self.reason = reason


class TransactionTimeout(DelshareError):
    """No response to a client request in time (RFC 8489 §6.2.1, §6.2.2)."""


class PairingError(DelshareError):
    """Code exchange, PAKE or rendezvous failed."""


class TransferError(DelshareError):
    """The file transfer failed or was refused."""
