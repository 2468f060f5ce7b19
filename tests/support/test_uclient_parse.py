"""Parsing uclient's closing statistics, on output recorded from coturn 4.6.1."""

from __future__ import annotations

from tests.support.coturn import parse_uclient_output, uclient_argv

COMPLETED = """\
0: : Total connect time is 1
0: : Total connect time is 1
0: : 90 connections are completed
6: : start_mclient: msz=10, tot_send_msgs=400, tot_recv_msgs=400, tot_send_bytes ~ 40000, \
tot_recv_bytes ~ 40000
7: : start_mclient: msz=10, tot_send_msgs=478, tot_recv_msgs=477, tot_send_bytes ~ 47800, \
tot_recv_bytes ~ 47700
7: : start_mclient: tot_send_msgs=500, tot_recv_msgs=499
7: : start_mclient: tot_send_msgs=500, tot_recv_msgs=499
7: : start_mclient: tot_send_bytes ~ 50000, tot_recv_bytes ~ 49900
7: : Total transmit time is 7
7: : Total lost packets 1 (0.200000%), total send dropped 0 (0.000000%)
7: : Average round trip delay 0.324000 ms; min = 0 ms, max = 24 ms
"""

PASSIVE = """\
15: : start_mclient: tot_send_msgs=10, tot_recv_msgs=5
15: : start_mclient: tot_send_bytes ~ 1000, tot_recv_bytes ~ 500
15: : Total transmit time is 15
15: : Total lost packets 5 (50.000000%), total send dropped 0 (0.000000%)
"""


def test_final_totals_not_the_running_ones() -> None:
    result = parse_uclient_output(COMPLETED)
    assert result is not None
    assert (result.sent_messages, result.received_messages) == (500, 499)
    assert (result.sent_bytes, result.received_bytes) == (50000, 49900)
    assert (result.lost_messages, result.send_dropped) == (1, 0)
    assert result.transmit_seconds == 7
    assert not result.clean


def test_passive_mode_is_clean_at_half() -> None:
    result = parse_uclient_output(PASSIVE, one_way=True)
    assert result is not None
    assert result.expected_received == 5
    assert result.clean
    two_way = parse_uclient_output(PASSIVE)
    assert two_way is not None and not two_way.clean


def test_warning_and_errors_are_kept() -> None:
    text = "1: : WARNING: 3 connections are not completed\n1: : ERROR: x\n1: : ERROR: x\n" + PASSIVE
    result = parse_uclient_output(text, one_way=True)
    assert result is not None
    assert result.not_completed == 3
    assert result.errors == ("1: : ERROR: x",)
    assert not result.clean


def test_failed_run_has_no_statistics() -> None:
    assert parse_uclient_output("0: : ERROR: Cannot complete Allocation\n") is None
    assert parse_uclient_output(COMPLETED.split("Total lost")[0]) is None


def test_argv_uses_secret_instead_of_password() -> None:
    argv = uclient_argv(
        "127.0.0.1", 3478, mode_flags=["-T"], user="u", password="p", secret="s", peer=("h", 9)
    )
    assert argv == [
        "turnutils_uclient", "-T", "-m", "2", "-n", "10", "-l", "100", "-p", "3478",
        "-u", "u", "-W", "s", "-e", "h", "-r", "9", "127.0.0.1",
    ]  # fmt: skip
