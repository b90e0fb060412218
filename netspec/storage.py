"""The database that holds a sweep's Optuna study: opened with clear errors, and kept through outages.

A sweep's study lives in an Optuna RDB storage: an SQLite file in the sweep folder, or any
database URL (`--storage postgresql://user@host/db`) that workers on several machines share.
This module opens it, turning every way a URL can fail (no driver, wrong password, unknown host,
nothing listening, no such database) into one UsageError that names the server and says what to
do, before anything is written. Once open, every storage call is retried while the database is
unreachable (a server restart, a network blip), with one line when the connection is lost and
one when it is back, so that a sweep outlives a restart of its database server.

Optuna's heartbeat notices a worker that died: every running trial records a heartbeat each
`NETSPEC_SWEEP_HEARTBEAT` seconds (default 20), and a trial without one for
`NETSPEC_SWEEP_GRACE` seconds (default 60) is failed by the next worker that looks, and retried
(it continues from its run folder's last checkpoint).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from netspec.errors import NetspecError, UsageError

Reporter = Callable[[str], None]

# Environment settings (whole seconds), read when a storage is opened.
HEARTBEAT_ENV, GRACE_ENV, RETRY_ENV = "NETSPEC_SWEEP_HEARTBEAT", "NETSPEC_SWEEP_GRACE", "NETSPEC_STORAGE_RETRY"
DEFAULTS = {HEARTBEAT_ENV: 20, GRACE_ENV: 60, RETRY_ENV: 600}
MAX_RETRIES = 3  # a trial whose worker died is run again at most this often
CONNECT_TIMEOUT = 10  # seconds to wait for a PostgreSQL server to answer a new connection


class StorageLost(NetspecError):
    """The study's database stayed unreachable for longer than the retry period."""


def quiet_optuna() -> Any:
    """The optuna module, quiet: netspec reports each trial itself, and uses Optuna's experimental
    heartbeat, retry callback and matplotlib plots on purpose."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def setting(name: str) -> int:
    text = os.environ.get(name)
    if text is None:
        return DEFAULTS[name]
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise UsageError(f"{name}={text}: give a whole number of seconds, at least 1")
    return value


def shown_url(url: str) -> str:
    """The URL with its password hidden (for messages)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: nothing to hide
        return url


def server_of(url: str) -> str:
    """'host:port' of a database server URL ('' for a file database such as SQLite)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return ""
    default_port = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}.get(parsed.get_backend_name())
    return f"{parsed.host or 'localhost'}:{parsed.port or default_port or '?'}"


def _check_port(url: str, shown: str) -> None:
    """A URL whose port cannot be one (99999, abc) is refused before any connection is tried."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        port = make_url(url).port
    except ValueError:
        raise UsageError(f"--storage {shown}: the port is not a number (e.g. postgresql://user@host:5432/db)") from None
    except ArgumentError:
        return  # not a URL at all: open_storage says so
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"--storage {shown}: port {port} is out of range (1 to 65535)")


def open_storage(url: str, report: Reporter = print, *, attempts: int = 5) -> Any:
    """Optuna's storage at a database URL, with heartbeats and retries; a URL it cannot use is a UsageError."""
    from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError

    quiet_optuna()
    heartbeat, grace, retry_for = setting(HEARTBEAT_ENV), setting(GRACE_ENV), setting(RETRY_ENV)
    if grace <= heartbeat:
        raise UsageError(
            f"{GRACE_ENV}={grace} must be longer than {HEARTBEAT_ENV}={heartbeat}, or live trials would look dead"
        )
    shown = shown_url(url)
    _check_port(url, shown)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}  # a pooled connection that died is replaced
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    attempt = 0
    while True:
        attempt += 1
        try:
            storage = _retrying_storage_class()(
                url,
                heartbeat_interval=heartbeat,
                grace_period=grace,
                heartbeat_stale_trial_callback=_StaleTrialRetry(report, grace),
                engine_kwargs=engine_kwargs,
            )
        except ArgumentError:
            raise UsageError(
                f"--storage {shown}: not a database URL (e.g. sqlite:///study.db, postgresql://user@host/db)"
            ) from None
        except ImportError as exc:
            scheme = url.split(":", 1)[0]
            hint = (
                "pip install 'netspec[postgres]' (psycopg)"
                if scheme.startswith("postgresql")
                else "e.g. pymysql for mysql+pymysql://"
            )
            raise UsageError(f"--storage {shown}: no Python driver for {scheme} is installed ({exc}); {hint}") from None
        except (IntegrityError, OperationalError, ProgrammingError) as exc:
            # Workers that start together on a new database all create Optuna's tables and version rows
            # (check, then insert); the losers of that race find them in place on the next try.
            if attempt < attempts and (isinstance(exc, IntegrityError) or "already exists" in str(exc)):
                time.sleep(0.1 * attempt)
                continue
            raise UsageError(f"--storage {shown}: {explain(url, exc.orig)}") from None
        storage.watch(url, report, retry_for)
        return storage


