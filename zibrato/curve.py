"""CurveZMQ for Zibrato's links: key files, clients that present a key, a broker that checks them.

Keys are pyzmq certificate files (``zmq.auth.create_certificates``):
``NAME.key`` holds the public key, ``NAME.key_secret`` both (mode 600).
They are always given as *files*, never as values on a command line
(``ps`` shows argv to every user of the machine).

* A **client side** (the Zibrato client's PUSH, a worker's SUB, a
  forwarder's PUSH) loads its own secret key file and the server's public
  key file: :class:`ClientKeys`.
* The **broker** loads its secret key file and a directory of allowed client
  public keys: :class:`ServerAuth` runs pyzmq's ZAP authenticator in a
  thread, reloads the directory when it changes, and counts and logs refused
  clients by address. A refused client never reaches the proxy: ZeroMQ
  closes its connection after the handshake.

Loopback links stay plain by default; :func:`warn_if_exposed` logs a warning
when a daemon binds a non-loopback address without CURVE.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from .curve_watch import ConnectionWatch

log = logging.getLogger("zibrato.curve")

ENV_SECRET_KEY = "ZIBRATO_CURVE_SECRET_KEY"
ENV_SERVER_KEY = "ZIBRATO_CURVE_SERVER_KEY"
#: the ZAP domain every Zibrato server socket uses
DOMAIN = "zibrato"
_LOG_REFUSED_EVERY = 10.0  # seconds between log lines about one refused address


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or not a certificate (the message says which)."""


def create_keys(name: str, directory: str | os.PathLike, force: bool = False) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` in ``directory`` (the secret mode 600).

    Refuses to overwrite existing files unless ``force``: a replaced key locks
    out every peer that trusted the old one.
    """
    if not name or "/" in name or name.startswith(".") or "\x00" in name:
        raise KeyFileError(f"bad key name {name!r}: a plain file name")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise KeyFileError(f"{public} or {secret} already exists (use --force to replace it)")
    old_umask = os.umask(0o077)  # the secret is never readable by others, not even for a moment
    try:
        for path in (public, secret):
            if path.exists():
                path.unlink()
        zmq.auth.create_certificates(str(folder), name)
    finally:
        os.umask(old_umask)
    os.chmod(secret, 0o600)
    os.chmod(public, 0o644)
    return public, secret


def load_public(path: str | os.PathLike) -> bytes:
    """The public key (Z85) in a certificate file (either NAME.key or NAME.key_secret)."""
    public, _ = _load(path)
    return public


def load_pair(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """(public, secret) from a secret certificate file (NAME.key_secret)."""
    public, secret = _load(path)
    if not secret:
        raise KeyFileError(f"{path} holds no secret key: give the NAME.key_secret file")
    return public, secret


def _load(path: str | os.PathLike) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(os.fspath(path))
    except (OSError, ValueError) as error:
        raise KeyFileError(f"cannot read the key file {path}: {error}") from None
    if not public or len(public) != 40:
        raise KeyFileError(f"{path} is not a CURVE certificate (no 40-character public-key)")
    return public, secret


@dataclass(frozen=True)
class ClientKeys:
    """What a connecting socket needs for CURVE: its own pair and the server's public key."""

    public: bytes
    secret: bytes
    server: bytes

    @classmethod
    def from_files(cls, secret_key: str | os.PathLike, server_key: str | os.PathLike) -> ClientKeys:
        public, secret = load_pair(secret_key)
        return cls(public, secret, load_public(server_key))

    @classmethod
    def from_options(
        cls, secret_key: str | os.PathLike | None, server_key: str | os.PathLike | None
    ) -> ClientKeys | None:
        """Both files, or neither (plain); one without the other is a ValueError."""
        if not secret_key and not server_key:
            return None
        if not (secret_key and server_key):
            raise KeyFileError("CURVE needs both the secret key file and the server's public key file")
        return cls.from_files(secret_key, server_key)

    @classmethod
    def from_env(cls) -> ClientKeys | None:
        """From ZIBRATO_CURVE_SECRET_KEY and ZIBRATO_CURVE_SERVER_KEY (file paths), if set."""
        return cls.from_options(os.environ.get(ENV_SECRET_KEY), os.environ.get(ENV_SERVER_KEY))

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` (before connect) a CURVE client of the server."""
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_serverkey = self.server


class _CountingAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP authenticator, which also counts and logs refused clients by address."""

    def __init__(self, context: zmq.Context, owner: ServerAuth) -> None:
        super().__init__(context, log=logging.getLogger("zibrato.curve.zap"))
        self._owner = owner
        self._address = ""

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)

    def _send_zap_reply(
        self, request_id: bytes, status_code: bytes, status_text: bytes, user_id: str = "anonymous"
    ) -> None:
        if status_code != b"200":
            self._owner.refused_client(self._address, status_text.decode("utf-8", "replace"))
        else:
            self._owner.accepted_client(self._address, user_id)
        super()._send_zap_reply(request_id, status_code, status_text, user_id)


