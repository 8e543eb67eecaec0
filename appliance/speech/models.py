"""Model manager: the manifest of known speech models, what is installed, verify, fetch and choose (no sherpa)."""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from appliance.errors import SpeechError, located
from appliance.fsutil import fsync_dir

_LOGGER = logging.getLogger(__name__)

SHARE_MANIFEST = Path("/usr/share/registratura/models/manifest.yaml")
REPO_MANIFEST = Path(__file__).resolve().parents[2] / "models" / "manifest.yaml"
STAMP = ".registratura-install.json"  # written into every fetched model: where it came from and its file hashes
DOWNLOADS = ".downloads"
CHUNK = 1 << 20

KINDS = ("vad", "asr", "tts")
FAMILIES = {
    "vad": ("silero_vad",),
    "asr": ("streaming_ctc_tone", "streaming_zipformer", "nemo_ctc"),
    "tts": ("piper_vits",),
}
FORMATS = ("tar.bz2", "tar.gz", "tar.xz", "zip", "file")
_KEYS = {"name", "kind", "family", "language", "sample_rate", "license", "url", "sha256", "format", "root",
         "files", "default", "rank", "streaming", "bundled", "size_mb", "description", "homepage"}
_REQUIRED = ("name", "kind", "family", "language", "sample_rate", "license", "files")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_WHEN_NONE = {
    "vad": "VAD: no model installed; the energy detector decides when the caller speaks",
    "asr": "ASR: none installed; spoken menu choices disabled",
    "tts": "TTS: no neural voice installed; only pre-rendered prompts and espeak-ng speak",
}

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None)


# ----------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ModelFile:
    path: str  # relative to the model directory, posix separators
    sha256: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str
    family: str
    language: str
    sample_rate: int
    license: str
    files: tuple[ModelFile, ...]
    url: str | None = None
    sha256: str | None = None  # of the downloaded archive (or of the file itself for format "file")
    format: str | None = None  # None: guessed from the url
    root: str | None = None  # top directory inside the archive; None: the single top directory, if any
    default: bool = False  # what a production box fetches for this kind
    rank: int = 50  # 1 = first choice among installed models of a kind
    streaming: bool = False
    bundled: bool = False  # ships with the box next to the manifest (models/<name>/), never fetched
    size_mb: float | None = None  # download size, for the list
    description: str = ""
    line: int | None = None  # where the entry starts in the manifest

    @property
    def archive_format(self) -> str:
        if self.format:
            return self.format
        tail = (self.url or "").rsplit("/", 1)[-1].lower()
        for fmt in ("tar.bz2", "tar.gz", "tar.xz", "zip"):
            if tail.endswith("." + fmt) or (fmt == "tar.gz" and tail.endswith(".tgz")):
                return fmt
        return "file"


@dataclass(frozen=True)
class Manifest:
    path: Path
    entries: dict[str, ModelEntry]

    def get(self, name: str) -> ModelEntry:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(sorted(self.entries))
            raise SpeechError(f"{self.path}: no model named {name!r}; known models: {known}", code="E506") from None

    def bundled_dir(self, entry: ModelEntry) -> Path:
        """Bundled models live next to the manifest: models/<name>/ in the repo, /usr/share/... on a box."""
        return self.path.parent / entry.name


