"""Volumes and secrets: what users create, and what a claim carries to its agent.

A secret's value is sealed before it reaches the store (`secretbox.py`) and opened only to
equip a claim: it travels in the claim's reply to the one agent running that attempt, and
nowhere else (not in the spec, events, logs or `status`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sandrun.data_models import NamedEnvironment, SecretInfo, Volume
from sandrun.errors import ValidationError
from sandrun.errors.data import EnvironmentNotFound, SecretNotFound
from sandrun.ids import new_id
from sandrun.models import Claim, JobRecord
from sandrun.service import retry
from sandrun.service.secretbox import SecretBox
from sandrun.spec import JobSpec, parse_memory_mb
from sandrun.spec.data import SECRET_NAME
from sandrun.spec.environment import Packages
from sandrun.spec.fields import NAME_RE
from sandrun.store import Store

DEFAULT_VOLUME_MB = 10 * 1024
MAX_SECRET_BYTES = 64 * 1024
PURGE_LABEL = "sandrun.purge"  # on the job that removes a deleted volume's bytes


class DataCalls:
    store: Store
    clock: Callable[[], float]
    secret_box: SecretBox | None

    # --- volumes --------------------------------------------------------------------

    def create_volume(
        self, owner: str, name: str, size: int | str | None = None, shared: bool = False
    ) -> Volume:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValidationError(
                f"volume name {name!r} is not valid; use 1-128 letters, digits, '-' or '_'",
                field="name",
            )
        try:
            size_mb = DEFAULT_VOLUME_MB if size is None else parse_memory_mb(size)
        except ValueError as exc:
            raise ValidationError(str(exc).replace("memory", "size"), field="size") from None
        volume_id = f"vol-{new_id()}"
        return self.store.create_volume(volume_id, owner, name, size_mb, shared, self.clock())

    def list_volumes(self, viewer: str | None) -> list[Volume]:
        """The viewer's volumes (every owner's for None: an admin)."""
        return self.store.volumes(viewer)

    def get_volume(self, key: str, viewer: str | None) -> Volume:
        return self.store.volume(viewer, key)

    def delete_volume(self, key: str, viewer: str | None) -> Volume:
        """Delete a volume no unfinished job mounts; its bytes go from the node holding
        them by a job queued for that node."""
        volume = self.store.volume(viewer, key)
        purge = None
        if volume.node is not None:
            spec = JobSpec(
                command=["true"],
                name=f"purge-volume-{volume.name}"[:128],
                labels={PURGE_LABEL: volume.id},
            )
            purge = JobRecord.submitted(spec, volume.owner, self.clock())
        self.store.delete_volume(volume, self.clock(), purge)
        return volume

    # --- environments ---------------------------------------------------------------

    def create_environment(self, owner: str, name: str, spec: Packages) -> NamedEnvironment:
        """Name a Python version and requirements; jobs then say `environment: NAME`."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValidationError(
                f"environment name {name!r} is not valid; use letters, digits, '-' or '_'",
                field="name",
            )
        self.store.put_environment(owner, name, spec, self.clock())
        return NamedEnvironment(owner=owner, name=name, spec=spec, created_at=self.clock())

    def list_environments(self, viewer: str | None) -> list[NamedEnvironment]:
        return self.store.environments(viewer)

    def delete_environment(self, owner: str, name: str) -> None:
        self.store.delete_environment(owner, name)

    def check_environment(self, spec: JobSpec, owner: str) -> None:
        """At submit: a named environment is its owner's."""
        name = spec.environment
        if isinstance(name, str) and self.store.environment(owner, name) is None:
            raise EnvironmentNotFound(
                f"you have no environment named {name!r}",
                field="environment",
                suggestions=[f"sandrun env create {name} --requirements requirements.txt"],
            )

    # --- secrets --------------------------------------------------------------------

    def set_secret(self, owner: str, name: str, value: str) -> None:
        box = self._box()
        if not isinstance(name, str) or not re.match(SECRET_NAME, name):
            raise ValidationError(
                f"secret name {name!r} is not valid; use letters, digits and '_', not "
                "starting with a digit (it is also the job's environment variable)",
                field="name",
            )
        if not isinstance(value, str) or len(value.encode()) > MAX_SECRET_BYTES or "\0" in value:
            raise ValidationError(
                f"a secret's value is text of at most {MAX_SECRET_BYTES} bytes, without NUL",
                field="value",
            )
        self.store.put_secret(owner, name, box.seal(owner, name, value), self.clock())

    def list_secrets(self, viewer: str | None) -> list[SecretInfo]:
        """Names and dates only: values never leave the server but in a claim."""
        return self.store.secrets(viewer)

    def delete_secret(self, owner: str, name: str) -> None:
        self.store.delete_secret(owner, name)

    def check_secrets(self, spec: JobSpec, owner: str) -> None:
        """At submit: every secret a job names is its owner's."""
        if not spec.secrets:
            return
        self._box()
        names = [s.name for s in spec.secrets]
        have = {info.name for info in self.store.secrets(owner)}  # names only, not values
        for i, name in enumerate(names):
            if name not in have:
                raise SecretNotFound(
                    f"you have no secret named {name!r}",
                    field=f"secrets.{i}",
                    suggestions=[f"echo VALUE | sandrun secret set {name}"],
                )

    # --- claims ---------------------------------------------------------------------

    def _equipped(self, claim: Claim, node: str) -> Claim | None:
        """The claim with the volumes it mounts and its secrets' values; None if its
        volumes live on another node (it was handed back, to be claimed there)."""
        spec, update = claim.job.spec, dict[str, object]()
        if spec.volumes or PURGE_LABEL in spec.labels:
            grants = self.store.grants(claim.job, node)
            if grants is None:
                why = "handed back unstarted: its volumes live on another node"
                key = (claim.job.id, claim.attempt)
                self.store.hand_back(node, [key], why, retry.handed_back, self.clock())
                return None
            update["volumes"] = grants
        if spec.secrets and self.secret_box is not None:
            owner = claim.job.owner
            sealed = self.store.sealed_secrets(owner, [s.name for s in spec.secrets])
            opened = {n: self.secret_box.open(owner, n, v) for n, v in sealed.items()}
            # One missing (deleted since, or sealed under another key) fails the attempt
            # on its agent, which names it.
            update["secrets"] = {n: v for n, v in opened.items() if v is not None}
        if isinstance(spec.environment, str):  # deleted since: its agent says so
            update["environment"] = self.store.environment(claim.job.owner, spec.environment)
        return claim.model_copy(update=update) if update else claim

    def _box(self) -> SecretBox:
        if self.secret_box is None:
            raise ValidationError(
                "this server keeps no secrets: it has no key to seal them with",
                field="secrets",
                suggestions=["start it with SANDRUN_SECRETS_KEY or --secrets-key FILE"],
            )
        return self.secret_box
