"""Issue 10 item 1: a sender cannot change the mode of the receiver's existing folders.

Real ``delshare send`` and ``delshare receive`` subprocesses on loopback. The sender offers
``Documents`` and ``.ssh`` folders of mode 0777 (and a setgid/sticky one); the receiver's output
folder already has ``Documents`` and ``.ssh`` at 0700. Old behaviour: both became
``drwxrwxrwx``, and new folders took the sender's mode up to 0777.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.adversarial.conftest import scaled
from tests.adversarial.hostile_peer import finish_cli, start_cli
from tests.app.harness import RelayProcess, env_for

UMASK = 0o027


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _hostile_tree(root: Path) -> list[Path]:
    """Folders of mode 0777 (one also setgid + sticky) with files inside."""
    documents, ssh, fresh = root / "Documents", root / ".ssh", root / "Fresh"
    for folder in (documents, ssh, fresh / "inner"):
        folder.mkdir(parents=True)
    (documents / "notes.txt").write_text("notes\n")
    (ssh / "authorized_keys").write_text("ssh-ed25519 AAAA attacker\n")
    (fresh / "inner" / "x.txt").write_text("x\n")
    os.chmod(fresh / "inner", 0o777)
    os.chmod(fresh, 0o3777)  # setgid + sticky + 0777
    for folder in (documents, ssh):
        os.chmod(folder, 0o777)
    return [documents, ssh, fresh]


def test_existing_folders_keep_their_mode_and_new_ones_get_the_umask(
    relay: RelayProcess, tmp_path: Path
) -> None:
    sources = _hostile_tree(tmp_path / "src")
    env = env_for(relay.rendezvous)
    for attempt in range(scaled(1, 5)):
        out = tmp_path / f"out{attempt}"
        (out / "Documents").mkdir(parents=True, mode=0o700)
        (out / ".ssh").mkdir(mode=0o700)
        os.chmod(out / "Documents", 0o700)
        os.chmod(out / ".ssh", 0o700)
        code = f"{400 + attempt}-guitar-orbit"
        sender = start_cli(["send", *map(str, sources), "--code", code], env)
        receiver = start_cli(["receive", code, "-o", str(out), "--yes"], env, umask=UMASK)
        received = finish_cli(receiver)
        sent = finish_cli(sender)
        assert received[0] == 0 and sent[0] == 0, (received, sent)
        assert _mode(out / "Documents") == 0o700
        assert _mode(out / ".ssh") == 0o700
        # new folders: the sender's 0777/03777 masked like a file (& 0o755, umask 027) | 0o700
        assert _mode(out / "Fresh") == 0o750
        assert _mode(out / "Fresh" / "inner") == 0o750
        assert _mode(out / "Fresh" / "inner" / "x.txt") == 0o640  # 0644 & ~027
        assert (out / ".ssh" / "authorized_keys").exists()  # a new file, in a folder left alone