def default_manifest_path() -> Path:
    """$REGISTRATURA_MODELS_MANIFEST, else the repo's models/manifest.yaml, else the installed box's copy."""
    env = os.environ.get("REGISTRATURA_MODELS_MANIFEST")
    if env:
        return Path(env)
    return REPO_MANIFEST if REPO_MANIFEST.is_file() else SHARE_MANIFEST


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Load and validate the manifest; raise SpeechError E501 listing every problem with file:line and entry."""
    path = Path(path) if path is not None else default_manifest_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpeechError(f"{path}: cannot read the model manifest ({exc.strerror}); reinstall the package or "
                          "pass --manifest", code="E501") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpeechError(located(path, mark.line + 1 if mark else None, f"invalid YAML: {exc}; fix the syntax"),
                          code="E501") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise SpeechError(f"{path}: expected a mapping with a 'models:' list", code="E501")
    items = next(v for k, v in root.value if k.value == "models").value
    problems: list[str] = []
    entries: dict[str, ModelEntry] = {}
    for i, (raw, node) in enumerate(zip(data["models"], items, strict=True)):
        line = node.start_mark.line + 1
        label = raw.get("name") if isinstance(raw, dict) and isinstance(raw.get("name"), str) else f"#{i + 1}"
        try:
            entry = _entry(raw, line)
        except ValueError as exc:
            problems.append(located(path, line, f"model {label}: {exc}"))
            continue
        if entry.name in entries:
            problems.append(located(path, line, f"model {entry.name}: duplicate name (first at line "
                                                f"{entries[entry.name].line}); rename one"))
            continue
        entries[entry.name] = entry
    seen: dict[tuple[str, str], str] = {}
    for e in entries.values():
        if e.default:
            other = seen.setdefault((e.kind, e.language), e.name)
            if other != e.name:
                problems.append(located(path, e.line, f"model {e.name}: second default for {e.kind}/{e.language} "
                                                      f"(also {other}); keep one 'default: true'"))
    if problems:
        raise SpeechError("model manifest is invalid:\n" + "\n".join(problems), code="E501")
    return Manifest(path, entries)


def _entry(raw: Any, line: int) -> ModelEntry:
    if not isinstance(raw, dict):
        raise ValueError("each model must be a mapping (name: ..., kind: ..., ...)")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(sorted(_KEYS))}")
    missing = [k for k in _REQUIRED if raw.get(k) in (None, "", [])]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    name, kind, family = str(raw["name"]), raw["kind"], raw["family"]
    if not _NAME.match(name):
        raise ValueError("name must be lowercase letters, digits, '.', '_' or '-' (it becomes a directory name)")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if family not in FAMILIES[kind]:
        raise ValueError(f"family {family!r} is not a {kind} family; use one of {', '.join(FAMILIES[kind])}")
    if not isinstance(raw["sample_rate"], int) or not 8000 <= raw["sample_rate"] <= 48000:
        raise ValueError(f"sample_rate {raw['sample_rate']!r} must be an integer in Hz (8000..48000)")
    bundled = raw.get("bundled", False) is True
    url = raw.get("url")
    if not bundled and not (isinstance(url, str) and re.match(r"^(https?|file)://", url)):
        raise ValueError("url must be an http(s):// or file:// address of the official release archive")
    sha = raw.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA.match(sha)):
        raise ValueError("sha256 must be 64 lowercase hex digits, or null until first download")
    fmt = raw.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    files = []
    for f in raw["files"]:
        fpath, fsha = (f, None) if isinstance(f, str) else (f.get("path"), f.get("sha256")) \
            if isinstance(f, dict) else (None, None)
        if not isinstance(fpath, str) or not _safe_relative(fpath):
            raise ValueError(f"file {f!r}: give a relative path inside the model directory (no '..')")
        if fsha is not None and not (isinstance(fsha, str) and _SHA.match(fsha)):
            raise ValueError(f"file {fpath}: sha256 must be 64 lowercase hex digits or null")
        files.append(ModelFile(fpath, fsha))
    rank = raw.get("rank", 50)
    if not isinstance(rank, int) or rank < 1:
        raise ValueError("rank must be a whole number >= 1 (1 = first choice)")
    entry = ModelEntry(name=name, kind=kind, family=family, language=str(raw["language"]),
                       sample_rate=raw["sample_rate"], license=str(raw["license"]), files=tuple(files),
                       url=url, sha256=sha, format=fmt, root=raw.get("root"), default=raw.get("default") is True,
                       rank=rank, streaming=raw.get("streaming") is True, bundled=bundled,
                       size_mb=raw.get("size_mb"), description=str(raw.get("description") or ""), line=line)
    if not bundled and entry.archive_format == "file" and len(files) != 1:
        raise ValueError("a plain-file download (format: file) must list exactly one file")
    return entry


def _safe_relative(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return bool(name) and not p.is_absolute() and ".." not in p.parts and not re.match(r"^[A-Za-z]:", name)


def _manifest(manifest: Manifest | str | Path | None) -> Manifest:
    return manifest if isinstance(manifest, Manifest) else load_manifest(manifest)


# ------------------------------------------------------------------------------- installed / verify


@dataclass(frozen=True)
class InstalledModel:
    entry: ModelEntry
    path: Path
    size_bytes: int

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one model; ``severity`` "note" does not fail `models verify`."""

    model: str
    path: Path | None
    what: str
    fix: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.model}: {where}{self.what}; {self.fix}"


