"""Key files kept outside the database, and sealing of upstream credentials.

Two files live in the key directory, each created with mode 0600 and refused if anyone but
the owner can read it:

* ``pepper.key`` — 32 random bytes (hex). API-key secrets are stored as HMACs under it, so a
  stolen database (a backup, a replica) yields no usable key.
* ``seal.keys`` — Fernet keys, one per line, newest first. Upstream credentials are encrypted
  with the newest; any listed key can decrypt, so a new key can be added and every sealed
  value re-encrypted (``garrison keys rotate-seal``) without downtime.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from garrison.domain.secret import Secret
from garrison.errors import ConfigError

PEPPER_FILE = "pepper.key"
SEAL_FILE = "seal.keys"
# Encrypts captured request bodies: a key of its own, so reading prompts is a separate
# privilege from running the gateway's upstream calls.
CAPTURE_FILE = "capture.keys"
# 32 bytes: the HMAC-SHA-256 key size; more adds nothing, less weakens the HMAC.
PEPPER_BYTES = 32
_OWNER_ONLY = 0o600


def _private_copy(path: Path, text: str) -> Path:
    """``text`` written whole (and synced) to a new mode-0600 file beside ``path``, under a
    name no other writer uses; the caller moves it into place or removes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _OWNER_ONLY)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_secret_file(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600, whole or not at all; never overwrite an existing key
    (``FileExistsError``). Written to a private file first and linked into place: replicas
    starting together on one key directory never read a key file still being written (one
    made with O_EXCL and then written was seen empty by another replica's first start)."""
    tmp = _private_copy(path, text)
    try:
        os.link(tmp, path)  # atomic, and refuses an existing path
    finally:
        tmp.unlink(missing_ok=True)


def replace_secret_file(path: Path, text: str) -> None:
    """Atomically replace a key file, keeping mode 0600: written to a private file first and
    renamed over it, so a reader sees the old key file or the new one, whole."""
    tmp = _private_copy(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def update_secret_file(path: Path, change: Callable[[str], str]) -> str:
    """Replace a key file with ``change`` of its current text (``replace_secret_file``),
    one update at a time: an exclusive lock on the key directory is held from the read to
    the rename, so two rotations at once (two operators, a retried script) each add their
    key; without it the later rename dropped the other's (a credential re-sealed under a
    dropped key could never be read again). Returns the text written."""
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)  # released when the descriptor is closed
        text = change(read_secret_file(path))
        replace_secret_file(path, text)
        return text
    finally:
        os.close(directory)


def read_secret_file(path: Path) -> str:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"key file {path} does not exist (run `garrison init`)") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"key file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
            "run `chmod 600` on it"
        )
    return path.read_text().strip()


def create_key_files(key_dir: Path) -> None:
    write_secret_file(key_dir / PEPPER_FILE, secrets.token_hex(PEPPER_BYTES) + "\n")
    write_secret_file(key_dir / SEAL_FILE, Fernet.generate_key().decode() + "\n")
    write_secret_file(key_dir / CAPTURE_FILE, Fernet.generate_key().decode() + "\n")


def load_pepper(key_dir: Path) -> bytes:
    text = read_secret_file(key_dir / PEPPER_FILE)
    try:
        pepper = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{key_dir / PEPPER_FILE} is not hex") from None
    if len(pepper) < PEPPER_BYTES:
        raise ConfigError(f"{key_dir / PEPPER_FILE} holds fewer than {PEPPER_BYTES} bytes")
    return pepper


class Sealer:
    """Encrypts upstream credentials at rest (Fernet: AES-128-CBC + HMAC-SHA-256)."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ConfigError("no sealing keys")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except ValueError:
            raise ConfigError("a sealing key is not a valid Fernet key") from None
        self.key_count = len(keys)

    @classmethod
    def from_dir(cls, key_dir: Path, file: str = SEAL_FILE) -> Sealer:
        lines = read_secret_file(key_dir / file).splitlines()
        return cls([line.strip() for line in lines if line.strip()])

    def seal(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def seal_bytes(self, value: bytes) -> bytes:
        return self._fernet.encrypt(value)

    def unseal_bytes(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise ConfigError("a sealed value cannot be decrypted with any key") from None

    def unseal(self, token: bytes) -> Secret:
        try:
            return Secret(self._fernet.decrypt(token).decode())
        except InvalidToken:
            raise ConfigError(
                "a sealed upstream credential cannot be decrypted with any key"
            ) from None

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt ``token`` under the newest key."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise ConfigError(
                "a sealed upstream credential cannot be decrypted with any key"
            ) from None


def add_seal_key(key_dir: Path) -> None:
    """Put a new newest key at the top of ``seal.keys``; older keys stay for decryption."""
    new = Fernet.generate_key().decode()
    update_secret_file(key_dir / SEAL_FILE, lambda old: new + "\n" + old + "\n")
