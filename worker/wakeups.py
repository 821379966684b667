"""What wakes the outbox relay: a notification when the outbox has new work.

The relay does not poll for new rows; it is told, on the channel
:data:`latency_lab.service.outbox.WAKEUP_CHANNEL`, when the earliest of the rows that changed is
due (the payload):

* **PostgreSQL** — a trigger on the outbox sends ``NOTIFY`` in the transaction that inserts or
  reschedules rows (:func:`latency_lab.service.outbox.install_wakeup_trigger`);
  :class:`PostgresListener` ``LISTEN``\\ s on a psycopg connection of its own and waits on it.
* **SQLite**, which cannot notify — the service publishes the same payload on the Redis channel of
  that name after its delivery attempt (:func:`latency_lab.service.offload.deliver`);
  :class:`RedisListener` subscribes.

A listener never raises and sends nothing while it waits. When its connection breaks it goes
deaf (``listening`` is False: the relay then polls) and connects again on a later wait, at most
once per ``RECONNECT_EVERY_S``; once it hears again it reports "due now", since anything may have
happened while it was deaf.

Usage::

    listener = listener_for(engine, settings.redis_url)
    for due in listener.wait(1.0):  # notifications heard within a second (naive UTC times)
        ...
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any, Protocol

import psycopg
import redis
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from latency_lab.core.shared_state import connect_redis
from latency_lab.service import outbox
from latency_lab.service.models import utcnow

log = logging.getLogger(__name__)

RECONNECT_EVERY_S = 1.0
CONNECT_TIMEOUT_S = 2


class Wakeups(Protocol):
    """Notifications that the outbox has work, each with when it is due."""

    @property
    def listening(self) -> bool: ...

    def wait(self, timeout_s: float) -> list[datetime]: ...

    def close(self) -> None: ...


class Deaf:
    """No notifications (the trigger could not be installed): the relay polls."""

    listening = False

    def wait(self, timeout_s: float) -> list[datetime]:
        time.sleep(max(0.0, timeout_s))
        return []

    def close(self) -> None:
        pass


class Listener(ABC):
    """A connection that receives notifications, reconnected when it breaks."""

    errors: tuple[type[Exception], ...] = ()

    def __init__(self) -> None:
        self.listening = False
        self.reconnects = 0  # times it heard again after its connection broke
        self._listened = False
        self._last_attempt = float("-inf")

    def wait(self, timeout_s: float) -> list[datetime]:
        if not self.listening:
            return self._reconnect(timeout_s)
        try:
            return [outbox.due_of(payload) for payload in self._receive(timeout_s)]
        except self.errors as exc:
            log.warning("outbox relay: stopped hearing notifications (%s); polling", exc)
            self._drop()
            return []

    def _reconnect(self, timeout_s: float) -> list[datetime]:
        if time.monotonic() - self._last_attempt < RECONNECT_EVERY_S:
            time.sleep(max(0.0, timeout_s))
            return []
        self._last_attempt = time.monotonic()
        try:
            self._connect()
        except self.errors as exc:
            log.debug("outbox relay: cannot listen yet (%s)", exc)
            self._drop()
            return []
        if self._listened:
            self.reconnects += 1
            log.info("outbox relay: hearing notifications again")
        self.listening = self._listened = True
        return [utcnow()]  # deaf until now: look at once

    def _drop(self) -> None:
        self.listening = False
        try:
            self.close()
        except Exception:  # already broken: nothing to release cleanly
            log.debug("outbox relay: closing a broken listener", exc_info=True)

    @abstractmethod
    def _connect(self) -> None: ...

    @abstractmethod
    def _receive(self, timeout_s: float) -> list[str]:
        """Payloads heard within ``timeout_s`` (returns at the first, with any that came along)."""

    @abstractmethod
    def close(self) -> None: ...


class PostgresListener(Listener):
    """``LISTEN`` on a psycopg connection of its own (autocommit), made like the engine's."""

    errors = (psycopg.Error,)

    def __init__(self, connect_args: dict[str, Any]) -> None:
        super().__init__()
        self._connect_args = connect_args
        self._connection: psycopg.Connection[Any] | None = None

    @classmethod
    def for_engine(cls, engine: Engine) -> PostgresListener:
        _, params = engine.dialect.create_connect_args(engine.url)
        params.pop("context", None)  # SQLAlchemy's adapters: plain strings are enough here
        return cls(dict(params))

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection (tests end it to cut the line)."""
        return self._connection.info.backend_pid if self._connection is not None else None

    def _connect(self) -> None:
        connection = psycopg.connect(
            **self._connect_args, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
        )
        try:
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(outbox.WAKEUP_CHANNEL)))
        except BaseException:
            connection.close()  # else every failed attempt (once a second) leaks a connection
            raise
        self._connection = connection

    def _receive(self, timeout_s: float) -> list[str]:
        assert self._connection is not None
        heard = list(self._connection.notifies(timeout=timeout_s, stop_after=1))
        if heard:
            heard += self._connection.notifies(timeout=0)
        return [note.payload for note in heard]

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()


class RedisListener(Listener):
    """A subscription to the Redis channel; redis-py's own retries are off, so a broken
    connection surfaces here (and is reported as a reconnection) instead of being hidden."""

    errors = (redis.RedisError,)

    def __init__(self, redis_url: str | None) -> None:
        super().__init__()
        self._redis_url = redis_url
        self._client: redis.Redis | None = None
        self._pubsub: Any = None

    def _connect(self) -> None:
        self._client = connect_redis(self._redis_url, socket_timeout_s=1.0, retries=0)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(outbox.WAKEUP_CHANNEL)

    def _receive(self, timeout_s: float) -> list[str]:
        heard = []
        message = self._pubsub.get_message(timeout=timeout_s)
        while message is not None:
            heard.append(_text(message["data"]))
            message = self._pubsub.get_message(timeout=0)
        return heard

    def close(self) -> None:
        pubsub, client, self._pubsub, self._client = self._pubsub, self._client, None, None
        if pubsub is not None:
            pubsub.close()
        if client is not None:
            client.close()


def _text(data: Any) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)


def listener_for(engine: Engine, redis_url: str | None) -> Wakeups:
    """PostgreSQL: its trigger and ``LISTEN``; SQLite: Redis. Deaf when the trigger cannot be
    installed (the relay then polls, and says so)."""
    if engine.dialect.name != "postgresql":
        return RedisListener(redis_url)
    try:
        outbox.install_wakeup_trigger(engine)
    except SQLAlchemyError as exc:
        log.warning("outbox relay: no NOTIFY trigger (%s): polling instead", exc)
        return Deaf()
    return PostgresListener.for_engine(engine)
