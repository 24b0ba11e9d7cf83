"""No sandbox: the job runs as a plain process. Limits that need no namespace still hold."""

from __future__ import annotations

from sandrun.agent.sandbox.base import Box, Sandbox, drop_privileges


class NoSandbox(Sandbox):
    name = "none"
    isolates = False

    def command(self, box: Box) -> list[str]:
        return [*drop_privileges(box.uid), *box.argv]
