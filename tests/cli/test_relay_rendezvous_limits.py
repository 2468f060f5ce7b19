"""Issue 12 item 6: the ``--rendezvous-*`` limits of ``delshare relay``, each applied."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.adversarial.rendezvous import (
    ATTACKER,
    add_frame,
    allocate_frame,
    hold_mailboxes,
    holding,
    open_frame,
    raw,
    read_code,
    rendezvous,
    reply,
)
from tests.app.harness import DELSHARE, env_for, finish, start

WAIT = 10.0


async def test_each_rendezvous_limit_flag_is_applied(tmp_path: Path) -> None:
    flags = (
        "--rendezvous-max-mailboxes-per-ip", "2",
        "--rendezvous-max-connections-per-ip", "3",
        "--rendezvous-max-message-size", "100",
        "--rendezvous-max-messages", "2",
        "--rendezvous-code-lifetime", "1.5",
    )  # fmt: skip
    with rendezvous(tmp_path, *flags) as server:
        held = await hold_mailboxes(server.url, [allocate_frame()] * 3, [ATTACKER])
        async with holding(held):
            assert len(held.connections) == 2
            assert held.refusals == [
                "too many open mailboxes from your address (limit 2): close some, "
                "or try again later"
            ]
            fourth = await raw(server.url)  # the third connection from this address
            async with fourth:
                fifth = await raw(server.url)
                answer = await reply(fifth, WAIT)
                assert answer is not None and "too many connections" in str(answer["reason"])
        async with await raw(server.url, "127.0.0.1") as sender:
            await sender.send(open_frame("5", "sender"))
            await sender.send(add_frame("x" * 100))
            await sender.send(add_frame("y" * 101))
            answer = await reply(sender, WAIT)
            assert answer == {"type": "error", "reason": "message too large (limit 100 bytes)"}
        async with await raw(server.url, "127.0.0.1") as sender:
            await sender.send(open_frame("6", "sender"))
            for body in ("a", "b", "c"):
                await sender.send(add_frame(body))
            answer = await reply(sender, WAIT)
            assert answer == {"type": "error", "reason": "mailbox message limit reached"}
        async with await raw(server.url, "127.0.0.1") as sender:
            await sender.send(open_frame("7", "sender"))
            answer = await reply(sender, WAIT)  # the code lifetime ends the wait
            assert answer == {"type": "close", "reason": "mailbox expired"}


def test_bad_limit_values_are_usage_errors() -> None:
    for flag, value in [
        ("--rendezvous-max-mailboxes", "0"),
        ("--rendezvous-max-message-size", "1000000"),
        ("--rendezvous-idle-timeout", "-1"),
    ]:
        done = subprocess.run(
            [DELSHARE, "relay", "--no-turn", flag, value],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 2, (flag, done.stderr)
        assert done.stderr.startswith("Error: ") and flag in done.stderr


def test_a_refused_send_prints_the_reason_in_one_line(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("a\n")
    with rendezvous(tmp_path, "--rendezvous-max-mailboxes-per-ip", "1") as server:
        env = env_for(server.url)
        first = start(["send", str(source), "--direct-only"], env)
        try:
            read_code(first)  # holds this address's one seat
            second = finish(start(["send", str(source), "--direct-only"], env), 30.0)
        finally:
            first.kill()
            first.communicate()
    assert second.returncode == 1
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert "Traceback" not in second.stderr and len(lines) == 1, second.stderr
    assert (
        lines[0].startswith("error: ") and "too many open mailboxes from your address" in lines[0]
    )
