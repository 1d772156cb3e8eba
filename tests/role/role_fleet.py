# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fleet of ACME hosts for the role tests: private sshd instances on 127.0.0.2-4.

Each host is its own sshd process on its own loopback address, with its own host key and
configuration in a temporary folder. The tests log in as root with a key pair made for the
session, so ansible-playbook transfers modules and fetches reports over real SSH. All hosts
are this machine, so every host gets its own database and directories below the test's
temporary folder, and its own job name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from conftest import COLLECTIONS, EXAMPLE_DB, REPO

ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
# Reference time of the role runs: every expiring row of the example database is expired then.
NOW = "2026-12-04T00:00:00Z"
# Counts that housekeeping touches in acme2certifier's example database at NOW.
EXAMPLE_COUNTS = {"orders": 9, "authorizations": 18, "certificate_dates": 0, "certificates": 6, "nonces": 13}
SSHD_START_TIMEOUT = 10.0
PLAYBOOK_TIMEOUT = 600
RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.MULTILINE,
)


@dataclass
class SshHost:
    """One sshd instance that plays an ACME host."""

    name: str
    address: str
    port: int
    process: Optional[subprocess.Popen] = None


@dataclass
class SshFleet:
    """The running sshd instances and the client files that reach them."""

    base: Path
    hosts: List[SshHost]
    private_key: Path
    known_hosts: Path
    control_dir: Path


def _find_sshd() -> str:
    path = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:/sbin:/usr/bin")
    if path is None:
        pytest.fail("sshd was not found. The role tests need OpenSSH's server: install Debian's "
                    "openssh-server package (apt-get install -y openssh-server).")
    return path


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def _run(command: List[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True, **kwargs)


def _sshd_config(host_dir: Path, host: SshHost, authorized_keys: Path) -> str:
    return "\n".join([
        f"ListenAddress {host.address}:{host.port}",
        f"HostKey {host_dir / 'ssh_host_ed25519_key'}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PidFile none",
        "UsePAM no",
        "UseDNS no",
        # The temporary folders are below /tmp, which StrictModes would reject.
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "GSSAPIAuthentication no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "PrintMotd no",
        # Ansible multiplexes many sessions over one ControlMaster connection.
        "MaxSessions 50",
        "Subsystem sftp internal-sftp",
        "LogLevel ERROR",
        "",
    ])


def _wait_for_port(host: SshHost, log_path: Path) -> None:
    """Wait until sshd accepts connections, failing early when it exits."""
    deadline = time.monotonic() + SSHD_START_TIMEOUT
    while time.monotonic() < deadline:
        if host.process is not None and host.process.poll() is not None:
            pytest.fail(f"sshd for {host.address}:{host.port} exited with status {host.process.returncode}:\n"
                        f"{log_path.read_text(errors='replace')}")
        try:
            with socket.create_connection((host.address, host.port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"sshd for {host.address}:{host.port} did not accept connections within {SSHD_START_TIMEOUT:g} s.")


def start_fleet(base: Path) -> SshFleet:
    """Start one sshd per address in ADDRESSES and return how to reach them."""
    if os.geteuid() != 0:
        pytest.fail("The role tests start sshd instances and log in to them as root, so they must run as root.")
    sshd = _find_sshd()
    # sshd checks for its privilege separation directory, which its service unit normally creates.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    private_key = base / "client_ed25519"
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "acme-hk-role-tests", "-f", str(private_key)])
    authorized_keys = base / "authorized_keys"
    shutil.copyfile(f"{private_key}.pub", authorized_keys)
    known_hosts = base / "known_hosts"
    known_hosts.touch()
    control_dir = base / "cp"
    control_dir.mkdir()

    fleet = SshFleet(base=base, hosts=[], private_key=private_key, known_hosts=known_hosts, control_dir=control_dir)
    try:
        for index, address in enumerate(ADDRESSES, start=2):
            host = SshHost(name=f"node{index}", address=address, port=_free_port(address))
            host_dir = base / host.name
            host_dir.mkdir()
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_dir / "ssh_host_ed25519_key")])
            config = host_dir / "sshd_config"
            config.write_text(_sshd_config(host_dir, host, authorized_keys))
            checked = subprocess.run([sshd, "-t", "-f", str(config)], capture_output=True, text=True, timeout=30, check=False)
            if checked.returncode != 0:
                pytest.fail(f"sshd rejected the test configuration {config}: {checked.stderr}")
            log_path = host_dir / "sshd.log"
            with open(log_path, "w", encoding="utf-8") as log:
                host.process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
            fleet.hosts.append(host)
            _wait_for_port(host, log_path)
    except BaseException:
        stop_fleet(fleet)
        raise
    return fleet


def stop_fleet(fleet: SshFleet) -> None:
    """Close the SSH master connections, then stop the sshd processes this module started."""
    for socket_path in sorted(fleet.control_dir.iterdir()):
        subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "fleet-control"],
                       capture_output=True, timeout=30, check=False)
    for host in fleet.hosts:
        if host.process is None or host.process.poll() is not None:
            continue
        host.process.terminate()
        try:
            host.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            host.process.kill()
            host.process.wait(timeout=10)


