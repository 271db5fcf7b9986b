# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    """Connection options shared by every module that talks to Redis."""

    DOCUMENTATION = r"""
options:
  redis_url:
    description:
      - Full connection URL, for example C(redis://:secret@10.0.0.5:6379/0), C(rediss://host:6380/1) (TLS)
        or C(unix:///run/redis/redis.sock?db=0).
      - The database is the number in the path (C(/1)) or in C(?db=1); anything else there, such as C(/abc),
        is refused rather than read as database 0.
      - When set, O(redis_host), O(redis_port), O(redis_db), O(redis_username), O(redis_password) and
        O(redis_tls) are ignored; TLS is on when the scheme is C(rediss), and O(redis_tls_ca_path),
        O(redis_tls_cert_path), O(redis_tls_key_path) and O(redis_tls_validate_certs) apply to it.
        TLS settings written in the URL's query (C(ssl_ca_certs), C(ssl_cert_reqs), ...) win over them.
      - It may carry a password, so it is never logged, and messages name only its host, port and database.
    type: str
  redis_host:
    description: Host name or address of the Redis server.
    type: str
    default: localhost
  redis_port:
    description: TCP port of the Redis server, from 1 to 65535.
    type: int
    default: 6379
  redis_db:
    description:
      - Database number, 0 or more. A number the server does not have (see its C(databases) setting) is
        reported when the module connects.
    type: int
    default: 0
  redis_username:
    description:
      - ACL user name (Redis 6+). Leave unset for the default user.
      - A command, key or channel the user's ACL refuses fails the task with the user, the server, what
        was refused and what the module needed it for.
    type: str
  redis_password:
    description: Password of O(redis_username), or of the default user.
    type: str
  redis_tls:
    description:
      - Connect with TLS (to O(redis_host), or to the master found through O(sentinel_hosts)).
      - With O(redis_url), use a C(rediss://) URL instead.
    type: bool
    default: false
  redis_tls_ca_path:
    description:
      - CA certificate file (PEM) that signs the server certificate, for a server whose certificate is
        signed by a private CA. Without it the CAs the system trusts are used.
      - Applies with O(redis_tls) and with a C(rediss://) O(redis_url).
    type: path
  redis_tls_cert_path:
    description:
      - Client certificate file (PEM) for mutual TLS, for a server started with C(tls-auth-clients yes).
      - The file may also hold the private key; otherwise set O(redis_tls_key_path).
    type: path
  redis_tls_key_path:
    description:
      - Private key file (PEM, not encrypted) of O(redis_tls_cert_path).
    type: path
  redis_tls_validate_certs:
    description:
      - Whether the server certificate must be signed by O(redis_tls_ca_path) (or a CA the system trusts)
        and name the host connected to (O(redis_host), the host of O(redis_url), or the address Sentinel
        gives for the master).
      - Set to V(false) only for a server you control, such as a test instance with a self-signed
        certificate; the connection is then encrypted but not authenticated.
    type: bool
    default: true
  redis_socket_timeout:
    description: Seconds to wait for a connection or a reply before giving up; more than 0.
    type: float
    default: 5.0
  redis_reconnect_timeout:
    description:
      - Once connected, a command whose connection breaks (Redis restarted, a Sentinel failover) is sent again on
        a new connection, with backoff, for about this many seconds before the task fails; V(0) fails at once.
      - The first connection is not retried, so a wrong address or password still fails at once.
      - Celery's remote control (pause, resume, halt) goes through kombu, which has its own retries.
    type: float
    default: 20.0
  sentinel_hosts:
    description:
      - Redis Sentinel addresses as C(host:port) (C([::1]:26379) for IPv6). When set, the master is looked
        up from Sentinel under O(sentinel_service) and O(redis_host) / O(redis_port) are ignored.
      - When no master is found, the message says what each Sentinel answered.
    type: list
    elements: str
  sentinel_service:
    description: Name of the master set monitored by Sentinel. Required with O(sentinel_hosts).
    type: str
  sentinel_password:
    description: Password of the Sentinel processes themselves, when they require one.
    type: str
requirements:
  - redis (Python library) on the host that runs the module
notes:
  - The Redis connection is made from the host that runs the module (the managed host, or
    C(localhost) with C(delegate_to)). The TLS files are read on that host too.
  - The Celery side of a module (broadcasts to workers) reaches the same Redis with the same TLS
    settings, given to kombu as C(broker_use_ssl).
"""
