"""Request counters, so tests can prove what did (and did not) reach the upstream."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Stats:
    """Counters of requests received, and a gauge of chat requests being served.

    `chat_in_flight` lets a test prove that a client that went away left no
    generation running; it is a gauge, so `reset` leaves it alone.
    """

    chat_requests: int = 0
    embeddings_requests: int = 0
    models_requests: int = 0
    chat_in_flight: int = 0

    def reset(self) -> None:
        self.chat_requests = 0
        self.embeddings_requests = 0
        self.models_requests = 0

    def snapshot(self) -> dict[str, int]:
        return {
            "chat_requests": self.chat_requests,
            "embeddings_requests": self.embeddings_requests,
            "models_requests": self.models_requests,
            "chat_in_flight": self.chat_in_flight,
        }