class ServerAuth:
    """CURVE for a broker's sockets: its key pair and the directory of allowed client keys.

    :meth:`start` runs the authenticator; :meth:`apply` makes a socket (before
    bind) a CURVE server; :meth:`check_reload` reloads the directory when a
    file was added, removed or changed (call it every second or so).
    """

    def __init__(self, secret_key: str | os.PathLike, clients: str | os.PathLike) -> None:
        self.public, self.secret = load_pair(secret_key)
        self.clients = Path(clients)
        if not self.clients.is_dir():
            raise KeyFileError(f"--curve-clients {clients} is not a directory of client public keys")
        self.refused = 0
        self.accepted = 0
        self.refused_by_address: dict[str, int] = {}
        self.reloads = 0
        self.keys_removed = 0
        #: where each accepted key (Z85, the ZAP user id) connected from: what a removal cuts
        self.key_addresses: dict[str, set[str]] = {}
        #: the broker's monitors, set by the broker: they cut a removed key's connections
        self.watch: ConnectionWatch | None = None
        self._last_logged: dict[str, float] = {}
        self._lock = threading.Lock()
        self._auth: _CountingAuthenticator | None = None
        self._seen = self._fingerprint()
        self._allowed = self._allowed_keys()

    def start(self, context: zmq.Context) -> None:
        self._auth = _CountingAuthenticator(context, self)
        self._auth.start()
        self._configure()

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def apply(self, socket: zmq.Socket) -> None:
        socket.curve_server = True
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.zap_domain = DOMAIN.encode()

    def allowed_keys(self) -> int:
        return len(list(self.clients.glob("*.key")))

    def check_reload(self) -> bool:
        """Reload the allowed keys if the directory changed; True when it did."""
        seen = self._fingerprint()
        if seen == self._seen:
            return False
        self._seen = seen
        self._configure()
        self.reloads += 1
        allowed = self._allowed_keys()
        removed, self._allowed = self._allowed - allowed, allowed
        log.info("CURVE client keys reloaded from %s: %d allowed", self.clients, self.allowed_keys())
        if removed:
            self._cut(removed)
        return True

    def _cut(self, removed: set[str]) -> None:
        """Cut the live connections of removed keys (see zibrato/curve_watch.py)."""
        with self._lock:
            addresses = set().union(*(self.key_addresses.pop(key, set()) for key in removed))
        self.keys_removed += len(removed)
        cut = self.watch.cut(addresses) if self.watch is not None and addresses else 0
        log.warning(
            "%d CURVE key(s) removed: cut %d live connection(s) from %s; their clients must "
            "handshake again (a removed key is refused)",
            len(removed),
            cut,
            ", ".join(sorted(addresses)) or "no address (the key had not connected)",
        )

    def accepted_client(self, address: str, key: str) -> None:
        with self._lock:
            self.accepted += 1
            addresses = self.key_addresses.setdefault(key, set())
            if len(addresses) < 100:  # bounded: one key used from many hosts
                addresses.add(address)
            if len(self.key_addresses) > 10_000:
                self.key_addresses.pop(next(iter(self.key_addresses)))

    def _allowed_keys(self) -> set[str]:
        """The Z85 public keys in the allowed directory (unreadable files are skipped, as ZAP does)."""
        keys = set()
        for path in self.clients.glob("*.key"):
            try:
                public, _ = zmq.auth.load_certificate(str(path))
            except (OSError, ValueError):
                continue
            if public:
                keys.add(public.decode("ascii", "replace"))
        return keys

    def _configure(self) -> None:
        if self._auth is not None:
            self._auth.configure_curve(domain=DOMAIN, location=str(self.clients))

    def _fingerprint(self) -> tuple:
        try:
            return tuple(
                sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in self.clients.iterdir() if p.is_file())
            )
        except OSError:
            return ()

    def refused_client(self, address: str, reason: str) -> None:
        """Count a refused handshake; log it, at most every 10 s per address."""
        with self._lock:
            self.refused += 1
            self.refused_by_address[address] = self.refused_by_address.get(address, 0) + 1
            if len(self.refused_by_address) > 1000:  # bounded: a scan must not grow memory
                self.refused_by_address.pop(next(iter(self.refused_by_address)))
            now = time.monotonic()
            if now - self._last_logged.get(address, -1e9) >= _LOG_REFUSED_EVERY:
                self._last_logged[address] = now
                log.warning("refused a CURVE client from %s (%s; %d refused so far)", address, reason, self.refused)

    def figures(self) -> dict:
        return {
            "curve": True,
            "curve_refused": self.refused,
            "curve_accepted": self.accepted,
            "curve_allowed_keys": self.allowed_keys(),
            "curve_reloads": self.reloads,
            "curve_refused_by_address": dict(self.refused_by_address),
            "curve_keys_removed": self.keys_removed,
            **(self.watch.figures() if self.watch is not None else {}),
        }


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, curve: bool, what: str) -> None:
    """A warning at start when ``what`` binds a non-loopback address in plain text."""
    if not curve and not is_loopback(host):
        log.warning(
            "%s binds %s without CURVE: anyone who can reach it can send measurements, "
            "and they travel unencrypted (see docs/SCALING.md, 'Encrypted links')",
            what,
            host,
        )


__all__ = [
    "ClientKeys",
    "ENV_SECRET_KEY",
    "ENV_SERVER_KEY",
    "KeyFileError",
    "ServerAuth",
    "create_keys",
    "is_loopback",
    "load_pair",
    "load_public",
    "warn_if_exposed",
]
