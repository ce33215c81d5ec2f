"""Build the runners a command needs from the profile and the SSH flags."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgepack.errors import UsageError
from edgepack.profiles import DeviceProfile
from edgepack.runners.base import Runner
from edgepack.runners.local import LocalRunner


@dataclass(frozen=True)
class SshOptions:
    hosts: tuple[str, ...] = ()
    known_hosts: Path | None = None
    identity: Path | None = None
    trust_new_host: bool = False
    remote_python: str | None = None
    ssh_config: Path | None = None


def runners_for(profile: DeviceProfile, options: SshOptions,
                say: Callable[[str], None] = lambda _: None) -> list[Runner]:
    """One runner per ``--host`` (SSH), or the LocalRunner for the ``host`` profile without hosts.
    ``say`` gets progress lines, such as waiting for a board another edgepack is using."""
    if profile.is_microcontroller:
        if options.hosts:
            raise UsageError(f"{profile.name} is a microcontroller: it is not reached over SSH",
                             "leave out --host: TFLite Micro and the profile's toolchain run on this machine")
        from edgepack.runners.microcontroller import MicrocontrollerRunner

        return [MicrocontrollerRunner(profile)]
    if not options.hosts:
        if profile.name != "host":
            raise UsageError(f"no --host given to reach the {profile.name}",
                             "pass --host user@board[:port], or --device host to measure this machine")
        return [LocalRunner(options.remote_python)]
    from edgepack.runners.ssh import SshRunner
    from edgepack.runners.ssh_login import parse_target

    runners: list[Runner] = []
    for host in options.hosts:
        target = parse_target(host, profile.ssh.user, profile.ssh.port, options.ssh_config, options.identity)
        runners.append(SshRunner(target, python=options.remote_python or profile.ssh.python,
                                 known_hosts=options.known_hosts or Path.home() / ".ssh" / "known_hosts",
                                 trust_new_host=options.trust_new_host, say=say))
    return runners
