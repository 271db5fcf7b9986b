"""What a test compares before and after an operation: a directory tree and the keys of a Redis db."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def tree_state(top: Path) -> dict[str, tuple]:
    """Everything a restore could change under ``top``: type, mode, owner, content or link target."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for entry in [*dirnames, *filenames]:
            path = Path(dirpath, entry)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                body = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                body = ("dir",)
            else:
                body = ("file", path.read_bytes())
            state[str(path.relative_to(top))] = (*body, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return state


def key_dumps(client) -> dict[bytes, tuple]:
    """DUMP and TTL presence of every key: any write to a key shows up here."""
    return {name: (client.dump(name), client.pttl(name) > 0) for name in sorted(client.scan_iter(count=1000))}
