"""No sandbox: the job runs as a plain process. Limits that need no namespace still hold,
and its first process dies with the agent (the others with its cgroup, or when the agent
starts again)."""

from __future__ import annotations

from sandrun.agent.sandbox.base import Box, Sandbox, drop_privileges, system_tool


class NoSandbox(Sandbox):
    name = "none"
    isolates = False

    def command(self, box: Box) -> list[str]:
        drop = drop_privileges(box.uid) or [system_tool("setpriv"), "--"]
        # One setpriv: it sets the parent-death signal after any change of user, which
        # would otherwise clear it.
        return [drop[0], "--pdeathsig", "KILL", *drop[1:], *box.argv]
