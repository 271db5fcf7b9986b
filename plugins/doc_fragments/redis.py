# Copyright: queueops.rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    """Connection options shared by every module that talks to Redis."""

    DOCUMENTATION = r"""
options:
  redis_url:
    description:
      - Full connection URL, for example C(redis://:secret@10.0.0.5:6379/0) or C(rediss://host:6380/1).
      - When set, O(redis_host), O(redis_port), O(redis_db), O(redis_username), O(redis_password) and
        O(redis_tls) are ignored.
      - It may carry a password, so it is never logged.
    type: str
  redis_host:
    description: Host name or address of the Redis server.
    type: str
    default: localhost
  redis_port:
    description: TCP port of the Redis server.
    type: int
    default: 6379
  redis_db:
    description: Database number.
    type: int
    default: 0
  redis_username:
    description: ACL user name (Redis 6+). Leave unset for the default user.
    type: str
  redis_password:
    description: Password of O(redis_username), or of the default user.
    type: str
  redis_tls:
    description: Connect with TLS.
    type: bool
    default: false
  redis_tls_ca_path:
    description: CA certificate file that signs the server certificate (with O(redis_tls)).
    type: path
  redis_socket_timeout:
    description: Seconds to wait for a connection or a reply before giving up.
    type: float
    default: 5.0
  sentinel_hosts:
    description:
      - Redis Sentinel addresses as C(host:port). When set, the master is looked up from Sentinel
        under O(sentinel_service) and O(redis_host) / O(redis_port) are ignored.
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
    C(localhost) with C(delegate_to)).
"""
