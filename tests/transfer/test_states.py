"""The transfer's message order as a table both sides feed: both views agree on every move,
a peer's out-of-order message is the peer's fault, our own is a bug."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delshare.errors import LocalProtocolError
from delshare.transfer.errors import PeerProtocolError
from delshare.transfer.manifest import Manifest
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
from delshare.transfer.states import TRANSITIONS, Conversation, Side, State

S, R = Side.SENDER, Side.RECEIVER


def talk(moves: list[tuple[Side, Message]]) -> tuple[Conversation, Conversation]:
    """Feed both sides' conversations as a real exchange would."""
    sender, receiver = Conversation(S), Conversation(R)
    for side, message in moves:
        mine, theirs = (sender, receiver) if side is S else (receiver, sender)
        mine.sent(message)
        theirs.received(message)
    return sender, receiver


OFFER = Offer(Manifest(()))


@pytest.mark.parametrize(
    ("moves", "end"),
    [
        ([(S, OFFER), (R, Accept()), (S, FileBegin(0, 0)), (S, FileEnd(0, b"")), (S, Done()),
          (R, Done())], State.DONE),
        ([(S, OFFER), (R, HashRequest((0,))), (S, Hashes(((0, b"h"),))), (R, Accept()),
          (S, Done()), (R, Done())], State.DONE),
        ([(S, OFFER), (R, Reject("no"))], State.REJECTED),
        ([(S, OFFER), (R, HashRequest((0,))), (S, Hashes(())), (R, Reject("no"))], State.REJECTED),
        ([(R, Reject("invalid offer"))], State.REJECTED),
        ([(S, OFFER), (R, Accept()), (S, FileBegin(0, 0)), (R, ErrorMessage("disk"))],
         State.ABORTED),
    ],
)  # fmt: skip
def test_conversations_both_sides_agree_on(moves: list[tuple[Side, Message]], end: State) -> None:
    sender, receiver = talk(moves)
    assert sender.state is receiver.state is end
    assert sender.ended and receiver.ended


@pytest.mark.parametrize(
    ("before", "move"),
    [
        ([], (S, FileBegin(0, 0))),  # data before any offer
        ([(S, OFFER)], (S, FileBegin(0, 0))),  # before the receiver accepted
        ([(S, OFFER), (R, Accept())], (R, Done())),  # receiver's done before the sender's
        ([(S, OFFER), (R, Accept()), (S, FileBegin(0, 0))], (S, Done())),  # file not ended
        ([(S, OFFER), (R, Accept()), (S, Done()), (R, Done())], (S, ErrorMessage("late"))),
        ([(S, OFFER)], (S, Hashes(()))),  # hashes nobody asked for
    ],
)
def test_an_illegal_move_is_the_peers_fault_or_our_bug(
    before: list[tuple[Side, Message]], move: tuple[Side, Message]
) -> None:
    side, message = move
    sender, receiver = talk(before)
    mine, theirs = (sender, receiver) if side is S else (receiver, sender)
    with pytest.raises(PeerProtocolError, match=type(message).__name__):
        theirs.received(message)
    with pytest.raises(LocalProtocolError):
        mine.sent(message)


def test_error_ends_every_open_state_from_either_side() -> None:
    for state in State:
        for side in Side:
            after = TRANSITIONS.get((state, side, ErrorMessage))
            ended = state in (State.DONE, State.REJECTED, State.ABORTED)
            assert after is (None if ended else State.ABORTED)


MESSAGES: list[Message] = [
    OFFER, Accept(), Reject("r"), HashRequest((0,)), Hashes(()), FileBegin(0, 0),
    FileEnd(0, b""), Done(), ErrorMessage("e"),
]  # fmt: skip


@given(st.lists(st.tuples(st.sampled_from(Side), st.sampled_from(MESSAGES)), max_size=12))
def test_both_views_accept_and_refuse_the_same_moves(moves: list[tuple[Side, Message]]) -> None:
    sender, receiver = Conversation(S), Conversation(R)
    for side, message in moves:
        mine, theirs = (sender, receiver) if side is S else (receiver, sender)
        try:
            mine.sent(message)
        except LocalProtocolError:
            with pytest.raises(PeerProtocolError):
                theirs.received(message)
            continue
        theirs.received(message)
        assert sender.state is receiver.state
