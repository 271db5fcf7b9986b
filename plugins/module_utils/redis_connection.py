# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One way to reach Redis for every module: argument spec, client, broker URL, clear errors."""

from __future__ import annotations

import traceback
from typing import Any
from urllib.parse import quote, urlsplit

try:
    import redis
    from redis.sentinel import Sentinel

    REDIS_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported through missing_required_lib
    redis = None
    Sentinel = None
    REDIS_IMPORT_ERROR = traceback.format_exc()

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
    "redis_socket_timeout": {"type": "float", "default": 5.0},
    "sentinel_hosts": {"type": "list", "elements": "str"},
    "sentinel_service": {"type": "str"},
    "sentinel_password": {"type": "str", "no_log": True},
}
REDIS_MUTUALLY_EXCLUSIVE = [("redis_url", "sentinel_hosts")]
REDIS_REQUIRED_TOGETHER = [("sentinel_hosts", "sentinel_service")]


class RedisConnectionError(Exception):
    """Redis could not be reached or refused us; the message is fit for a user."""


def redis_argument_spec(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The shared connection options plus a module's own."""
    spec = {name: dict(option) for name, option in REDIS_ARGUMENT_SPEC.items()}
    spec.update(extra)
    return spec


def _sentinel_addresses(hosts: list[str]) -> list[tuple[str, int]]:
    addresses = []
    for entry in hosts:
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise RedisConnectionError(f"sentinel_hosts entry {entry!r} is not of the form host:port")
        addresses.append((host, int(port)))
    return addresses


def describe_target(params: dict[str, Any]) -> str:
    """Where we connect, for messages: never includes a password."""
    if params.get("sentinel_hosts"):
        return f"sentinel {','.join(params['sentinel_hosts'])} service {params.get('sentinel_service')}"
    if params.get("redis_url"):
        # Never the URL itself: Ansible masks any text equal to a no_log value, so the message
        # would read "********". Host, port and db are what a user needs to see.
        try:
            parts = urlsplit(params["redis_url"])
            return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'} (redis_url)"
        except ValueError:
            return "the host of redis_url"
    return f"{params.get('redis_host', 'localhost')}:{params.get('redis_port', 6379)}/{params.get('redis_db', 0)}"


def _tls_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    if not params.get("redis_tls"):
        return {}
    kwargs: dict[str, Any] = {"ssl": True}
    if params.get("redis_tls_ca_path"):
        kwargs["ssl_ca_certs"] = params["redis_tls_ca_path"]
    return kwargs


def client_from_params(params: dict[str, Any], *, check: bool = True) -> redis.Redis:
    """A binary-safe client (``decode_responses=False``) built from the shared options.

    With ``check`` the server is pinged so that a wrong address or password is reported here,
    once, in words, rather than as a traceback from whatever command comes first.
    """
    timeout = params.get("redis_socket_timeout") or 5.0
    common: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if params.get("sentinel_hosts"):
        sentinel_kwargs = {"socket_timeout": timeout}
        if params.get("sentinel_password"):
            sentinel_kwargs["password"] = params["sentinel_password"]
        sentinel = Sentinel(
            _sentinel_addresses(params["sentinel_hosts"]),
            sentinel_kwargs=sentinel_kwargs,
            db=params.get("redis_db", 0),
            username=params.get("redis_username"),
            password=params.get("redis_password"),
            **common,
            **_tls_kwargs(params),
        )
        client = sentinel.master_for(params["sentinel_service"])
    elif params.get("redis_url"):
        try:
            client = redis.Redis.from_url(params["redis_url"], **common)
        except ValueError as exc:
            raise RedisConnectionError(f"redis_url is not a valid Redis URL: {exc}") from None
    else:
        client = redis.Redis(
            host=params.get("redis_host") or "localhost",
            port=params.get("redis_port") or 6379,
            db=params.get("redis_db") or 0,
            username=params.get("redis_username"),
            password=params.get("redis_password"),
            **common,
            **_tls_kwargs(params),
        )
    if check:
        ping(client, params)
    return client


def ping(client: redis.Redis, params: dict[str, Any]) -> None:
    target = describe_target(params)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise RedisConnectionError(f"Redis at {target} refused the credentials: {exc}") from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise RedisConnectionError(f"Redis at {target} refused the credentials: {exc}") from None
        raise RedisConnectionError(f"Redis at {target} answered PING with an error: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisConnectionError(f"Cannot reach Redis at {target}: {exc}") from None


def _url_auth(params: dict[str, Any]) -> str:
    if not params.get("redis_password"):
        return ""
    return f"{quote(params.get('redis_username') or '', safe='')}:{quote(params['redis_password'], safe='')}@"


def broker_url(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A kombu broker URL and transport options equivalent to the shared options (for Celery)."""
    db = params.get("redis_db") or 0
    if params.get("sentinel_hosts"):
        auth = _url_auth(params)
        addresses = _sentinel_addresses(params["sentinel_hosts"])
        url = ";".join(f"sentinel://{auth}{host}:{port}/{db}" for host, port in addresses)
        options: dict[str, Any] = {"master_name": params["sentinel_service"]}
        if params.get("sentinel_password"):
            options["sentinel_kwargs"] = {"password": params["sentinel_password"]}
        return url, options
    if params.get("redis_url"):
        return params["redis_url"], {}
    scheme = "rediss" if params.get("redis_tls") else "redis"
    host, port = params.get("redis_host") or "localhost", params.get("redis_port") or 6379
    url = f"{scheme}://{_url_auth(params)}{host}:{port}/{db}"
    if params.get("redis_tls"):
        url += "?ssl_cert_reqs=required"
        if params.get("redis_tls_ca_path"):
            url += f"&ssl_ca_certs={quote(params['redis_tls_ca_path'], safe='')}"
    return url, {}


def celery_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Celery (kombu) configuration that reaches the broker described by the shared options."""
    url, transport_options = broker_url(params)
    return {"broker_url": url, "broker_transport_options": transport_options}


def connect(module) -> redis.Redis:
    """The client for an AnsibleModule, or ``fail_json`` with a message a user can act on."""
    if REDIS_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    try:
        return client_from_params(module.params)
    except RedisConnectionError as exc:
        module.fail_json(msg=str(exc))