def explain(url: str, error: BaseException) -> str:
    """What went wrong when connecting to the database at `url`, and what to do about it."""
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    server = server_of(url)
    if not server:
        return f"cannot use this database ({reason})"
    host = server.rsplit(":", 1)[0]
    lowered = text.lower()
    checks = [
        ("password authentication failed", "the server refused the login ({detail}); check the user and password "
         "(in the URL, PGPASSWORD or ~/.pgpass)"),
        ("does not exist", "{detail}; create it on the server first (e.g. createdb -h HOST -U USER NAME)"),
        ("no pg_hba.conf entry", "the server does not accept this machine, user or database ({detail}); add a "
         "pg_hba.conf entry on the server"),
        ("connection refused", "nothing accepts connections there (connection refused); is the server running, "
         "on this port, and listening on this address (listen_addresses)?"),
        ("failed to resolve host", f"the host name {host} does not resolve; check the host in the URL"),
        ("could not translate host name", f"the host name {host} does not resolve; check the host in the URL"),
        ("timeout expired", f"no answer within {CONNECT_TIMEOUT} s; check the host, the port and any firewall"),
        ("no route to host", "no route to the host; check the address and the network"),
    ]  # fmt: skip
    for needle, message in checks:
        if needle in lowered:
            detail = reason.split("FATAL:", 1)[-1].strip() if "FATAL:" in reason else reason
            return f"cannot connect to the database server at {server}: " + message.format(detail=detail)
    return f"cannot use the database at {server} ({reason})"


def is_connection_lost(exc: BaseException) -> bool:
    """An error that means the database could not be reached (worth retrying), not a wrong request."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    seen: BaseException | None = exc
    for _ in range(5):  # Optuna wraps SQLAlchemy's error in StorageInternalError
        if seen is None:
            return False
        if isinstance(seen, (OperationalError, InterfaceError)):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _driver_message(exc: BaseException) -> str:
    """The database driver's own words for an error that SQLAlchemy and Optuna wrapped."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        original = getattr(seen, "orig", None)
        if original is not None:
            exc = original
            break
        seen = seen.__cause__ or seen.__context__
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


class _StaleTrialRetry:
    """Optuna's heartbeat callback: retry a trial whose worker stopped sending heartbeats, and say so."""

    def __init__(self, report: Reporter, grace: int) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self.report, self.grace = report, grace
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)

    def __call__(self, study: Any, trial: Any) -> None:
        self.report(
            f"trial {trial.number} sent no heartbeat for {self.grace} s (its worker died or lost the database); "
            "it is retried and continues from its run folder's last checkpoint"
        )
        self.retry(study, trial)


# The storage methods that read or write the database (retried through outages); the rest are local.
_DATABASE_METHODS = [
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
    "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
    "get_best_trial", "get_trial_number_from_id", "get_n_trials", "record_heartbeat", "_get_stale_trial_ids",
    # the ones Optuna's cache layer calls directly
    "_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials",
]  # fmt: skip


@functools.cache
def _retrying_storage_class() -> type:
    from optuna.storages import RDBStorage

    class RetryingStorage(RDBStorage):  # type: ignore[misc]
        """RDBStorage whose database calls wait for an unreachable database to come back."""

        _url, _report, _retry_for = "", print, 600
        _lock = threading.Lock()
        _lost_since: float | None = None
        _given_up = False
        _local = threading.local()

        def watch(self, url: str, report: Reporter, retry_for: int) -> None:
            self._url, self._report, self._retry_for = url, report, retry_for
            self._lock = threading.Lock()

        def _call(self, method: Callable[..., Any], name: str, *args: Any, **kwargs: Any) -> Any:
            if getattr(self._local, "inside", False):  # an outer call retries the whole operation
                return method(self, *args, **kwargs)
            self._local.inside = True
            try:
                return self._retried(method, name, *args, **kwargs)
            finally:
                self._local.inside = False

        def _retried(self, method: Callable[..., Any], name: str, *args: Any, **kwargs: Any) -> Any:
            pause = 0.5
            while True:
                if self._given_up:
                    raise self._lost_error()
                try:
                    result = method(self, *args, **kwargs)
                except Exception as exc:
                    if not is_connection_lost(exc):
                        raise
                    if self._outage(exc):
                        if name == "record_heartbeat":  # the heartbeat thread ends quietly; the trial's thread says
                            return None
                        raise self._lost_error() from None
                    time.sleep(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                self._back()
                return result

        def _outage(self, exc: BaseException) -> bool:
            """Note a failed call; True once the database has been unreachable for longer than allowed."""
            with self._lock:
                now = time.monotonic()
                if self._lost_since is None:
                    self._lost_since = now
                    reason = _driver_message(exc)
                    self._report(
                        f"lost the connection to the study's database {_where(self._url)} ({reason}); "
                        f"retrying for up to {self._retry_for} s"
                    )
                if now - self._lost_since > self._retry_for:
                    self._given_up = True
                return self._given_up

        def _back(self) -> None:
            if self._lost_since is None:
                return
            with self._lock:
                if self._lost_since is not None:
                    self._report(
                        f"reconnected to the study's database {_where(self._url)} after "
                        f"{time.monotonic() - self._lost_since:.0f} s; the sweep goes on"
                    )
                    self._lost_since = None

        def _lost_error(self) -> StorageLost:
            return StorageLost(
                f"the study's database {_where(self._url)} stayed unreachable for {self._retry_for} s "
                f"({RETRY_ENV}); this worker stops, and its trial's run folder keeps the last checkpoint: run the "
                "same command again once the database is back, and the trial continues"
            )

    def wrap(name: str) -> Callable[..., Any]:
        method = getattr(RDBStorage, name)

        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            return self._call(method, name, *args, **kwargs)

        call.__name__ = name
        return call

    for name in _DATABASE_METHODS:
        if hasattr(RDBStorage, name):
            setattr(RetryingStorage, name, wrap(name))
    return RetryingStorage


def _where(url: str) -> str:
    server = server_of(url)
    return f"at {server}" if server else f"({shown_url(url)})"
