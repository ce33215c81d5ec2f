"""Logging in to a board over SSH (paramiko): where to (``[user@]host[:port]``, with Host aliases, User,
Port and IdentityFile from ~/.ssh/config), and whose host key we accept.

The host key is checked against known_hosts: an unknown key is refused unless ``--trust-new-host`` saves
it, and a changed key is always refused. What the user can fix in their SSH settings (a bad target, an
identity file, authentication) is a :class:`SshSetupError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.errors import EdgepackError


class HostKeyError(EdgepackError):
    """The device's host key is unknown or has changed."""


class SshSetupError(EdgepackError):
    """The user's SSH settings cannot work (bad target, identity file, authentication, no such Python)."""


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in, after ~/.ssh/config has had its say."""

    host: str  # what the user typed (an alias, a name or an address)
    hostname: str
    user: str
    port: int
    identity_files: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def parse_target(text: str, default_user: str, default_port: int, ssh_config: Path | None = None,
                 identity: Path | None = None) -> SshTarget:
    """``[user@]host[:port]``, with Host aliases, User, Port and IdentityFile from ~/.ssh/config."""
    import paramiko

    user, _, rest = text.rpartition("@")
    host, port_text = rest, ""
    if rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    if not host or (port_text and not port_text.isdigit()):
        raise SshSetupError(f"--host '{text}' is not of the form [user@]host[:port]", "e.g. --host pi@raspberrypi:22")
    config_path = ssh_config or Path.home() / ".ssh" / "config"
    config = paramiko.SSHConfig.from_path(str(config_path)) if config_path.exists() else paramiko.SSHConfig()
    entry = config.lookup(host)
    hostname = entry.get("hostname", host)
    port = int(port_text) if port_text else int(entry.get("port", default_port))
    user = user or entry.get("user", default_user)
    identities = (str(identity),) if identity else tuple(entry.get("identityfile", []))
    if identity and not identity.exists():
        raise SshSetupError(f"--identity {identity}: no such file", "give the path of your private key")
    return SshTarget(host, hostname, user, port, identities)


class _SaveNewKey:
    """paramiko policy for --trust-new-host: accept a host with no key on record and save its key.

    A *changed* key never reaches a policy: paramiko raises BadHostKeyException for it first.
    """

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with self.known_hosts.open("a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class _Refuse:
    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        raise HostKeyError(
            f"{hostname} is not in known_hosts (its {key.get_name()} key is "
            f"SHA256:{fingerprint(key)})",
            "check the fingerprint on the device, then add it with ssh-keyscan or pass --trust-new-host")


def fingerprint(key: Any) -> str:
    """A host key's SHA256 fingerprint, as ``ssh-keygen -l`` prints it (without the ``SHA256:``)."""
    import base64

    return base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def log_in(target: SshTarget, known_hosts: Path, trust_new_host: bool, timeout_s: float) -> Any:
    """A connected ``paramiko.SSHClient`` whose host key was checked against ``known_hosts``.

    Raises HostKeyError (unknown or changed key), SshSetupError (authentication failed); a board that
    cannot be reached raises paramiko's or the socket's own error, for the caller to judge.
    """
    import paramiko

    client = paramiko.SSHClient()
    if known_hosts.exists():
        client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(_SaveNewKey(known_hosts) if trust_new_host else _Refuse())
    try:
        client.connect(target.hostname, port=target.port, username=target.user,
                       key_filename=list(target.identity_files) or None, timeout=timeout_s,
                       banner_timeout=timeout_s, auth_timeout=timeout_s)
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(
            f"the host key of {target.known_hosts_name} has CHANGED (now SHA256:{fingerprint(exc.key)}); "
            "refused, even with --trust-new-host",
            f"if the device was reinstalled, remove its old line from {known_hosts}") from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise SshSetupError(f"{target.label}: authentication failed ({exc})",
                            "check --identity, your ssh-agent, or the device's authorized_keys") from None
    except HostKeyError:
        client.close()
        raise
    return client
