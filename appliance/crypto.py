"""Sealed recordings: files encrypted for the clinic's X25519 public key, opened only with its private key.

The envelope is ECIES-style and streamed in chunks, so an hour-long call never sits in memory whole:

    header = b"RGSEAL01" | ephemeral X25519 public key (32) | recipient key id (8) | chunk size (4, big endian)
    key    = HKDF-SHA256(X25519(ephemeral, recipient), salt = ephemeral pub | recipient pub, info = _INFO)
    chunk  = ChaCha20-Poly1305(key, nonce = chunk index (11 bytes, big endian) | last flag (1), aad = header)

Every chunk is authenticated with the header; the last one carries the flag, so a truncated, reordered or
altered file is refused instead of half-decrypted. The box holds only the public key: a stolen SD card leaks
no conversation. The manager keeps the private key (``registratura recordings keygen``) on their computer.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from appliance.errors import RegistraturaError
from appliance.fsutil import fsync_dir

MAGIC = b"RGSEAL01"
SUFFIX = ".sealed"
CHUNK = 64 * 1024
_TAG = 16
_INFO = b"registratura sealed recording v1"
_HEADER = len(MAGIC) + 32 + 8 + 4
PRIVATE_NAME = "recordings.key"
PUBLIC_NAME = "recordings.pub"


class SealError(RegistraturaError):
    """A key or a sealed file is wrong: the message says which and what to do."""

    code = "E600"


# ------------------------------------------------------------------------------------------------ keys


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: X25519PublicKey) -> bytes:
    """8 bytes that name a public key, so a file sealed for another key is recognised as such."""
    return hashlib.sha256(_raw(public)).digest()[:8]


def generate_keypair(directory: Path, passphrase: bytes | None = None, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``recordings.key`` (private, mode 0600) and ``recordings.pub`` (for the box) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    if not force and (private_path.exists() or public_path.exists()):
        raise SealError(f"{private_path} or {public_path} exists already; keep the old pair (files sealed for it "
                        "need it) or pass --force to overwrite it")
    private = X25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    _write_new(private_path, pem, 0o600)
    pub = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(public_path, pub, 0o644)
    return private_path, public_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def load_public_key(path: Path | str) -> X25519PublicKey:
    """The clinic's public key (PEM, as written by keygen or ``openssl pkey -pubout``)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SealError(f"{path}: cannot read the public key ({exc.strerror}); copy recordings.pub from "
                        "`registratura recordings keygen` there") from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise SealError(f"{path}: not a PEM public key; use the recordings.pub that keygen wrote") from None
    if not isinstance(key, X25519PublicKey):
        raise SealError(f"{path}: a {type(key).__name__.lstrip('_')}, not an X25519 key; "
                        "make one with `registratura recordings keygen`")
    return key


def load_private_key(path: Path | str, passphrase: bytes | None = None) -> X25519PrivateKey:
    """The manager's private key; raises SealError (code E601) when it needs a passphrase that was not given."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SealError(f"{path}: cannot read the private key ({exc.strerror})") from None
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        if passphrase is None:
            raise SealError(f"{path}: the private key is protected by a passphrase; give it", code="E601") from None
        raise SealError(f"{path}: the key is not protected; leave the passphrase out") from None
    except ValueError:
        raise SealError(f"{path}: not a PEM private key, or a wrong passphrase") from None
    if not isinstance(key, X25519PrivateKey):
        raise SealError(f"{path}: not an X25519 private key; use the recordings.key that keygen wrote")
    return key


# ------------------------------------------------------------------------------------------------ sealing


def _derive(shared: bytes, ephemeral: bytes, recipient: bytes) -> ChaCha20Poly1305:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=_INFO).derive(shared)
    return ChaCha20Poly1305(key)


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _chunks(src: BinaryIO, size: int) -> Iterator[tuple[bytes, bool]]:
    """(chunk, is_last) pairs; an empty source gives one empty last chunk."""
    current = src.read(size)
    while True:
        following = src.read(size)
        yield current, not following
        if not following:
            return
        current = following


def seal_stream(src: BinaryIO, dst: BinaryIO, public: X25519PublicKey, chunk: int = CHUNK) -> None:
    ephemeral = X25519PrivateKey.generate()
    eph_raw = _raw(ephemeral.public_key())
    header = MAGIC + eph_raw + key_id(public) + chunk.to_bytes(4, "big")
    aead = _derive(ephemeral.exchange(public), eph_raw, _raw(public))
    dst.write(header)
    for index, (data, last) in enumerate(_chunks(src, chunk)):
        dst.write(aead.encrypt(_nonce(index, last), data, header))


def open_stream(src: BinaryIO, dst: BinaryIO, private: X25519PrivateKey, name: str = "file") -> None:
    header = src.read(_HEADER)
    if len(header) < _HEADER or not header.startswith(MAGIC):
        raise SealError(f"{name}: not a sealed recording (no {MAGIC.decode()} header)")
    eph_raw = header[len(MAGIC):len(MAGIC) + 32]
    kid = header[len(MAGIC) + 32:len(MAGIC) + 40]
    chunk = int.from_bytes(header[-4:], "big")
    public = private.public_key()
    if kid != key_id(public):
        raise SealError(f"{name}: sealed for another key (id {kid.hex()}, this key is {key_id(public).hex()}); "
                        "use the private key whose recordings.pub the box had then")
    if not 0 < chunk <= 1 << 24:
        raise SealError(f"{name}: damaged header (chunk size {chunk})")
    aead = _derive(private.exchange(X25519PublicKey.from_public_bytes(eph_raw)), eph_raw, _raw(public))
    for index, (data, last) in enumerate(_chunks(src, chunk + _TAG)):
        try:
            dst.write(aead.decrypt(_nonce(index, last), data, header))
        except InvalidTag:
            raise SealError(f"{name}: damaged or truncated at chunk {index}; nothing after it can be trusted"
                            ) from None


def seal_file(plain: Path, public: X25519PublicKey, *, keep_plain: bool = False) -> Path:
    """Encrypt ``plain`` to ``plain.sealed`` (mode 0600, written atomically) and remove the plaintext (unless
    ``keep_plain``: the caller removes it once the call record points at the sealed file)."""
    plain = Path(plain)
    sealed = plain.with_name(plain.name + SUFFIX)
    tmp = sealed.with_name(f"{sealed.name}.{os.getpid()}.tmp")
    try:
        with open(plain, "rb") as src, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as dst:
            seal_stream(src, dst, public)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, sealed)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(sealed.parent)
    if not keep_plain:
        plain.unlink()
    return sealed


def open_file(sealed: Path, out: Path, private: X25519PrivateKey) -> None:
    """Decrypt ``sealed`` to ``out`` (mode 0600); nothing is left at ``out`` if the file is damaged."""
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    try:
        with open(sealed, "rb") as src, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as dst:
            open_stream(src, dst, private, str(sealed))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_sealed(path: Path | str) -> bool:
    return str(path).endswith(SUFFIX)


