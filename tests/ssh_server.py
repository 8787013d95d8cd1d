"""A real OpenSSH server on loopback for the SSH node tests.

Debian's sshd runs with a config of the suite's own on a free port, with a throwaway host key, a user key
and a password; it logs in the dedicated user ``tfssh`` (made here if missing, since password logins need
a real account). Password and key logins are both enabled."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

USER = "tfssh"


def ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
        return pwd.getpwnam(USER)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path, passphrase: str = "") -> None:
    command = ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "talkforge-test", "-f", str(path)]
    subprocess.run(command, check=True)


def fingerprint(public_key: Path) -> str:
    output = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)], check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    return output.split()[1]


@dataclass
class SSHServer:
    host: str
    port: int
    user: str
    password: str
    private_key: str
    encrypted_key: str
    key_passphrase: str
    host_key_path: Path
    folder: Path
    process: subprocess.Popen | None = None

    @property
    def host_fingerprint(self) -> str:
        return fingerprint(self.host_key_path.with_suffix(".pub"))

    @property
    def home(self) -> Path:
        return Path(pwd.getpwnam(self.user).pw_dir)

    def config_text(self) -> str:
        return "\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
            "StrictModes no",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "UsePAM no",
            "PermitRootLogin no",
            f"AllowUsers {self.user}",
            "MaxStartups 100",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            "",
        ])  # fmt: skip

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        config = self.folder / "sshd_config"
        config.write_text(self.config_text())
        log = open(self.folder / "sshd.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"sshd exited: {(self.folder / 'sshd.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            self.process.wait(10)

    def new_host_key(self) -> None:
        """Restart with a different host key, as a reinstalled (or impersonated) server would present."""
        self.stop()
        for suffix in ("", ".pub"):
            Path(f"{self.host_key_path}{suffix}").unlink()
        keygen(self.host_key_path)
        self.start()

    @property
    def run_folder(self) -> Path:
        """This run's folder in the SSH user's home (removed at the end; concurrent runs have their own)."""
        return self.home / "talkforge-tests" / self.folder.name

    def user_folder(self, name: str) -> Path:
        """A fresh folder owned by the SSH user in its home."""
        account = pwd.getpwnam(self.user)
        folder = self.run_folder / f"{name}-{secrets.token_hex(4)}"
        folder.mkdir(parents=True)
        for path in (self.home / "talkforge-tests", self.run_folder, folder):
            os.chown(path, account.pw_uid, account.pw_gid)
        return folder


def start_server(folder: Path) -> SSHServer:
    account = ensure_user()
    password = secrets.token_urlsafe(16)
    subprocess.run(["chpasswd"], input=f"{USER}:{password}\n", text=True, check=True)
    keygen(folder / "host_ed25519")
    keygen(folder / "user_ed25519")
    passphrase = secrets.token_urlsafe(8)
    keygen(folder / "user_protected", passphrase)
    authorized = (folder / "user_ed25519.pub").read_text() + (folder / "user_protected.pub").read_text()
    (folder / "authorized_keys").write_text(authorized)
    (folder / "authorized_keys").chmod(0o644)
    os.chmod(folder, 0o755)
    server = SSHServer(
        host="127.0.0.1", port=free_port(), user=account.pw_name, password=password,
        private_key=(folder / "user_ed25519").read_text(),
        encrypted_key=(folder / "user_protected").read_text(), key_passphrase=passphrase,
        host_key_path=folder / "host_ed25519", folder=folder,
    )  # fmt: skip
    server.start()
    return server
