# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One way to reach Redis for every module.

The argument spec and its checks, the client (plain, TLS, mutual TLS, Sentinel), the broker
settings Celery gets for the same server, and the one place that turns Redis errors into words:
``ping`` for the connect check and ``redis_errors`` for every command after it.
"""

from __future__ import annotations

import ast
import contextlib
import math
import os
import re
import socket
import ssl
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

try:
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import InvalidResponse, NoPermissionError
    from redis.retry import Retry
    from redis.sentinel import MasterNotFoundError, Sentinel

    REDIS_IMPORT_ERROR = None
    _RESPONSE_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.ResponseError,)
    _PROTOCOL_ERRORS: tuple[type[BaseException], ...] = (InvalidResponse,)
    _CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
    )
except ImportError:  # pragma: no cover - reported through missing_required_lib
    redis = None
    Sentinel = None
    InvalidResponse = NoPermissionError = MasterNotFoundError = None
    ExponentialBackoff = Retry = None
    REDIS_IMPORT_ERROR = traceback.format_exc()
    # ``except ()`` catches nothing: without redis-py no Redis error can be raised either.
    _RESPONSE_ERRORS = _PROTOCOL_ERRORS = _CONNECTION_ERRORS = ()

from ansible.module_utils.basic import missing_required_lib

REDIS_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "redis_url": {"type": "str", "no_log": True},
    "redis_host": {"type": "str", "default": "localhost"},
    "redis_port": {"type": "int", "default": 6379},
    "redis_db": {"type": "int", "default": 0},
    "redis_username": {"type": "str"},
    "redis_password": {"type": "str", "no_log": True},
    "redis_tls": {"type": "bool", "default": False},
    "redis_tls_ca_path": {"type": "path"},
    "redis_tls_cert_path": {"type": "path"},
    "redis_tls_key_path": {"type": "path", "no_log": False},
    "redis_tls_validate_certs": {"type": "bool", "default": True},
    "redis_socket_timeout": {"type": "float", "default": 5.0},
    "redis_reconnect_timeout": {"type": "float", "default": 20.0},
    "sentinel_hosts": {"type": "list", "elements": "str"},
    "sentinel_service": {"type": "str"},
    "sentinel_password": {"type": "str", "no_log": True},
}
REDIS_MUTUALLY_EXCLUSIVE = [("redis_url", "sentinel_hosts")]
REDIS_REQUIRED_TOGETHER = [("sentinel_hosts", "sentinel_service")]

DEFAULT_PORT = 6379
DEFAULT_TIMEOUT = 5.0
DEFAULT_RECONNECT = 20.0
_CONNECT_CHECK = "check the connection"  # what ping() needs PING (and SELECT, AUTH) for
_URL_SCHEMES = ("redis", "rediss", "unix")
# The TLS settings a rediss:// URL may carry in its query (redis-py, kombu and Celery read them).
_URL_TLS_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class RedisConnectionError(Exception):
    """Redis could not be reached or refused us; the message is fit for a user."""


class RedisOptionError(RedisConnectionError, ValueError):
    """A connection option is invalid; nothing was attempted."""


class RedisAccessError(RedisConnectionError):
    """The server's ACL refused the user a command, a key or a channel (``NOPERM``).

    Attributes, for callers that shape a result: ``user`` (the ACL user, ``default`` when none
    is given), ``target`` (``describe_target``), ``kind`` (``command``, ``key``, ``channel`` or
    ``other``), ``refused`` (what was refused in words, such as ``the SET command``) and
    ``doing`` (what the module needed it for).
    """

    def __init__(self, message: str, *, user: str, target: str, kind: str, refused: str, doing: str) -> None:
        super().__init__(message)
        self.user = user
        self.target = target
        self.kind = kind
        self.refused = refused
        self.doing = doing


def redis_argument_spec(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The shared connection options plus a module's own."""
    spec = {name: dict(option) for name, option in REDIS_ARGUMENT_SPEC.items()}
    spec.update(extra)
    return spec


# --- where we connect -------------------------------------------------------------------------


