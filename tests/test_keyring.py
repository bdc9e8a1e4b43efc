"""Tests for ``garrison.keyring``: key files on disk and sealing of upstream credentials."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from garrison.domain import Secret
from garrison.errors import ConfigError
from garrison.keyring import (
    PEPPER_BYTES,
    PEPPER_FILE,
    SEAL_FILE,
    Sealer,
    add_seal_key,
    create_key_files,
    load_pepper,
    read_secret_file,
    replace_secret_file,
    write_secret_file,
)

UPSTREAM_KEY = "sk-upstream-0123456789abcdef"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def seal_keys(key_dir: Path) -> list[str]:
    return [line for line in (key_dir / SEAL_FILE).read_text().splitlines() if line.strip()]


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    create_key_files(directory)
    return directory


# ── key files ─────────────────────────────────────────────────────────────────────────────


def test_pepper_file_is_created_owner_only(key_dir: Path) -> None:
    assert mode(key_dir / PEPPER_FILE) == 0o600


def test_seal_file_is_created_owner_only(key_dir: Path) -> None:
    assert mode(key_dir / SEAL_FILE) == 0o600


def test_write_secret_file_creates_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    write_secret_file(path, "x\n")
    assert mode(path) == 0o600


def test_write_secret_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    write_secret_file(path, "first\n")
    with pytest.raises(FileExistsError):
        write_secret_file(path, "second\n")


def test_write_secret_file_refusal_leaves_the_old_content(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    write_secret_file(path, "first\n")
    with pytest.raises(FileExistsError):
        write_secret_file(path, "second\n")
    assert path.read_text() == "first\n"


def test_create_key_files_twice_keeps_the_pepper(key_dir: Path) -> None:
    before = (key_dir / PEPPER_FILE).read_text()
    with pytest.raises(FileExistsError):
        create_key_files(key_dir)
    assert (key_dir / PEPPER_FILE).read_text() == before


def test_replace_secret_file_keeps_owner_only(key_dir: Path) -> None:
    path = key_dir / SEAL_FILE
    replace_secret_file(path, "new\n")
    assert (path.read_text(), mode(path)) == ("new\n", 0o600)


def test_replace_secret_file_renames_a_whole_new_file_over_the_old(key_dir: Path) -> None:
    """The old file is swapped, not rewritten: one already open still reads the old key
    whole, and the path gives the new one (a rewrite in place would show a reader an empty
    or half-written file)."""
    path = key_dir / SEAL_FILE
    old = path.read_text()
    with path.open() as opened:
        replace_secret_file(path, "new\n")
        assert opened.read() == old
    assert path.read_text() == "new\n"


def test_replace_secret_file_leaves_no_temporary(key_dir: Path) -> None:
    before = sorted(p.name for p in key_dir.iterdir())
    replace_secret_file(key_dir / SEAL_FILE, "new\n")
    assert sorted(p.name for p in key_dir.iterdir()) == before


def test_replace_secret_file_that_fails_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "a.key"
    path.mkdir()  # nothing can be renamed over a directory
    with pytest.raises(OSError):
        replace_secret_file(path, "new\n")
    assert [p.name for p in tmp_path.iterdir()] == ["a.key"]


# Replacements a reader races against: enough for a rewrite in place to be caught mid-way.
REPLACE_ROUNDS = 300


def test_a_reader_never_sees_a_partial_replaced_file(key_dir: Path) -> None:
    path = key_dir / SEAL_FILE
    contents = {"a" * 4096 + "\n", "b" * 4096 + "\n"}
    replace_secret_file(path, "a" * 4096 + "\n")
    seen: set[str] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.add(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(REPLACE_ROUNDS):
            replace_secret_file(path, ("a" if n % 2 else "b") * 4096 + "\n")
    finally:
        done.set()
        reader.join(10)
    assert seen and seen <= contents


def test_pepper_holds_32_bytes(key_dir: Path) -> None:
    assert len(load_pepper(key_dir)) == PEPPER_BYTES == 32


def test_two_key_dirs_get_different_peppers(tmp_path: Path) -> None:
    create_key_files(tmp_path / "a")
    create_key_files(tmp_path / "b")
    assert load_pepper(tmp_path / "a") != load_pepper(tmp_path / "b")


@pytest.mark.parametrize("bits", [0o640, 0o620, 0o610, 0o604, 0o602, 0o601, 0o644, 0o666])
def test_key_file_open_to_group_or_world_is_refused(key_dir: Path, bits: int) -> None:
    (key_dir / PEPPER_FILE).chmod(bits)
    with pytest.raises(ConfigError):
        load_pepper(key_dir)


def test_refusal_of_a_readable_key_file_names_chmod(key_dir: Path) -> None:
    (key_dir / PEPPER_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match=r"chmod 600"):
        load_pepper(key_dir)


def test_refusal_of_a_readable_key_file_names_the_file(key_dir: Path) -> None:
    (key_dir / SEAL_FILE).chmod(0o640)
    with pytest.raises(ConfigError, match=SEAL_FILE):
        Sealer.from_dir(key_dir)


def test_refusal_of_a_readable_key_file_does_not_show_its_content(key_dir: Path) -> None:
    content = (key_dir / PEPPER_FILE).read_text().strip()
    (key_dir / PEPPER_FILE).chmod(0o644)
    with pytest.raises(ConfigError) as info:
        load_pepper(key_dir)
    assert content not in str(info.value)


def test_missing_key_file_is_a_config_error_naming_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"garrison init"):
        read_secret_file(tmp_path / PEPPER_FILE)


def test_pepper_that_is_not_hex_is_a_config_error(tmp_path: Path) -> None:
    write_secret_file(tmp_path / PEPPER_FILE, "not hex at all\n")
    with pytest.raises(ConfigError, match=r"not hex"):
        load_pepper(tmp_path)


def test_short_pepper_is_a_config_error(tmp_path: Path) -> None:
    write_secret_file(tmp_path / PEPPER_FILE, "ab" * 31 + "\n")
    with pytest.raises(ConfigError, match=r"fewer than 32 bytes"):
        load_pepper(tmp_path)


# ── sealing ───────────────────────────────────────────────────────────────────────────────


def test_sealed_value_unseals_to_itself(key_dir: Path) -> None:
    sealer = Sealer.from_dir(key_dir)
    assert sealer.unseal(sealer.seal(UPSTREAM_KEY)).reveal() == UPSTREAM_KEY


def test_sealed_value_does_not_contain_the_plaintext(key_dir: Path) -> None:
    assert UPSTREAM_KEY.encode() not in Sealer.from_dir(key_dir).seal(UPSTREAM_KEY)


def test_unseal_returns_a_secret(key_dir: Path) -> None:
    sealer = Sealer.from_dir(key_dir)
    assert isinstance(sealer.unseal(sealer.seal(UPSTREAM_KEY)), Secret)


def test_value_sealed_before_add_seal_key_still_unseals_after(key_dir: Path) -> None:
    token = Sealer.from_dir(key_dir).seal(UPSTREAM_KEY)
    add_seal_key(key_dir)
    assert Sealer.from_dir(key_dir).unseal(token).reveal() == UPSTREAM_KEY


def test_add_seal_key_puts_a_new_key_first_and_keeps_the_old(key_dir: Path) -> None:
    old = seal_keys(key_dir)
    add_seal_key(key_dir)
    new = seal_keys(key_dir)
    assert (len(new), new[1:]) == (2, old)


def test_add_seal_key_keeps_the_file_owner_only(key_dir: Path) -> None:
    add_seal_key(key_dir)
    assert mode(key_dir / SEAL_FILE) == 0o600


def test_add_seal_key_refuses_a_readable_seal_file(key_dir: Path) -> None:
    (key_dir / SEAL_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match=r"chmod"):
        add_seal_key(key_dir)


def test_rotated_token_opens_with_only_the_newest_key(key_dir: Path) -> None:
    token = Sealer.from_dir(key_dir).seal(UPSTREAM_KEY)
    add_seal_key(key_dir)
    rotated = Sealer.from_dir(key_dir).rotate(token)
    newest_only = Sealer([seal_keys(key_dir)[0]])
    assert newest_only.unseal(rotated).reveal() == UPSTREAM_KEY


def test_unrotated_token_does_not_open_with_only_the_newest_key(key_dir: Path) -> None:
    token = Sealer.from_dir(key_dir).seal(UPSTREAM_KEY)
    add_seal_key(key_dir)
    newest_only = Sealer([seal_keys(key_dir)[0]])
    with pytest.raises(ConfigError):
        newest_only.unseal(token)


def test_new_seals_after_add_seal_key_use_the_newest_key(key_dir: Path) -> None:
    add_seal_key(key_dir)
    token = Sealer.from_dir(key_dir).seal(UPSTREAM_KEY)
    assert Sealer([seal_keys(key_dir)[0]]).unseal(token).reveal() == UPSTREAM_KEY


def test_token_from_another_key_set_is_a_config_error(key_dir: Path) -> None:
    foreign = Sealer([Fernet.generate_key().decode()]).seal(UPSTREAM_KEY)
    with pytest.raises(ConfigError):
        Sealer.from_dir(key_dir).unseal(foreign)


def test_token_from_another_key_set_error_does_not_leak_the_value(key_dir: Path) -> None:
    foreign = Sealer([Fernet.generate_key().decode()]).seal(UPSTREAM_KEY)
    with pytest.raises(ConfigError) as info:
        Sealer.from_dir(key_dir).unseal(foreign)
    err = info.value
    shown = " ".join([str(err), repr(err), err.detail, err.public_message])
    assert UPSTREAM_KEY not in shown
    assert foreign.decode() not in shown


def test_token_from_another_key_set_error_has_no_chained_cause(key_dir: Path) -> None:
    foreign = Sealer([Fernet.generate_key().decode()]).seal(UPSTREAM_KEY)
    with pytest.raises(ConfigError) as info:
        Sealer.from_dir(key_dir).unseal(foreign)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_rotating_a_token_from_another_key_set_is_a_config_error(key_dir: Path) -> None:
    foreign = Sealer([Fernet.generate_key().decode()]).seal(UPSTREAM_KEY)
    with pytest.raises(ConfigError):
        Sealer.from_dir(key_dir).rotate(foreign)


def test_garbage_token_is_a_config_error(key_dir: Path) -> None:
    with pytest.raises(ConfigError):
        Sealer.from_dir(key_dir).unseal(b"not a fernet token")


def test_sealer_without_keys_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"no sealing keys"):
        Sealer([])


def test_sealer_with_an_invalid_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"not a valid Fernet key"):
        Sealer(["definitely-not-a-fernet-key"])


def test_invalid_key_error_does_not_show_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        Sealer(["definitely-not-a-fernet-key"])
    assert "definitely-not-a-fernet-key" not in str(info.value)


def test_seal_file_with_blank_lines_loads_every_key(tmp_path: Path) -> None:
    keys = [Fernet.generate_key().decode() for _ in range(2)]
    write_secret_file(tmp_path / SEAL_FILE, f"\n{keys[0]}\n\n  {keys[1]}  \n\n")
    assert Sealer.from_dir(tmp_path).key_count == 2


# ── Secret ────────────────────────────────────────────────────────────────────────────────


def test_secret_repr_hides_the_value() -> None:
    assert UPSTREAM_KEY not in repr(Secret(UPSTREAM_KEY))


def test_secret_str_hides_the_value() -> None:
    assert UPSTREAM_KEY not in str(Secret(UPSTREAM_KEY))


def test_secret_in_a_formatted_container_hides_the_value() -> None:
    held = {"key": [Secret(UPSTREAM_KEY)]}
    assert UPSTREAM_KEY not in f"{held} {held!r}"


def test_secret_reveal_returns_the_value() -> None:
    assert Secret(UPSTREAM_KEY).reveal() == UPSTREAM_KEY


# Rotations run at once (two operators, or a script retried while the first still runs).
ROTATORS = 6
ROTATIONS_EACH = 5


def test_rotations_at_once_keep_every_added_sealing_key(key_dir: Path) -> None:
    """A rotation reads the key file, adds a key and replaces the file: two at once must
    not drop the other's key (a credential re-encrypted under a dropped key is lost)."""
    first = seal_keys(key_dir)
    start = threading.Barrier(ROTATORS)
    errors: list[BaseException] = []

    def rotate() -> None:
        try:
            start.wait(10)
            for _ in range(ROTATIONS_EACH):
                add_seal_key(key_dir)
        except BaseException as exc:  # reported below, with the count
            errors.append(exc)

    threads = [threading.Thread(target=rotate) for _ in range(ROTATORS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    keys = seal_keys(key_dir)
    assert not errors
    assert len(keys) == len(set(keys)) == len(first) + ROTATORS * ROTATIONS_EACH
    assert keys[-len(first) :] == first
