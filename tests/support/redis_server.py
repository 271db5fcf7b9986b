"""A real redis-server on a free loopback port, stopped by its pid.

Plain (``RedisServer()``), with a password, with TLS (``RedisServer(tls=make_tls_files(dir))``,
optionally demanding client certificates), or as a Sentinel watching another server
(``SentinelServer(master_port=...)``).
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a private CA, a server certificate it signs (for 127.0.0.1 and localhost),
    a client certificate it signs, a second CA that signs nothing of these, and a server
    certificate of the first CA for another name (redis.invalid)."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    misnamed_server_cert: Path
    misnamed_server_key: Path

    def misnamed(self) -> TlsFiles:
        """The same CA, with a server certificate for redis.invalid instead of 127.0.0.1."""
        return dataclasses.replace(self, server_cert=self.misnamed_server_cert, server_key=self.misnamed_server_key)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )
    if usage is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH and subject == "localhost":
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        elif usage == ExtendedKeyUsageOID.SERVER_AUTH:
            names = [x509.DNSName(subject)]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_tls_files(directory: str | os.PathLike) -> TlsFiles:
    """A CA made for the test, and the server and client certificates it signs, under ``directory``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        directory=root,
        ca_cert=root / "ca.crt",
        server_cert=root / "server.crt",
        server_key=root / "server.key",
        client_cert=root / "client.crt",
        client_key=root / "client.key",
        other_ca_cert=root / "other-ca.crt",
        misnamed_server_cert=root / "misnamed.crt",
        misnamed_server_key=root / "misnamed.key",
    )
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("queueops test CA", ca_key, None, ca_key)
    _write_cert(ca, files.ca_cert)
    other_key = ec.generate_private_key(ec.SECP256R1())
    _write_cert(_certificate("queueops unrelated CA", other_key, None, other_key), files.other_ca_cert)
    for cert_path, key_path, subject, usage in (
        (files.server_cert, files.server_key, "localhost", ExtendedKeyUsageOID.SERVER_AUTH),
        (files.client_cert, files.client_key, "queueops test client", ExtendedKeyUsageOID.CLIENT_AUTH),
        (files.misnamed_server_cert, files.misnamed_server_key, "redis.invalid", ExtendedKeyUsageOID.SERVER_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        _write_key(key, key_path)
        _write_cert(_certificate(subject, key, ca, ca_key, usage=usage), cert_path)
    return files


def _stop_process(process: subprocess.Popen | None) -> None:
    if process and process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process and process.stderr:
        process.stderr.close()


@dataclass
class RedisServer:
    """``tls`` serves TLS only (no plain port); ``tls_auth_clients`` is redis-server's
    ``--tls-auth-clients``: ``no``, ``optional`` or ``yes`` (client certificate required)."""

    password: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    workdir: str = ""
    tls: TlsFiles | None = None
    tls_auth_clients: str = "no"
    appendonly: bool = False  # persistence, so that a restart keeps the data (restart())

    @property
    def url(self) -> str:
        if self.tls:
            return self.tls_url
        return f"redis://{self._auth()}127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> str:
        if not self.tls:
            raise ValueError("this redis-server was started without TLS")
        return f"rediss://{self._auth()}127.0.0.1:{self.port}/0"

    def _auth(self) -> str:
        return f":{self.password}@" if self.password else ""

    def client(self, **kwargs) -> redis.Redis:
        if self.tls:
            kwargs = {
                "ssl": True,
                "ssl_ca_certs": str(self.tls.ca_cert),
                "ssl_certfile": str(self.tls.client_cert),
                "ssl_keyfile": str(self.tls.client_key),
                **kwargs,
            }
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kwargs)

    def _arguments(self) -> list[str]:
        args = [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--dir",
            self.workdir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.tls:
            args += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls.server_cert),
                "--tls-key-file",
                str(self.tls.server_key),
                "--tls-ca-cert-file",
                str(self.tls.ca_cert),
                "--tls-auth-clients",
                self.tls_auth_clients,
            ]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.workdir = self.workdir or tempfile.mkdtemp(prefix="queueops-redis-")
        self.process = subprocess.Popen([binary, *self._arguments()], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_until_answering(self.process, self.port, self.client)
        return self

    def stop(self) -> None:
        _stop_process(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, down: float = 0.0) -> RedisServer:
        """Stop the server (SIGTERM: it writes its append-only file), stay down ``down`` s, start it on
        the same port and directory: with ``appendonly`` the data is kept, as a restarted container's."""
        _stop_process(self.process)
        time.sleep(down)
        return self.start()


@dataclass
class SentinelServer:
    """A Redis Sentinel on a free loopback port that monitors ``master_port`` as ``service``."""

    master_port: int
    service: str = "mymaster"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    workdir: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def start(self) -> SentinelServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.workdir = tempfile.mkdtemp(prefix="queueops-sentinel-")
        config = Path(self.workdir) / "sentinel.conf"  # a Sentinel rewrites its own config file
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.master_port} 1\n"
        )
        self.process = subprocess.Popen(
            [binary, str(config), "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _wait_until_answering(self.process, self.port, self.client)
        return self

    def stop(self) -> None:
        _stop_process(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _wait_until_answering(process: subprocess.Popen, port: int, client) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {process.stderr.read().decode()}")
        try:
            if client(socket_connect_timeout=0.2).ping():
                return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not answer within 10 s")
