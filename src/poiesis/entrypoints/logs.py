"""Structured logs: one JSON object per line (or plain text for a terminal).

A record's `fields` (passed as `extra={"fields": {...}}`) become keys of its JSON object: the audit
lines use them for the principal, the task and the client.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import msgspec

_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry |= {k: v for k, v in fields.items() if k not in entry}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            text += "".join(f" {k}={v}" for k, v in fields.items())
        return text


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that log every migration step or every HTTP request at INFO (trec's each read of
    # its Pod) speak at WARNING; DEBUG lets them through.
    quiet = logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
    for name in ("alembic", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)
