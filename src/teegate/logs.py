"""Structured logs: one key-value event per line on stderr, never any content."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(*, json_lines: bool = False, level: int = logging.INFO) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    if level <= logging.DEBUG:
        logging.basicConfig(stream=sys.stderr, level=level, force=True)
        # SQLAlchemy holds its own loggers at WARNING unless told: at DEBUG every
        # statement, its parameters and the rows it returns are logged too.
        logging.getLogger("sqlalchemy").setLevel(level)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