def model_dir(entry: ModelEntry, models_dir: Path, manifest: Manifest) -> Path:
    return manifest.bundled_dir(entry) if entry.bundled else Path(models_dir) / entry.name


def _complete(entry: ModelEntry, path: Path) -> bool:
    return path.is_dir() and all((path / f.path).is_file() for f in entry.files)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def installed(models_dir: str | Path, manifest: Manifest | str | Path | None = None) -> list[InstalledModel]:
    """Models whose expected files are all present (a cheap check: no hashing), best rank first."""
    man = _manifest(manifest)
    out = []
    for entry in man.entries.values():
        path = model_dir(entry, Path(models_dir), man)
        if _complete(entry, path):
            out.append(InstalledModel(entry, path, dir_size(path)))
    return sorted(out, key=lambda m: (KINDS.index(m.entry.kind), m.entry.rank, m.entry.name))


def file_sha256(path: Path, progress: Progress | None = None) -> str:
    h, done = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            done += len(block)
            if progress:
                progress(done, None)
    return h.hexdigest()


def _stamp(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / STAMP).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def verify(models_dir: str | Path, name: str | None = None,
           manifest: Manifest | str | Path | None = None) -> list[Problem]:
    """Hash every file of the installed models (or of ``name``) against the manifest and the install stamp."""
    man = _manifest(manifest)
    entries = [man.get(name)] if name else list(man.entries.values())
    problems: list[Problem] = []
    for entry in entries:
        path = model_dir(entry, Path(models_dir), man)
        fix = f"run registratura models fetch {entry.name}"
        if entry.bundled:
            fix = f"rebuild it with tools/asr_train and commit it under models/{entry.name}/ (or reinstall the box)"
            if not path.is_dir() or not any(path.iterdir()):
                problems.append(Problem(entry.name, path, "bundled model not built yet", "the box runs without it "
                                        f"until {entry.name} is built (tools/asr_train)", severity="note"))
                continue
        elif not path.is_dir():
            if name:
                problems.append(Problem(entry.name, path, "not installed", fix))
            continue
        recorded = _stamp(path).get("files", {})
        for f in entry.files:
            fp = path / f.path
            if not fp.is_file():
                problems.append(Problem(entry.name, fp, "missing file", fix))
                continue
            want = f.sha256 or recorded.get(f.path)
            if want is None:
                continue
            got = file_sha256(fp)
            if got != want:
                source = "the manifest" if f.sha256 else "the install record"
                problems.append(Problem(entry.name, fp, f"sha256 mismatch (expected {want} from {source}, "
                                                        f"found {got}): the file is corrupt or was changed", fix))
    return problems


# ------------------------------------------------------------------------------------------- choose


def choose(models_dir: str | Path, kind: str, language: str = "ru",
           manifest: Manifest | str | Path | None = None) -> InstalledModel | None:
    """The best installed model of ``kind`` for ``language`` ("ru", "ru_RU", "ru-RU"), or None."""
    want = re.split(r"[_-]", language.lower())[0]
    for m in installed(models_dir, manifest):
        lang = re.split(r"[_-]", m.entry.language.lower())[0]
        if m.entry.kind == kind and lang in (want, "any", "*"):
            return m
    return None


def describe(kind: str, choice: InstalledModel | None) -> str:
    """The start-up line: "ASR: t-one-ru (streaming_ctc_tone, streaming, 8 kHz)" or why there is none."""
    if choice is None:
        return _WHEN_NONE[kind]
    e = choice.entry
    mode = ", streaming" if e.streaming else ""
    return f"{kind.upper()}: {e.name} ({e.family}{mode}, {e.sample_rate / 1000:g} kHz, {e.license})"


def startup_report(models_dir: str | Path, language: str = "ru",
                   manifest: Manifest | str | Path | None = None) -> dict[str, tuple[InstalledModel | None, str]]:
    """For each kind: the model the box will run with (or None) and the line to log at start."""
    out, man = {}, _manifest(manifest)
    for kind in KINDS:
        choice = choose(models_dir, kind, language, man)
        out[kind] = (choice, describe(kind, choice))
    return out


# -------------------------------------------------------------------------------------------- fetch