# One test's fleet: directories, inventory and ansible-playbook runs ------------------------


@dataclass
class RunResult:
    """Exit status, output and PLAY RECAP of one ansible-playbook run."""

    returncode: int
    output: str
    recap: Dict[str, Dict[str, int]] = field(default_factory=dict)

    def changed(self, host: str) -> int:
        return self.recap[host]["changed"]

    def describe(self) -> str:
        return f"ansible-playbook exited with {self.returncode}; output:\n{self.output}"


class FleetRun:
    """The hosts of one test, each with its own database and directories, and the playbook runs."""

    def __init__(self, ssh: SshFleet, root: Path) -> None:
        self.ssh = ssh
        self.root = root
        self.controller_dir = root / "controller"
        self.host_vars: Dict[str, Dict[str, Any]] = {}
        for host in ssh.hosts:
            host_root = self.host_root(host.name)
            for folder in ("units", "cron"):
                (host_root / folder).mkdir(parents=True)
            shutil.copyfile(EXAMPLE_DB, host_root / "acme_srv.db")
            self.host_vars[host.name] = {
                "ansible_host": host.address,
                "ansible_port": host.port,
                "acme_hk_job_name": f"acme-hk-{host.name}",
                "acme_hk_database": str(host_root / "acme_srv.db"),
                "acme_hk_job_lib_dir": str(host_root / "lib"),
                "acme_hk_job_config_file": str(host_root / "job.json"),
                "acme_hk_job_state_dir": str(host_root / "state"),
                "acme_hk_systemd_unit_dir": str(host_root / "units"),
                "acme_hk_cron_dir": str(host_root / "cron"),
            }

    @property
    def names(self) -> List[str]:
        return [host.name for host in self.ssh.hosts]

    def host_root(self, name: str) -> Path:
        return self.root / "hosts" / name

    def report_dir(self, name: str) -> Path:
        return self.host_root(name) / "state" / "reports"

    def database(self, name: str) -> Path:
        return Path(self.host_vars[name]["acme_hk_database"])

    def write_inventory(self) -> Path:
        ssh_args = (f"-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile={self.ssh.known_hosts} "
                    "-o IdentitiesOnly=yes -o BatchMode=yes -o GSSAPIAuthentication=no")
        inventory = {
            "acme_servers": {
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(self.ssh.private_key),
                    "ansible_ssh_common_args": ssh_args,
                    "ansible_python_interpreter": "/usr/bin/python3",
                    # The play in playbooks/fleet.yml uses become, and su needs no password for root.
                    "ansible_become_method": "su",
                    "acme_hk_now": NOW,
                    "acme_hk_controller_reports_dir": str(self.controller_dir),
                    "acme_hk_job_python": "/usr/bin/python3",
                },
                "hosts": self.host_vars,
            }
        }
        path = self.root / "inventory.json"
        path.write_text(json.dumps(inventory, indent=2))
        return path

    def run(self, extra_vars: Optional[Dict[str, Any]] = None, check: bool = False,
            playbook: Path = REPO / "playbooks" / "fleet.yml") -> RunResult:
        """Run the playbook against the fleet and parse its PLAY RECAP."""
        inventory = self.write_inventory()
        command = [_ansible_playbook(), "-i", str(inventory), str(playbook)]
        if extra_vars:
            command += ["-e", json.dumps(extra_vars)]
        if check:
            command.append("--check")
        local_temp = self.root / "ansible-local"
        local_temp.mkdir(exist_ok=True)
        env = dict(os.environ)
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_PIPELINING="1",
            ANSIBLE_FORKS="10",
            ANSIBLE_HOST_KEY_CHECKING="0",
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.ssh.control_dir),
            ANSIBLE_LOCAL_TEMP=str(local_temp),
        )
        completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=self.root,
                                   timeout=PLAYBOOK_TIMEOUT, check=False)
        output = completed.stdout + completed.stderr
        recap = {match.group("host"): {key: int(value) for key, value in match.groupdict().items() if key != "host"}
                 for match in RECAP_RE.finditer(completed.stdout)}
        return RunResult(returncode=completed.returncode, output=output, recap=recap)

    def summary(self) -> Dict[str, Any]:
        return json.loads((self.controller_dir / "fleet-summary.json").read_text())

    def summary_entries(self) -> Dict[str, Dict[str, Any]]:
        return {entry["host"]: entry for entry in self.summary()["hosts"]}


def _ansible_playbook() -> str:
    """Return the ansible-playbook of this Python environment, else the one on the PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.exists():
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        pytest.fail("ansible-playbook was not found; run the tests with the .venv that make install creates.")
    return os.path.abspath(found)


def tree_state(root: Path) -> Dict[str, tuple]:
    """Return path -> (kind, SHA-256, mode, mtime in ns) for everything below root.

    Directories count with their mode only: a module that writes a temporary file and deletes
    it again changes the directory's mtime but nothing in it.
    """
    state: Dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            state[str(path.relative_to(root))] = ("file", digest, info.st_mode, info.st_mtime_ns)
        else:
            state[str(path.relative_to(root))] = ("other", None, info.st_mode, None)
    return state


def query(database: Path, sql: str) -> list:
    """Run a read-only query on an SQLite database."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()
