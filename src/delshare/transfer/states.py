"""The order of the transfer's control messages as data: one table both sides feed.

Theory of operation (docs/protocol.md §4; h11 keeps its HTTP states the same way). A transfer
is one conversation with a single shared state: every control message either side sends moves
it, and both sides see the same messages in the same order. Each side keeps a
:class:`Conversation` and feeds it what it sends (:meth:`Conversation.sent`) and what it
receives (:meth:`Conversation.received`); :data:`TRANSITIONS` maps (state, who sent it, message
type) to the next state. Anything else is refused: a message from the peer with
:class:`~delshare.transfer.errors.PeerProtocolError` (the peer broke the protocol), one of our
own with :class:`~delshare.errors.LocalProtocolError` (a bug here). ``wait`` keepalives change
nothing and are not fed; ``error`` from either side ends any conversation that has not ended.
DATA records are not messages: they flow while the state is ``FILE``.

Sans-IO: no sockets, no clock; the table is all there is.
"""

from __future__ import annotations

import enum

from delshare.errors import LocalProtocolError
from delshare.transfer.errors import PeerProtocolError
from delshare.transfer.protocol import (
    Accept,
    Done,
    ErrorMessage,
    FileBegin,
    FileEnd,
    Hashes,
    HashRequest,
    Message,
    Offer,
    Reject,
)

__all__ = ["TRANSITIONS", "Conversation", "Side", "State"]


class Side(enum.Enum):
    SENDER = "sender"
    RECEIVER = "receiver"


class State(enum.Enum):
    """Where the conversation is, named by what comes next."""

    OFFER = "offer"  # the sender's offer is due
    ANSWER = "answer"  # the receiver's hash-request, accept or reject
    HASHES = "hashes"  # the sender's hashes
    DECISION = "decision"  # the receiver's accept or reject, hashes in hand
    FILES = "files"  # the sender's file-begin, or its done
    FILE = "file"  # DATA records, then the sender's file-end
    CONFIRM = "confirm"  # the receiver's done
    DONE = "done"  # every file confirmed
    REJECTED = "rejected"  # the receiver refused the offer
    ABORTED = "aborted"  # either side sent error


S, R = Side.SENDER, Side.RECEIVER
TRANSITIONS: dict[tuple[State, Side, type[Message]], State] = {
    (State.OFFER, S, Offer): State.ANSWER,
    (State.OFFER, R, Reject): State.REJECTED,  # the offer did not even decode
    (State.ANSWER, R, HashRequest): State.HASHES,
    (State.ANSWER, R, Accept): State.FILES,
    (State.ANSWER, R, Reject): State.REJECTED,
    (State.HASHES, S, Hashes): State.DECISION,
    (State.DECISION, R, Accept): State.FILES,
    (State.DECISION, R, Reject): State.REJECTED,
    (State.FILES, S, FileBegin): State.FILE,
    (State.FILES, S, Done): State.CONFIRM,
    (State.FILE, S, FileEnd): State.FILES,
    (State.CONFIRM, R, Done): State.DONE,
}
"""The only legal moves; ``error`` from either side is added below for every open state."""
_ENDED = frozenset({State.DONE, State.REJECTED, State.ABORTED})
for _state in State:
    if _state not in _ENDED:
        for _side in Side:
            TRANSITIONS[(_state, _side, ErrorMessage)] = State.ABORTED


class Conversation:
    """One side's view of the transfer's state; feed it every message but ``wait``."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.state = State.OFFER

    @property
    def ended(self) -> bool:
        """Done, rejected or aborted: no message may follow."""
        return self.state in _ENDED

    @property
    def peer(self) -> Side:
        return Side.RECEIVER if self.side is Side.SENDER else Side.SENDER

    def sent(self, message: Message) -> None:
        """We send ``message``: LocalProtocolError if the table does not allow it (a bug)."""
        after = TRANSITIONS.get((self.state, self.side, type(message)))
        if after is None:
            raise LocalProtocolError(f"{self._move(self.side, message)} is not allowed")
        self.state = after

    def received(self, message: Message) -> None:
        """The peer sent ``message``: PeerProtocolError if the table does not allow it."""
        after = TRANSITIONS.get((self.state, self.peer, type(message)))
        if after is None:
            raise PeerProtocolError(f"unexpected {self._move(self.peer, message)}")
        self.state = after

    def _move(self, side: Side, message: Message) -> str:
        return f"{type(message).__name__} from the {side.value} in state {self.state.value}"