@dataclass(frozen=True)
class FetchResult:
    model: InstalledModel
    archive_sha256: str
    resumed_from: int  # bytes already on disk when the last download attempt started
    pinned: bool


def fetch(name: str, models_dir: str | Path, url_override: str | None = None, progress: Progress | None = None,
          *, allow_unpinned: bool = False, manifest: Manifest | str | Path | None = None, retries: int = 2,
          timeout: float = 60.0) -> FetchResult:
    """Download (resuming a .part), check the sha256, unpack safely and swap the model in atomically."""
    man = _manifest(manifest)
    entry = man.get(name)
    if entry.bundled:
        raise SpeechError(f"{name} ships with the box under {man.bundled_dir(entry)}; it is built by "
                          "tools/asr_train, not fetched", code="E506")
    url = url_override or entry.url
    assert url is not None  # validated by the manifest loader
    models_dir = Path(models_dir)
    downloads = models_dir / DOWNLOADS
    downloads.mkdir(parents=True, exist_ok=True)
    part = downloads / f"{name}-{hashlib.sha1(url.encode()).hexdigest()[:12]}.part"
    with _lock(downloads / f"{name}.lock"):
        _recover(models_dir, name)
        resumed = 0
        for attempt in range(retries + 1):
            resumed = part.stat().st_size if part.exists() else 0
            try:
                _download(url, part, progress, timeout)
                break
            except _Interrupted as exc:
                if attempt == retries:
                    raise SpeechError(f"{name}: download from {url} interrupted at {exc}; run the same command "
                                      f"again to resume from {part}", code="E502") from None
                _LOGGER.warning("download of %s interrupted at %s; resuming", name, exc)
                time.sleep(min(2.0 ** attempt, 10.0) * 0.1)
        got = file_sha256(part)
        if entry.sha256 and got != entry.sha256:
            part.unlink(missing_ok=True)
            raise SpeechError(f"{name}: archive sha256 mismatch: expected {entry.sha256}, got {got} (from {url}); "
                              "nothing was installed. Check the URL, or update the pin if the publisher replaced "
                              "the archive", code="E503")
        if not entry.sha256 and not allow_unpinned:
            raise SpeechError(f"{name}: the manifest pins no sha256 for this archive, so it was not installed. "
                              f"Downloaded archive sha256: {got} ({url}). Compare it with the publisher's, then "
                              "pin it in models/manifest.yaml, or rerun with --allow-unpinned", code="E507")
        try:
            model = _install(entry, part, models_dir, got, url)
        finally:  # installed, or a complete archive that cannot be installed: fetching it again will not help
            part.unlink(missing_ok=True)
    _LOGGER.info("installed model %s into %s", name, model.path)
    return FetchResult(model, got, resumed, bool(entry.sha256))


class _Interrupted(Exception):
    """The connection dropped; the .part file keeps what arrived."""