class _Target(NamedTuple):
    host: str
    port: int
    db: int
    tls: bool
    socket_path: str | None = None

    @property
    def address(self) -> str:
        if self.socket_path:
            return self.socket_path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _port_problem(name: str, port: Any) -> str | None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return f"{name} must be a TCP port number from 1 to 65535, not {port}"
    return None


def _url_target(url: str) -> _Target:
    """Host, port, db and TLS of a redis_url, or RedisOptionError in words (never the URL)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RedisOptionError("redis_url has a port that is not a number from 1 to 65535") from None
    scheme = parts.scheme.lower()
    if scheme not in _URL_SCHEMES:
        shown = f"'{scheme}://'" if scheme else "none"
        raise RedisOptionError(f"redis_url must start with redis://, rediss:// (TLS) or unix://; its scheme is {shown}")
    if port == 0:
        raise RedisOptionError("redis_url has a port that is not a number from 1 to 65535")
    query = parse_qs(parts.query)
    db = _url_db(parts.path if scheme != "unix" else "", query)
    if scheme == "unix":
        return _Target("localhost", DEFAULT_PORT, db, False, socket_path=unquote(parts.path) or "/")
    host = unquote(parts.hostname or "") or "localhost"
    return _Target(host, port or DEFAULT_PORT, db, scheme == "rediss")


def _url_db(path: str, query: dict[str, list[str]]) -> int:
    if "db" in query:  # redis-py lets the query win over the path
        value = query["db"][-1]
        if not value.isdigit():
            raise RedisOptionError(f"redis_url asks for database '{value[:40]}' (?db=): it must be a number, 0 or more")
        return int(value)
    number = unquote(path).strip("/")
    if not number:
        return 0
    if not number.isdigit():
        raise RedisOptionError(
            f"redis_url names database '{number[:40]}' in its path: the path must be a database number such as /0"
        )
    return int(number)


def _target(params: Mapping[str, Any]) -> _Target:
    if params.get("redis_url"):
        return _url_target(params["redis_url"])
    return _Target(
        params.get("redis_host") or "localhost",
        _option(params, "redis_port", DEFAULT_PORT),
        _option(params, "redis_db", 0),
        bool(params.get("redis_tls")),
    )


def _option(params: Mapping[str, Any], name: str, default: Any) -> Any:
    value = params.get(name)
    return default if value is None else value


def _sentinel_addresses(hosts: Sequence[str]) -> list[tuple[str, int]]:
    addresses = []
    for entry in hosts:
        host, sep, port = str(entry).rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit():
            raise RedisOptionError(f"sentinel_hosts entry '{entry}' is not of the form host:port")
        problem = _port_problem(f"the port of sentinel_hosts entry '{entry}'", int(port))
        if problem:
            raise RedisOptionError(problem)
        addresses.append((host, int(port)))
    return addresses


def describe_target(params: Mapping[str, Any]) -> str:
    """Where we connect, for messages: never includes a password."""
    if params.get("sentinel_hosts"):
        return f"sentinel {','.join(params['sentinel_hosts'])} service {params.get('sentinel_service')}"
    try:
        target = _target(params)
    except RedisOptionError:
        return "the host of redis_url"
    # Never the URL itself: Ansible masks any text equal to a no_log value, so the message
    # would read "********". Host, port and db are what a user needs to see.
    suffix = " (redis_url)" if params.get("redis_url") else ""
    return f"{target.address}/{target.db}{suffix}"


def _user(params: Mapping[str, Any]) -> str:
    if params.get("redis_url") and not params.get("sentinel_hosts"):
        with contextlib.suppress(ValueError):
            name = urlsplit(params["redis_url"]).username
            if name:
                return unquote(name)
        return "default"
    return params.get("redis_username") or "default"


# --- validation -------------------------------------------------------------------------------


def validate_connection_params(params: Mapping[str, Any]) -> None:
    """Refuse, in words, options that cannot describe a Redis server (raises RedisOptionError).

    ``client_from_params`` calls it before it connects, so a port of 70000 is not reported as
    "connection refused" and ``redis_url: .../abc`` does not quietly mean db 0.
    """
    problem = _port_problem("redis_port", _option(params, "redis_port", DEFAULT_PORT))
    db = _option(params, "redis_db", 0)
    if isinstance(db, bool) or not isinstance(db, int) or db < 0:
        problem = problem or f"redis_db must be a database number, 0 or more, not {db}"
    timeout = _option(params, "redis_socket_timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        problem = problem or f"redis_socket_timeout must be a number of seconds greater than 0, not {timeout}"
    reconnect = _option(params, "redis_reconnect_timeout", DEFAULT_RECONNECT)
    if isinstance(reconnect, bool) or not isinstance(reconnect, (int, float)) or not 0 <= reconnect <= 3600:
        problem = problem or f"redis_reconnect_timeout must be a number of seconds from 0 to 3600, not {reconnect}"
    if problem:
        raise RedisOptionError(problem)
    if params.get("sentinel_hosts"):
        _sentinel_addresses(params["sentinel_hosts"])
        if not params.get("sentinel_service"):
            raise RedisOptionError("sentinel_service is required with sentinel_hosts: the name of the master set")
    elif params.get("redis_url"):
        _url_target(params["redis_url"])
    _validate_tls_files(params)


def _validate_tls_files(params: Mapping[str, Any]) -> None:
    if params.get("redis_tls_key_path") and not params.get("redis_tls_cert_path"):
        raise RedisOptionError("redis_tls_key_path needs redis_tls_cert_path, the client certificate of that key")
    if not _tls_enabled(params):
        return
    for option in ("redis_tls_ca_path", "redis_tls_cert_path", "redis_tls_key_path"):
        path = params.get(option)
        if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            raise RedisOptionError(f"{option} {path} is not a readable file on the host that runs the module")


# --- TLS --------------------------------------------------------------------------------------


def _tls_enabled(params: Mapping[str, Any]) -> bool:
    if params.get("redis_url") and not params.get("sentinel_hosts"):
        try:
            return _url_target(params["redis_url"]).tls
        except RedisOptionError:
            return False
    return bool(params.get("redis_tls"))


def _url_tls_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """TLS settings written in a rediss:// URL's query: they win, as in redis-py and kombu."""
    if not params.get("redis_url") or params.get("sentinel_hosts"):
        return {}
    query = parse_qs(urlsplit(params["redis_url"]).query)
    found: dict[str, Any] = {key: query[key][-1] for key in _URL_TLS_KEYS if key in query}
    if "ssl_cert_reqs" in found:
        found["ssl_cert_reqs"] = _CERT_REQS.get(found["ssl_cert_reqs"].lower(), found["ssl_cert_reqs"])
    if "ssl_check_hostname" in found:
        found["ssl_check_hostname"] = found["ssl_check_hostname"].lower() in ("1", "true", "yes", "on")
    return found


