"""Structured logging: one JSON object per line (plain lines on a terminal), each carrying
the request id (and, for request lines, route, status and latency) of the request it
belongs to."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from contextvars import ContextVar
from types import TracebackType

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
# The model a learner task works on (one process trains several): on each of its lines.
model_var: ContextVar[str | None] = ContextVar("model", default=None)

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}


def _fields(record: logging.LogRecord, role: str) -> dict[str, object]:
    """What a line says, whatever its format."""
    entry: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname,
        "role": role,
        "logger": record.name,
        "request_id": getattr(record, "request_id", request_id_var.get()),
        "message": record.getMessage(),
    }
    # Fields passed with extra={...} (route, status, latency_ms, version, ...) come along.
    entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
    model = model_var.get()
    if model is not None:
        entry.setdefault("model", model)
    return entry


class JsonFormatter(logging.Formatter):
    """One JSON object per line: for log shippers (the default when not on a terminal)."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        entry = _fields(record, self.role)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class PlainFormatter(logging.Formatter):
    """`12:00:01.234 INFO  learn service.worker.loop: published version=3 [request-id]`: for
    people reading a terminal; the traceback follows on its own lines."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        entry = _fields(record, self.role)
        extras = " ".join(f"{k}={v}" for k, v in entry.items() if k not in _PLAIN_HEAD)
        request_id = entry["request_id"]
        line = (f"{str(entry['ts'])[11:23]} {record.levelname:<7} {self.role} {record.name}: "
                f"{entry['message']}{' ' + extras if extras else ''}"
                f"{f' [{request_id}]' if request_id != '-' else ''}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


_PLAIN_HEAD = {"ts", "level", "role", "logger", "request_id", "message"}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str, role: str, log_format: str = "auto") -> None:
    """Log to stderr at `level`: plain lines on a terminal, JSON lines otherwise ("auto"),
    or the format named."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    plain = log_format == "plain" or (log_format == "auto" and handler.stream.isatty())
    handler.setFormatter(PlainFormatter(role) if plain else JsonFormatter(role))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Everything a process prints goes through the same lines: uncaught exceptions (the main
    # thread's and other threads'), and warnings.
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    logging.captureWarnings(True)


def _log_uncaught(kind: type[BaseException], exc: BaseException,
                  traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, traceback)
        return
    logging.getLogger("service").critical("uncaught exception, exiting",
                                          exc_info=(kind, exc, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    logging.getLogger("service").error(
        "uncaught exception in thread %s", args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
