"""An agent's log lines: the message, then the job and attempt it is about, so every
claim, end and refusal can be traced to its attempt (`job=... attempt=...`)."""

from __future__ import annotations

import logging


class FieldsFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = [f"{k}={getattr(record, k)}" for k in ("job", "attempt") if hasattr(record, k)]
        return " ".join([text, *fields])


def log_to_stderr() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(FieldsFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
