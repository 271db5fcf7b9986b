# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""systemd units of a pool, driven with systemctl from a module on the worker host."""

from __future__ import annotations

import time


class UnitError(Exception):
    """systemctl refused or failed; the message has its own words."""


class Units:
    """Stop, start, restart and check a list of units together; in check mode, only say so."""

    def __init__(self, module, names: list[str]) -> None:
        self.module = module
        self.names = list(names)
        self._systemctl = None

    def _run(self, *args: str) -> tuple[int, str, str]:
        if self._systemctl is None:
            self._systemctl = self.module.get_bin_path("systemctl")
            if not self._systemctl:
                raise UnitError("systemctl was not found on the host: the workers' units cannot be managed")
        return self.module.run_command([self._systemctl, *args])

    def _change(self, verb: str) -> str:
        action = f"{verb} {' '.join(self.names)}"
        if self.module.check_mode:
            return action
        rc, out, err = self._run(verb, *self.names)
        if rc != 0:
            raise UnitError(f"systemctl {action} failed (rc {rc}): {(err or out).strip()}")
        return action

    def stop(self) -> str:
        return self._change("stop")

    def start(self) -> str:
        return self._change("start")

    def restart(self) -> str:
        return self._change("restart")

    def members(self) -> list[str]:
        """The units and, for a target, the units it wants (a pool target's worker instances)."""
        found = []
        for name in self.names:
            found.append(name)
            if name.endswith(".target"):
                rc, out, _err = self._run("show", "--property=Wants", "--value", name)
                found += out.split() if rc == 0 else []
        return list(dict.fromkeys(found))

    def wait_inactive(self, timeout: float, poll: float = 0.1) -> bool:
        """Until every unit a target wants (the worker instances) is inactive, at most ``timeout`` s:
        workers told to stop by other means exit on their own. Whether they all did."""
        instances = [name for name in self.members() if not name.endswith(".target")]
        deadline = time.monotonic() + timeout
        while True:
            running = [name for name in instances if self._run("is-active", "--quiet", name)[0] == 0]
            if not running or time.monotonic() >= deadline:
                return not running
            time.sleep(poll)

    def active(self) -> bool:
        """Whether every unit, and every unit a target wants, is active (``is-active`` of several
        units succeeds when any one is, so each is asked on its own)."""
        return all(self._run("is-active", "--quiet", name)[0] == 0 for name in self.members())