def tls_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The TLS keyword arguments of redis-py's SSLConnection, ``{}`` when TLS is off.

    The same dict is kombu's ``broker_use_ssl`` and Celery's ``redis_backend_use_ssl`` (kombu
    hands it to redis-py as it is). TLS is on with ``redis_tls`` or a ``rediss://`` URL; with
    ``redis_tls_validate_certs`` (the default) the server's certificate must be signed by
    ``redis_tls_ca_path`` (or a CA the system trusts) and name the host connected to.
    """
    if not _tls_enabled(params):
        return {}
    validate = params.get("redis_tls_validate_certs") is not False
    settings: dict[str, Any] = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED if validate else ssl.CERT_NONE,
        "ssl_check_hostname": validate,
    }
    for option, key in (
        ("redis_tls_ca_path", "ssl_ca_certs"),
        ("redis_tls_cert_path", "ssl_certfile"),
        ("redis_tls_key_path", "ssl_keyfile"),
    ):
        if params.get(option):
            settings[key] = params[option]
    settings.update(_url_tls_overrides(params))
    if settings["ssl_cert_reqs"] == ssl.CERT_NONE:
        settings["ssl_check_hostname"] = False  # Python refuses a host name check without verification
    return settings


# --- the client -------------------------------------------------------------------------------


def _timeout(params: Mapping[str, Any]) -> float:
    return float(_option(params, "redis_socket_timeout", DEFAULT_TIMEOUT))


def client_from_params(params: Mapping[str, Any], *, check: bool = True) -> redis.Redis:
    """A binary-safe client (``decode_responses=False``) built from the shared options.

    The options are validated first (``validate_connection_params``). With ``check`` the server
    is pinged so that a wrong address, password, certificate or ACL is reported here, once, in
    words, rather than as a traceback from whatever command comes first.
    """
    validate_connection_params(params)
    timeout = _timeout(params)
    common: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    tls = tls_settings(params)
    if params.get("sentinel_hosts"):
        client = _sentinel_client(params, common, tls)
    elif params.get("redis_url"):
        try:
            client = redis.Redis.from_url(params["redis_url"], **common, **tls)
        except ValueError as exc:
            raise RedisOptionError(f"redis_url is not a valid Redis URL: {exc}") from None
    else:
        client = redis.Redis(
            host=params.get("redis_host") or "localhost",
            port=_option(params, "redis_port", DEFAULT_PORT),
            db=_option(params, "redis_db", 0),
            username=params.get("redis_username"),
            password=params.get("redis_password"),
            **common,
            **({"ssl": True, **tls} if tls else {}),
        )
    if check:
        ping(client, params)
    reconnecting(client, float(_option(params, "redis_reconnect_timeout", DEFAULT_RECONNECT)))
    return client


def reconnecting(client: redis.Redis, seconds: float) -> redis.Redis:
    """From now on, a command whose connection breaks (Redis restarted, a Sentinel failover) is sent
    again on a new connection, with backoff from 0.05 s to 1 s, for about ``seconds``; 0 retries nothing.

    Installed after the connect check, so a wrong address or password still fails at once. Our
    multi-step writes are Lua scripts or MULTI/EXEC transactions that check the state they change,
    so one sent again after a lost reply finds its work done.
    """
    if seconds <= 0:
        return client
    backoff, retries, waited = ExponentialBackoff(cap=1.0, base=0.05), 0, 0.0
    while waited < seconds:
        retries += 1
        waited += backoff.compute(retries)
    errors = [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    # OSError too: a new connection to a server that is down fails with ConnectionRefusedError.
    retry = Retry(backoff, retries, supported_errors=(*errors, OSError))
    pool = client.connection_pool
    pool.connection_kwargs.update(retry=retry, retry_on_error=errors)
    for connection in [*pool._available_connections, *pool._in_use_connections]:
        connection.retry, connection.retry_on_error = retry, list(errors)
    return client


def _sentinel_client(params: Mapping[str, Any], common: dict[str, Any], tls: dict[str, Any]) -> redis.Redis:
    sentinel = Sentinel(
        _sentinel_addresses(params["sentinel_hosts"]),
        sentinel_kwargs=_sentinel_kwargs(params),
        db=_option(params, "redis_db", 0),
        username=params.get("redis_username"),
        password=params.get("redis_password"),
        **common,
        **({"ssl": True, **tls} if tls else {}),
    )
    return sentinel.master_for(params["sentinel_service"])


def _sentinel_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    timeout = _timeout(params)
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if params.get("sentinel_password"):
        kwargs["password"] = params["sentinel_password"]
    return kwargs


def ping(client: redis.Redis, params: Mapping[str, Any]) -> None:
    """PING the server: the connect check. Any failure is a RedisConnectionError in words.

    A refused password, an unreachable or non-Redis server, a TLS certificate that does not
    verify, a missing client certificate, Sentinels that do not know the service, a database
    number the server does not have, and an ACL that refuses PING (RedisAccessError).
    """
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        explained = _explain(params, exc, _CONNECT_CHECK, ())
        if explained is not None:
            raise explained from None
        raise RedisConnectionError(
            f"Redis at {describe_target(params)} answered PING with an error: {_clean(str(exc))}"
        ) from None


@contextlib.contextmanager
def redis_errors(params: Mapping[str, Any], doing: str, *, keys: Sequence[str] = ()) -> Iterator[None]:
    """Turn the Redis errors raised inside the block into RedisConnectionError in words.

    ``doing`` says what the module needed the commands for, as the words that follow
    "needed to" (``"suspend the RQ workers of the queues orders, emails"``). ``keys`` are the
    keys the block works on: the server does not say which key it refused, so they are named.

    - An ACL refusal (``NOPERM``) becomes RedisAccessError: which user (``redis_username`` or
      the URL's user, else ``default``), at which host:port/db, the refused command (``the SET
      command``, with the ACL rule to grant it), key or channel, and ``doing``.
    - A write refused by a read-only replica, a lost connection, a timeout, or a server that
      does not speak Redis become RedisConnectionError with the same target and ``doing``.
    - Anything else (WRONGTYPE, the module's own exceptions, file errors) passes unchanged.

    The refused command did nothing; commands before it in the block did run, so a caller
    that must change all or nothing checks its rights first or uses one MULTI/EXEC.
    Safe to import and use without redis-py: then nothing is caught.
    """
    try:
        yield
    except _RESPONSE_ERRORS + _PROTOCOL_ERRORS + _CONNECTION_ERRORS as exc:
        explained = _explain(params, exc, doing, keys)
        if explained is None:
            raise
        raise explained from None
    except Exception as exc:
        # kombu re-raises Redis errors as its own (OperationalError), with the Redis error as cause.
        cause = _redis_cause(exc)
        explained = _explain(params, cause, doing, keys) if cause is not None else None
        if explained is None:
            raise
        raise explained from None


def _redis_cause(exc: BaseException) -> BaseException | None:
    """The Redis error a library wrapped ``exc`` around, if any."""
    seen = 0
    cause = exc.__cause__ or exc.__context__
    while cause is not None and seen < 10:
        if _RESPONSE_ERRORS and isinstance(cause, _RESPONSE_ERRORS + _PROTOCOL_ERRORS + _CONNECTION_ERRORS):
            return cause
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return None


# --- errors in words --------------------------------------------------------------------------


def _explain(
    params: Mapping[str, Any], exc: BaseException, doing: str, keys: Sequence[str]
) -> RedisConnectionError | None:
    """The user's message for a Redis error, or None for errors that are the caller's business."""
    target = describe_target(params)
    text = str(exc)
    if MasterNotFoundError is not None and isinstance(exc, MasterNotFoundError):
        return _sentinel_problem(params)
    if params.get("sentinel_hosts") and "unknown command 'SENTINEL'" in text:
        return _sentinel_problem(params)  # a plain Redis named in sentinel_hosts
    if isinstance(exc, redis.exceptions.AuthenticationError) or text.startswith(("NOAUTH", "WRONGPASS")):
        return RedisConnectionError(f"Redis at {target} refused the credentials: {_clean(text)}")
    if _is_permission_error(exc):
        return _access_error(params, exc, doing, keys)
    if isinstance(exc, redis.exceptions.ReadOnlyError) or text.startswith("READONLY"):
        return RedisConnectionError(
            f"Redis at {target} is a read-only replica and refused a write needed to {doing}: "
            "connect to the master (or through sentinel_hosts)"
        )
    if "DB index is out of range" in text:
        return RedisConnectionError(
            f"Redis at {target} has no database {_target_db(params)} (its 'databases' setting is lower): "
            "choose another redis_db"
        )
    if isinstance(exc, _PROTOCOL_ERRORS):
        return RedisConnectionError(
            f"The server at {_address(params)} did not answer as Redis: {_protocol_reason(text)}"
        )
    if isinstance(exc, _CONNECTION_ERRORS):
        return _connection_problem(params, exc, doing)
    return None


def _target_db(params: Mapping[str, Any]) -> int:
    try:
        return _target(params).db
    except RedisOptionError:
        return 0


def _address(params: Mapping[str, Any]) -> str:
    if params.get("sentinel_hosts"):
        return describe_target(params)
    try:
        return _target(params).address
    except RedisOptionError:
        return "the host of redis_url"


def _connection_problem(params: Mapping[str, Any], exc: BaseException, doing: str) -> RedisConnectionError:
    target = describe_target(params)
    cause = _os_cause(exc)
    if isinstance(cause, ssl.SSLError):
        problem = _tls_problem(cause)
        if problem:
            return RedisConnectionError(f"Redis at {target} {problem}")
    dropped = isinstance(cause, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError))
    if dropped and doing == _CONNECT_CHECK and _tls_enabled(params):
        return _dropped_tls_connection(params, target, exc, cause)
    reason = _reason(exc)
    hint = _tls_hint(params, exc, reason)
    if doing == _CONNECT_CHECK:
        return RedisConnectionError(f"Cannot reach Redis at {target}: {reason}{hint}")
    if isinstance(exc, redis.exceptions.TimeoutError):
        return RedisConnectionError(
            f"Redis at {target} did not answer within redis_socket_timeout ({_timeout(params):g} s) "
            f"while trying to {doing}"
        )
    return RedisConnectionError(f"Lost the connection to Redis at {target} while trying to {doing}: {reason}{hint}")


def _dropped_tls_connection(
    params: Mapping[str, Any], target: str, exc: BaseException, cause: BaseException
) -> RedisConnectionError:
    # In TLS 1.3 a server checks the client certificate after the handshake: its alert ("certificate
    # required", "unsupported certificate") races with its closing the socket and can be lost.
    detail = "" if isinstance(cause, ssl.SSLEOFError) else f" ({_reason(exc)})"
    if params.get("redis_tls_cert_path"):
        advice = "redis_tls_cert_path must be a client certificate signed by a CA it trusts"
    else:
        advice = "set redis_tls_cert_path and redis_tls_key_path"
    return RedisConnectionError(
        f"Redis at {target} closed the TLS connection{detail}: if it requires client certificates, {advice}"
    )


def _tls_problem(cause: ssl.SSLError) -> str | None:
    """What a TLS failure means for the user, after "Redis at <target>"; None if not TLS's fault."""
    reason = str(cause.reason or "")
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = str(cause.verify_message or reason).rstrip(".")
        if "mismatch" in detail:
            return (
                f"has a TLS certificate that does not name the host connected to ({detail}): connect by a name "
                "the certificate carries (redis_tls_validate_certs: false turns verification off)"
            )
        return (
            f"has a TLS certificate that could not be verified ({detail}): set redis_tls_ca_path to the CA "
            "that signs it (redis_tls_validate_certs: false turns verification off)"
        )
    if cause.library in ("PEM", "X509"):
        return (
            f"was not contacted: the TLS files could not be loaded ({_tls_words(reason)}): redis_tls_ca_path, "
            "redis_tls_cert_path and redis_tls_key_path must be PEM files, the key matching the certificate"
        )
    if "CERTIFICATE_REQUIRED" in reason:
        return (
            "refused the TLS connection: it requires a client certificate "
            "(set redis_tls_cert_path and redis_tls_key_path)"
        )
    if "ALERT" in reason and ("CERTIFICATE" in reason or "UNKNOWN_CA" in reason):
        return (
            f"refused the TLS client certificate ({_tls_words(reason)}): redis_tls_cert_path must be a client "
            "certificate signed by a CA the server trusts"
        )
    return None


def _tls_words(reason: str) -> str:
    """OpenSSL's SSLV3_ALERT_BAD_CERTIFICATE as "alert: bad certificate"."""
    words = re.sub(r"^(SSLV3|TLSV1|TLSV13)_", "", reason).replace("_", " ").lower()
    return re.sub(r"^alert ", "alert: ", words)


def _tls_hint(params: Mapping[str, Any], exc: BaseException, reason: str) -> str:
    if _tls_enabled(params) and "handshake" in reason:
        return " (the TLS handshake got no answer: does that port serve TLS?)"
    if not _tls_enabled(params) and re.search(r"reset by peer|closed by server", reason):
        return (
            " (if that port serves TLS, set redis_tls: true or use a rediss:// URL;"
            " if it is not Redis, fix the address)"
        )
    return ""


def _os_cause(exc: BaseException) -> BaseException | None:
    """The OSError (socket, TLS, file) that redis-py wrapped, if any."""
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        if isinstance(seen, OSError) and not isinstance(seen, redis.exceptions.RedisError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: BaseException) -> str:
    cause = _os_cause(exc)
    if isinstance(cause, ssl.SSLEOFError):
        return "the server closed the connection"
    if isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLCertVerificationError) and cause.reason:
        return f"TLS error: {_tls_words(str(cause.reason))}"
    if isinstance(cause, socket.timeout) or (cause is not None and "timed out" in str(cause)):
        return _clean(str(cause)) or "timed out"
    if isinstance(cause, OSError) and cause.strerror:
        return _lower_first(cause.strerror)
    return _clean(str(exc))