def _download(url: str, part: Path, progress: Progress | None, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "registratura-models/1"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - manifest/technician URLs
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # asked past the end: either complete already, or a different file
            size = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
            if size.isdigit() and int(size) == have:
                return
            part.unlink()
            return _download(url, part, progress, timeout)
        raise SpeechError(f"download failed: {url}: HTTP {exc.code} {exc.reason}; check the URL or the network",
                          code="E502") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SpeechError(f"download failed: {url}: {reason}; check the network or pass --url with a mirror",
                          code="E502") from None
    with resp:
        status = getattr(resp, "status", None) or 200
        start = 0
        if status == 206:
            m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range") or "")
            start = int(m.group(1)) if m else -1
            if start != have:  # a range we did not ask for: drop the partial file and ask for the whole
                resp.close()
                part.unlink()
                return _download(url, part, progress, timeout)
        if start != have:  # the server ignored Range (200): start again from zero
            if have:
                _LOGGER.info("server does not resume %s; downloading from the start", url)
            have = 0
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = have + expected if expected is not None else None
        got = 0
        with open(part, "r+b" if have else "wb") as out:
            out.seek(have)
            out.truncate()
            if progress:
                progress(have, total)
            try:
                while block := resp.read(CHUNK):
                    out.write(block)
                    got += len(block)
                    if progress:
                        progress(have + got, total)
            except (OSError, EOFError, ValueError, http.client.HTTPException) as exc:  # reset, timeout, cut
                out.flush()
                os.fsync(out.fileno())
                raise _Interrupted(f"{have + got} of {total or '?'} bytes ({exc.__class__.__name__})") from None
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and got < expected:  # http.client returns b"" on an early close
            raise _Interrupted(f"{have + got} of {total} bytes (connection closed)")


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpeechError(f"another fetch of this model is running (lock {path}); wait for it",
                              code="E502") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _recover(models_dir: Path, name: str) -> None:
    """Undo what a crash mid-fetch left: restore an old version set aside, drop half-unpacked directories."""
    final = models_dir / name
    for old in sorted(models_dir.glob(f".{name}.old-*")):
        if not final.exists() and (old / "model").is_dir():
            os.rename(old / "model", final)
            _LOGGER.warning("restored %s from an interrupted replace", final)
        shutil.rmtree(old, ignore_errors=True)
    for tmp in models_dir.glob(f".{name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def _install(entry: ModelEntry, archive: Path, models_dir: Path, archive_sha: str, url: str) -> InstalledModel:
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=models_dir))
    try:
        fmt = entry.archive_format
        if fmt == "file":
            dest = tmp / entry.files[0].path
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(archive, dest)
            root = tmp
        else:
            _unpack(archive, tmp, entry.name)
            root = _model_root(tmp, entry)
        hashes = {}
        for f in entry.files:
            fp = root / f.path
            if not fp.is_file():
                raise SpeechError(f"{entry.name}: the archive has no {f.path} (expected files: "
                                  f"{', '.join(x.path for x in entry.files)}); nothing was installed. Check the "
                                  "URL or fix the manifest's file list", code="E505")
            hashes[f.path] = file_sha256(fp)
            if f.sha256 and hashes[f.path] != f.sha256:
                raise SpeechError(f"{entry.name}: {f.path}: sha256 mismatch: expected {f.sha256}, got "
                                  f"{hashes[f.path]}; nothing was installed", code="E503")
        stamp = {"name": entry.name, "url": url, "archive_sha256": archive_sha, "files": hashes,
                 "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (root / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        final = models_dir / entry.name
        if final.exists():  # rename the old aside, the new in, then delete the old
            old = Path(tempfile.mkdtemp(prefix=f".{entry.name}.old-", dir=models_dir))
            os.rename(final, old / "model")
            try:
                os.rename(root, final)
            except OSError:
                os.rename(old / "model", final)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(root, final)
        fsync_dir(models_dir, strict=True)
        return InstalledModel(entry, final, dir_size(final))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)




def _model_root(tmp: Path, entry: ModelEntry) -> Path:
    if entry.root:
        return tmp / entry.root
    children = list(tmp.iterdir())
    if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink():
        return children[0]
    return tmp


def _unsafe(name: str, archive: str, why: str) -> SpeechError:
    return SpeechError(f"{archive}: refused: member {name!r} {why} (path traversal); nothing was installed. "
                       "The archive is not an official release: check the URL", code="E504")


def _unpack(archive: Path, dest: Path, name: str) -> None:
    """Unpack a tar (any compression) or zip into ``dest``, refusing absolute paths, '..' and escaping links."""
    label = f"{name} archive"
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not _safe_relative(info.filename):
                    raise _unsafe(info.filename, label, "has an absolute path or '..'")
            for info in zf.infolist():
                zf.extract(info, dest)
        return
    try:
        tf = tarfile.open(archive, "r:*")
    except tarfile.TarError as exc:
        raise SpeechError(f"{label}: not a tar or zip archive ({exc}); check the URL", code="E505") from None
    with tf:
        members = tf.getmembers()
        for m in members:
            if not _safe_relative(m.name):
                raise _unsafe(m.name, label, "has an absolute path or '..'")
            if m.issym() or m.islnk():
                base = PurePosixPath(m.name).parent if m.issym() else PurePosixPath()
                target = (base / m.linkname).as_posix()
                if m.linkname.startswith("/") or not _safe_relative(os.path.normpath(target)) \
                        or os.path.normpath(target).startswith(".."):
                    raise _unsafe(m.name, label, f"links outside the model ({m.linkname!r})")
            elif not (m.isfile() or m.isdir()):
                raise _unsafe(m.name, label, "is a device or fifo")
        tf.extractall(dest, members=members, filter="data")