def _clean(message: str) -> str:
    """redis-py's text without its prefixes, the pipeline's echo of the arguments, or file:line."""
    message = re.sub(r"^Command # \d+ \(.*\) of pipeline caused error: ", "", message, flags=re.S)
    message = re.sub(r"^Error \d+ connecting to \S+?\. ", "", message)
    message = re.sub(r"\s*\(?_ssl\.c:\d+\)?:?\s*", " ", message).strip()
    return _lower_first(message.rstrip(".").strip())


def _lower_first(text: str) -> str:
    """ "Connection refused" reads "connection refused" after a colon; "DB index" stays."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _protocol_reason(text: str) -> str:
    raw = re.sub(r"^Protocol Error: ", "", text)
    with contextlib.suppress(ValueError, SyntaxError):
        value = ast.literal_eval(raw)  # redis-py writes the reply bytes as a Python literal
        if isinstance(value, bytes):
            raw = value.decode("latin-1")
    line = "".join(ch for ch in raw.splitlines()[0] if ch.isprintable()) if raw.strip() else ""
    if not line:
        return "it sent a reply that is not the Redis protocol"
    return f"its reply began with {line[:80]}"


def _is_permission_error(exc: BaseException) -> bool:
    if NoPermissionError is not None and isinstance(exc, NoPermissionError):
        return True
    text = _clean(str(exc))
    return text.startswith("NOPERM") or "can't access at least one of the" in text or "no permissions to" in text


_COMMAND_REFUSED = re.compile(r"no permissions to run the '([^']+)' command")
_KEY_REFUSED = re.compile(r"no permissions to access one of the keys|can't access at least one of the keys")
_CHANNEL_REFUSED = re.compile(r"no permissions to access one of the channels|can't publish to the channel")


def _access_error(params: Mapping[str, Any], exc: BaseException, doing: str, keys: Sequence[str]) -> RedisAccessError:
    text = _clean(str(exc))
    command = _COMMAND_REFUSED.search(text)
    if command:
        kind, rule = "command", command.group(1).lower()
        refused = f"the {rule.replace('|', ' ').upper()} command"
        what, grant = f"run {refused}", f"the ACL rule +{rule}"
    elif _KEY_REFUSED.search(text):
        kind, refused = "key", _named("key", keys) or "one of the keys it used"
        what, grant = f"access {refused}", "an ACL key pattern (~pattern) that covers it"
    elif _CHANNEL_REFUSED.search(text):
        kind, refused = "channel", "one of the channels it used"
        what, grant = f"use {refused}", "an ACL channel pattern (&pattern) that covers it"
    else:
        kind, refused = "other", re.sub(r"^NOPERM\s*", "", text)
        what, grant = f"do this ({refused})", "the missing ACL rule"
    user, target = _user(params), describe_target(params)
    message = f"Redis user '{user}' at {target} may not {what}, needed to {doing} (grant it with {grant})"
    return RedisAccessError(message, user=user, target=target, kind=kind, refused=refused, doing=doing)


def _named(kind: str, names: Sequence[str]) -> str:
    names = [str(name) for name in names]
    if not names:
        return ""
    if len(names) == 1:
        return f"the {kind} {names[0]}"
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"one of the {kind}s {shown}"


def _sentinel_problem(params: Mapping[str, Any]) -> RedisConnectionError:
    """Why no Sentinel gave a master: each one is asked, and the answers are said in words."""
    service = params.get("sentinel_service")
    addresses = _sentinel_addresses(params["sentinel_hosts"])
    answers = [_ask_sentinel(host, port, service, params) for host, port in addresses]
    tried = "; ".join(f"{address} {answer}" for address, answer, _ in answers)
    if not any(answered for _, _, answered in answers):
        return RedisConnectionError(
            f"None of the Redis Sentinels answered ({tried}): check sentinel_hosts and that the Sentinels run"
        )
    return RedisConnectionError(
        f"No Redis Sentinel gave a usable master for sentinel_service '{service}' ({tried}): "
        "check sentinel_service and the state of the master"
    )


def _ask_sentinel(host: str, port: int, service: str | None, params: Mapping[str, Any]) -> tuple[str, str, bool]:
    """(address, what it said in words, whether it answered at all)."""
    address = _Target(host, port, 0, False).address
    probe = redis.Redis(host=host, port=port, **_sentinel_kwargs(params))
    try:
        masters = probe.sentinel_masters()
    except redis.exceptions.AuthenticationError:
        return address, "refused the sentinel_password", True
    except redis.exceptions.ResponseError as exc:
        return address, f"answered with an error ({_clean(str(exc))}): is it a Sentinel?", True
    except InvalidResponse:
        return address, "did not answer as Redis", True
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        return address, f"did not answer ({_reason(exc)})", False
    finally:
        probe.close()
    state = masters.get(service)
    if state is None:
        known = ", ".join(sorted(masters)) or "none"
        return address, f"does not monitor a master named '{service}' (it monitors: {known})", True
    master = f"{state.get('ip')}:{state.get('port')}"
    if state.get("is_sdown") or state.get("is_odown") or not state.get("is_master"):
        return address, f"reports the master of '{service}' at {master} as down", True
    return address, f"names the master {master} as up now (it may have just failed over)", True


# --- Celery -----------------------------------------------------------------------------------


def _url_auth(params: Mapping[str, Any]) -> str:
    if not params.get("redis_password"):
        return ""
    return f"{quote(params.get('redis_username') or '', safe='')}:{quote(params['redis_password'], safe='')}@"


def _tls_query(settings: dict[str, Any], present: Sequence[str] = ()) -> str:
    """The TLS settings as a URL query (those not already ``present``), as kombu parses it."""
    names = {value: name for name, value in _CERT_REQS.items()}
    pairs = []
    for key in _URL_TLS_KEYS:
        if key in present or key not in settings:
            continue
        value = settings[key]
        if key == "ssl_cert_reqs":
            value = names.get(value, value)
        elif key == "ssl_check_hostname":
            if not value:
                continue  # "false" would read as true to Celery's result backend
            value = "true"
        pairs.append(f"{key}={quote(str(value), safe='')}")
    return "&".join(pairs)


def broker_url(params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A kombu broker URL and transport options equivalent to the shared options (for Celery).

    A TLS URL carries its TLS settings in its query: kombu would otherwise connect to a
    ``rediss://`` URL without verifying the certificate.
    """
    db = _option(params, "redis_db", 0)
    if params.get("sentinel_hosts"):
        auth = _url_auth(params)
        addresses = _sentinel_addresses(params["sentinel_hosts"])
        url = ";".join(f"sentinel://{auth}{host}:{port}/{db}" for host, port in addresses)
        options: dict[str, Any] = {"master_name": params["sentinel_service"]}
        if params.get("sentinel_password"):
            options["sentinel_kwargs"] = {"password": params["sentinel_password"]}
        return url, options
    tls = tls_settings(params)
    if params.get("redis_url"):
        url = params["redis_url"]
        if tls:
            query = _tls_query(tls, present=list(parse_qs(urlsplit(url).query)))
            if query:
                url += ("&" if "?" in url else "?") + query
        return url, {}
    scheme = "rediss" if tls else "redis"
    host, port = params.get("redis_host") or "localhost", _option(params, "redis_port", DEFAULT_PORT)
    url = f"{scheme}://{_url_auth(params)}{host}:{port}/{db}"
    if tls:
        url += "?" + _tls_query(tls)
    return url, {}


def celery_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """Celery (kombu) configuration that reaches the broker described by the shared options.

    With TLS, ``broker_use_ssl`` and ``redis_backend_use_ssl`` carry the same CA, client
    certificate, key and verification as the redis-py client (``tls_settings``).
    """
    url, transport_options = broker_url(params)
    settings: dict[str, Any] = {"broker_url": url, "broker_transport_options": transport_options}
    tls = tls_settings(params)
    if tls:
        settings["broker_use_ssl"] = dict(tls)
        settings["redis_backend_use_ssl"] = dict(tls)
    return settings


def connect(module) -> redis.Redis:
    """The client for an AnsibleModule, or ``fail_json`` with a message a user can act on."""
    if REDIS_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    try:
        return client_from_params(module.params)
    except RedisConnectionError as exc:
        module.fail_json(msg=str(exc))
