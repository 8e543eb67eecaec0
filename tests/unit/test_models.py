"""Model manager: manifest, fetch over a real local HTTP server (resume, hashes, traversal), verify, choose, CLI."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from appliance.errors import SpeechError
from appliance.speech import model_cli, models

# ------------------------------------------------------------------------------------------ helpers


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_files(seed: str = "v1") -> dict[str, bytes]:
    """Incompressible 'model' bytes so an interrupted download really stops half-way."""
    return {"model.onnx": os.urandom(200_000) + seed.encode(), "tokens.txt": f"<blk> 0\nа 1\n{seed}\n".encode()}


def build_archive(fmt: str, files: dict[str, bytes], top: str | None = "fake-model-2025",
                  extra: list[tarfile.TarInfo | tuple[str, bytes]] | None = None) -> bytes:
    buf = io.BytesIO()
    prefix = f"{top}/" if top else ""
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                zf.writestr(prefix + name, data)
            for item in extra or []:
                assert isinstance(item, tuple)
                zf.writestr(item[0], item[1])
        return buf.getvalue()
    mode = {"tar.bz2": "w:bz2", "tar.gz": "w:gz", "tar.xz": "w:xz"}[fmt]
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for item in extra or []:
            if isinstance(item, tuple):
                info = tarfile.TarInfo(item[0])
                info.size = len(item[1])
                tf.addfile(info, io.BytesIO(item[1]))
            else:
                tf.addfile(item)
    return buf.getvalue()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.ranges = True  # False: ignore Range and always answer 200 with the whole file
        self.cut: dict[str, int] = {}  # path -> drop the connection after this many body bytes (once)
        self.log: list[tuple[str, str | None, int]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def serve(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        data = self.server.files.get(self.path)
        rng = self.headers.get("Range")
        if data is None:
            self.server.log.append((self.path, rng, 404))
            self.send_error(404)
            return
        start, status = 0, 200
        if rng and self.server.ranges:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start = int(m.group(1))
            if start >= len(data):
                self.server.log.append((self.path, rng, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.server.log.append((self.path, rng, status))
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes" if self.server.ranges else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = self.server.cut.pop(self.path, None)
        if cut is not None:  # an interrupted transfer: part of the body, then the connection drops
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def write_manifest(path: Path, *entries: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"version": 1, "models": list(entries)}, allow_unicode=True), encoding="utf-8")
    return path


def asr_entry(name: str, url: str | None, archive: bytes | None, files: dict[str, bytes] | None = None,
              pin_files: bool = True, **extra: object) -> dict:
    e: dict = {"name": name, "kind": "asr", "family": "streaming_ctc_tone", "language": "ru", "sample_rate": 8000,
               "license": "Apache-2.0", "url": url, "sha256": sha(archive) if archive is not None else None,
               "files": [{"path": k, "sha256": sha(v) if pin_files else None} for k, v in (files or {}).items()],
               "streaming": True, "rank": 1}
    e.update(extra)
    return e


def leftovers(models_dir: Path) -> list[str]:
    """Anything a fetch must not leave behind: temp dirs, set-aside old versions, partial downloads."""
    found = [p.name for p in models_dir.iterdir() if p.name.startswith(".") and p.name != models.DOWNLOADS]
    downloads = models_dir / models.DOWNLOADS
    if downloads.exists():
        found += [p.name for p in downloads.glob("*.part")]
    return found


def assert_installed(models_dir: Path, name: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert (models_dir / name / rel).read_bytes() == data, rel


# ------------------------------------------------------------------------------------------ manifest


def test_repo_manifest_is_valid_and_defaults_are_t_one_and_piper() -> None:
    man = models.load_manifest()
    defaults = {e.kind: e for e in man.entries.values() if e.default}
    assert defaults["asr"].name == "t-one-ru" and defaults["asr"].sample_rate == 8000
    assert defaults["asr"].license == "Apache-2.0" and defaults["asr"].streaming
    assert defaults["tts"].family == "piper_vits" and defaults["tts"].language.startswith("ru")
    assert defaults["vad"].family == "silero_vad"
    assert man.get("t-one-ru").url.endswith("sherpa-onnx-streaming-t-one-russian-2025-09-08.tar.bz2")
    for voice in ("irina", "dmitri", "denis", "ruslan"):
        assert man.get(f"piper-ru-{voice}").url.endswith(f"vits-piper-ru_RU-{voice}-medium.tar.bz2")
    own = man.get("ru-commands")
    assert own.bundled and own.family == "nemo_ctc" and own.url is None
    assert man.bundled_dir(own) == models.REPO_MANIFEST.parent / "ru-commands"
    for e in man.entries.values():
        assert e.bundled or e.url.startswith("https://"), e.name


def test_repo_bundled_model_verifies_against_its_pins_or_is_a_note(tmp_path: Path) -> None:
    problems = models.verify(tmp_path, "ru-commands")
    if not (models.REPO_MANIFEST.parent / "ru-commands" / "model.int8.onnx").exists():
        assert [p.severity for p in problems] == ["note"]
        assert "not built yet" in str(problems[0])
        return
    entry = models.load_manifest().get("ru-commands")
    assert all(f.sha256 for f in entry.files), "pin the committed files' sha256 in models/manifest.yaml"
    assert problems == []  # the committed files are the ones pinned


@pytest.mark.parametrize(("entry", "words"), [
    ({"kind": "stt"}, ["kind 'stt'", "vad, asr, tts"]),
    ({"family": "whisper"}, ["family 'whisper'", "streaming_ctc_tone"]),
    ({"sha256": "abc"}, ["sha256 must be 64"]),
    ({"colour": "red"}, ["unknown key(s) colour"]),
    ({"files": [{"path": "../x.onnx"}]}, ["no '..'"]),
    ({"url": "ftp://x/y.tar.bz2"}, ["url must be"]),
])
def test_manifest_errors_name_file_line_and_entry(tmp_path: Path, entry: dict, words: list[str]) -> None:
    good = asr_entry("good-one", "http://127.0.0.1/a.tar.bz2", b"a", {"model.onnx": b"m"})
    bad = asr_entry("bad-one", "http://127.0.0.1/b.tar.bz2", b"b", {"model.onnx": b"m"})
    bad.update(entry)
    path = write_manifest(tmp_path / "manifest.yaml", good, bad)
    with pytest.raises(SpeechError) as err:
        models.load_manifest(path)
    text = str(err.value)
    assert err.value.code == "E501" and str(path) in text and "model bad-one" in text
    assert re.search(rf"{re.escape(str(path))}:\d+: model bad-one", text), text
    for w in words:
        assert w in text


def test_manifest_duplicate_names_and_two_defaults(tmp_path: Path) -> None:
    a = asr_entry("same", "http://h/a.tar.bz2", b"a", {"m": b""}, default=True)
    b = asr_entry("same", "http://h/b.tar.bz2", b"b", {"m": b""})
    c = asr_entry("other", "http://h/c.tar.bz2", b"c", {"m": b""}, default=True)
    with pytest.raises(SpeechError) as err:
        models.load_manifest(write_manifest(tmp_path / "m.yaml", a, b, c))
    assert "duplicate name" in str(err.value) and "second default for asr/ru" in str(err.value)


def test_unknown_model_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(SpeechError, match="no model named 'nope'.*t-one-ru"):
        models.fetch("nope", tmp_path)


# ------------------------------------------------------------------------------------------ fetch


@pytest.mark.parametrize(("fmt", "top"), [("tar.bz2", "fake-model-2025"), ("tar.gz", None), ("zip", "top"),
                                          ("zip", None)])
def test_fetch_installs_each_archive_format(server: Server, tmp_path: Path, fmt: str, top: str | None) -> None:
    files = fake_files()
    archive = build_archive(fmt, files, top=top)
    url = server.serve(f"/asr/fake.{fmt}", archive)
    man = write_manifest(tmp_path / "m.yaml", asr_entry("fake-asr", url, archive, files))
    seen: list[tuple[int, int | None]] = []
    res = models.fetch("fake-asr", tmp_path / "models", progress=lambda d, t: seen.append((d, t)), manifest=man)
    assert res.model.path == tmp_path / "models" / "fake-asr" and res.pinned and res.archive_sha256 == sha(archive)
    assert_installed(tmp_path / "models", "fake-asr", files)
    assert seen[-1] == (len(archive), len(archive))
    stamp = json.loads((res.model.path / models.STAMP).read_text())
    assert stamp["archive_sha256"] == sha(archive) and stamp["files"]["tokens.txt"] == sha(files["tokens.txt"])
    assert leftovers(tmp_path / "models") == []
    assert models.verify(tmp_path / "models", manifest=man) == []
    chosen = models.choose(tmp_path / "models", "asr", "ru_RU", manifest=man)
    assert chosen is not None and chosen.name == "fake-asr"
    assert models.describe("asr", chosen).startswith("ASR: fake-asr (streaming_ctc_tone, streaming, 8 kHz")


def test_fetch_plain_file_download(server: Server, tmp_path: Path) -> None:
    data = os.urandom(5000)
    url = server.serve("/silero_vad.onnx", data)
    entry = {"name": "vad", "kind": "vad", "family": "silero_vad", "language": "any", "sample_rate": 16000,
             "license": "MIT", "url": url, "format": "file", "sha256": sha(data),
             "files": [{"path": "silero_vad.onnx", "sha256": sha(data)}]}
    man = write_manifest(tmp_path / "m.yaml", entry)
    models.fetch("vad", tmp_path / "models", manifest=man)
    assert (tmp_path / "models" / "vad" / "silero_vad.onnx").read_bytes() == data
    assert models.choose(tmp_path / "models", "vad", "ru", manifest=man).name == "vad"


def test_interrupted_download_resumes_with_range(server: Server, tmp_path: Path) -> None:
    files = fake_files()
    archive = build_archive("tar.bz2", files)
    url = server.serve("/t-one.tar.bz2", archive)
    cut = len(archive) // 3
    server.cut["/t-one.tar.bz2"] = cut
    man = write_manifest(tmp_path / "m.yaml", asr_entry("t-one", url, archive, files))
    with pytest.raises(SpeechError) as err:
        models.fetch("t-one", tmp_path / "models", manifest=man, retries=0)
    assert err.value.code == "E502" and "interrupted" in str(err.value) and "resume" in str(err.value)
    parts = list((tmp_path / "models" / models.DOWNLOADS).glob("*.part"))
    assert [p.stat().st_size for p in parts] == [cut]
    assert not (tmp_path / "models" / "t-one").exists()

    res = models.fetch("t-one", tmp_path / "models", manifest=man, retries=0)
    assert res.resumed_from == cut
    assert server.log[-1] == ("/t-one.tar.bz2", f"bytes={cut}-", 206)
    assert_installed(tmp_path / "models", "t-one", files)
    assert leftovers(tmp_path / "models") == []


def test_interruption_is_resumed_within_one_fetch(server: Server, tmp_path: Path) -> None:
    files = fake_files()
    archive = build_archive("tar.gz", files)
    url = server.serve("/a.tar.gz", archive)
    server.cut["/a.tar.gz"] = 1000
    man = write_manifest(tmp_path / "m.yaml", asr_entry("a", url, archive, files))
    models.fetch("a", tmp_path / "models", manifest=man)
    assert [entry[1:] for entry in server.log] == [(None, 200), ("bytes=1000-", 206)]
    assert_installed(tmp_path / "models", "a", files)


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    files = fake_files()
    archive = build_archive("zip", files)
    url = server.serve("/a.zip", archive)
    server.ranges = False
    server.cut["/a.zip"] = len(archive) // 2
    man = write_manifest(tmp_path / "m.yaml", asr_entry("a", url, archive, files))
    with pytest.raises(SpeechError, match="interrupted"):
        models.fetch("a", tmp_path / "models", manifest=man, retries=0)
    models.fetch("a", tmp_path / "models", manifest=man, retries=0)
    assert server.log[-1] == ("/a.zip", f"bytes={len(archive) // 2}-", 200)  # asked to resume, got everything
    assert_installed(tmp_path / "models", "a", files)
    assert leftovers(tmp_path / "models") == []


def test_wrong_archive_hash_is_refused_and_nothing_installed(server: Server, tmp_path: Path) -> None:
    files = fake_files()
    archive = build_archive("tar.bz2", files)
    url = server.serve("/a.tar.bz2", archive)
    entry = asr_entry("a", url, archive, files)
    entry["sha256"] = "0" * 64
    man = write_manifest(tmp_path / "m.yaml", entry)
    with pytest.raises(SpeechError) as err:
        models.fetch("a", tmp_path / "models", manifest=man)
    text = str(err.value)
    assert err.value.code == "E503" and f"expected {'0' * 64}, got {sha(archive)}" in text
    assert "nothing was installed" in text
    assert not (tmp_path / "models" / "a").exists() and leftovers(tmp_path / "models") == []


def test_wrong_file_hash_inside_archive_is_refused(server: Server, tmp_path: Path) -> None:
    files = fake_files()
    archive = build_archive("tar.gz", files)
    entry = asr_entry("a", server.serve("/a.tar.gz", archive), archive, files)
    entry["files"][1]["sha256"] = "f" * 64
    man = write_manifest(tmp_path / "m.yaml", entry)
    with pytest.raises(SpeechError, match=f"tokens.txt: sha256 mismatch: expected {'f' * 64}"):
        models.fetch("a", tmp_path / "models", manifest=man)
    assert not (tmp_path / "models" / "a").exists() and leftovers(tmp_path / "models") == []


def test_missing_expected_file_is_refused(server: Server, tmp_path: Path) -> None:
    files = fake_files()
    archive = build_archive("tar.gz", files)
    entry = asr_entry("a", server.serve("/a.tar.gz", archive), archive, {**files, "joiner.onnx": b"j"})
    man = write_manifest(tmp_path / "m.yaml", entry)
    with pytest.raises(SpeechError, match="the archive has no joiner.onnx"):
        models.fetch("a", tmp_path / "models", manifest=man)
    assert not (tmp_path / "models" / "a").exists() and leftovers(tmp_path / "models") == []


def test_unpinned_archive_refused_with_hash_then_allowed(server: Server, tmp_path: Path) -> None:
    files = fake_files()
    archive = build_archive("tar.bz2", files)
    url = server.serve("/a.tar.bz2", archive)
    man = write_manifest(tmp_path / "m.yaml", asr_entry("a", url, None, files, pin_files=False))
    with pytest.raises(SpeechError) as err:
        models.fetch("a", tmp_path / "models", manifest=man)
    assert err.value.code == "E507" and sha(archive) in str(err.value) and "--allow-unpinned" in str(err.value)
    assert not (tmp_path / "models" / "a").exists()
    res = models.fetch("a", tmp_path / "models", manifest=man, allow_unpinned=True)
    assert server.log[-1] == ("/a.tar.bz2", f"bytes={len(archive)}-", 416)  # kept .part: nothing re-downloaded
    assert not res.pinned and res.archive_sha256 == sha(archive)
    assert_installed(tmp_path / "models", "a", files)


def test_url_override_is_used(server: Server, tmp_path: Path) -> None:
    files = fake_files()
    archive = build_archive("tar.gz", files)
    mirror = server.serve("/mirror/a.tar.gz", archive)
    man = write_manifest(tmp_path / "m.yaml", asr_entry("a", server.url("/gone.tar.gz"), archive, files))
    with pytest.raises(SpeechError, match="HTTP 404"):
        models.fetch("a", tmp_path / "models", manifest=man)
    models.fetch("a", tmp_path / "models", url_override=mirror, manifest=man)
    assert_installed(tmp_path / "models", "a", files)


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(("fmt", "extra"), [
    ("tar.bz2", [("../evil.txt", b"x")]),
    ("tar.gz", [("/tmp/registratura-evil.txt", b"x")]),
    ("tar.gz", [("fake-model-2025/../../evil.txt", b"x")]),
    ("tar.gz", [_link("fake-model-2025/escape", "../../evil.txt")]),
    ("tar.gz", [_link("fake-model-2025/etc", "/etc/passwd")]),
    ("tar.gz", [_link("fake-model-2025/hard", "../evil.txt", tarfile.LNKTYPE)]),
    ("zip", [("../evil.txt", b"x")]),
    ("zip", [("/abs/evil.txt", b"x")]),
])
def test_path_traversal_archives_are_refused(server: Server, tmp_path: Path, fmt: str, extra: list) -> None:
    files = fake_files()
    archive = build_archive(fmt, files, extra=extra)
    man = write_manifest(tmp_path / "m.yaml", asr_entry("a", server.serve(f"/a.{fmt}", archive), archive, files))
    with pytest.raises(SpeechError) as err:
        models.fetch("a", tmp_path / "models", manifest=man)
    assert err.value.code == "E504" and "refused" in str(err.value) and "path traversal" in str(err.value)
    assert not (tmp_path / "models" / "a").exists() and leftovers(tmp_path / "models") == []
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "models" / "evil.txt").exists()
    assert not Path("/tmp/registratura-evil.txt").exists()


def test_atomic_replace_of_an_existing_install(server: Server, tmp_path: Path) -> None:
    v1, v2 = fake_files("v1"), fake_files("v2")
    a1, a2 = build_archive("tar.bz2", v1), build_archive("tar.bz2", v2)
    m = tmp_path / "m.yaml"
    write_manifest(m, asr_entry("a", server.serve("/v1.tar.bz2", a1), a1, v1))
    models.fetch("a", tmp_path / "models", manifest=m)
    (tmp_path / "models" / "a" / "stale-from-v1.txt").write_text("old")
    write_manifest(m, asr_entry("a", server.serve("/v2.tar.bz2", a2), a2, v2))
    models.fetch("a", tmp_path / "models", manifest=m)
    assert_installed(tmp_path / "models", "a", v2)
    assert not (tmp_path / "models" / "a" / "stale-from-v1.txt").exists()
    assert leftovers(tmp_path / "models") == []
    # a failed update leaves the working version untouched
    bad = build_archive("tar.bz2", fake_files("v3"))
    write_manifest(m, asr_entry("a", server.serve("/v3.tar.bz2", bad), bad, fake_files("v3")))
    server.files["/v3.tar.bz2"] = bad[:-10] + b"corrupted!"
    with pytest.raises(SpeechError, match="sha256 mismatch"):
        models.fetch("a", tmp_path / "models", manifest=m)
    assert_installed(tmp_path / "models", "a", v2)
    assert leftovers(tmp_path / "models") == []


def test_crash_between_the_two_renames_is_recovered(server: Server, tmp_path: Path) -> None:
    files = fake_files()
    archive = build_archive("tar.gz", files)
    man = write_manifest(tmp_path / "m.yaml", asr_entry("a", server.serve("/a.tar.gz", archive), archive, files))
    models.fetch("a", tmp_path / "models", manifest=man)
    aside = tmp_path / "models" / ".a.old-crash"
    aside.mkdir()
    (tmp_path / "models" / "a").rename(aside / "model")  # power cut: old set aside, new not yet in
    (tmp_path / "models" / ".a.tmp-crash").mkdir()
    server.files["/a.tar.gz"] = b"not this time"  # the next fetch fails, but recovery has happened first
    with pytest.raises(SpeechError):
        models.fetch("a", tmp_path / "models", manifest=man)
    assert_installed(tmp_path / "models", "a", files)
    assert leftovers(tmp_path / "models") == []


def test_bundled_model_is_reported_as_not_built_then_found(tmp_path: Path) -> None:
    files = {"model.int8.onnx": b"onnx", "tokens.txt": b"<blk> 0\n"}
    entry = asr_entry("ru-commands", None, None, files, bundled=True, family="nemo_ctc", rank=9)
    del entry["url"]
    man = write_manifest(tmp_path / "share" / "manifest.yaml", entry)
    problems = models.verify(tmp_path / "models", manifest=man)
    assert len(problems) == 1 and problems[0].severity == "note" and "not built yet" in str(problems[0])
    assert models.choose(tmp_path / "models", "asr", "ru", manifest=man) is None
    assert models.describe("asr", None) == "ASR: none installed; spoken menu choices disabled"
    with pytest.raises(SpeechError, match="ships with the box"):
        models.fetch("ru-commands", tmp_path / "models", manifest=man)
    (tmp_path / "share" / "ru-commands").mkdir()
    for k, v in files.items():
        (tmp_path / "share" / "ru-commands" / k).write_bytes(v)
    assert models.verify(tmp_path / "models", manifest=man) == []
    assert models.choose(tmp_path / "models", "asr", "ru", manifest=man).path == tmp_path / "share" / "ru-commands"
    (tmp_path / "share" / "ru-commands" / "tokens.txt").write_bytes(b"changed")
    [p] = models.verify(tmp_path / "models", manifest=man)
    assert p.severity == "error" and "sha256 mismatch" in p.what and "tools/asr_train" in p.fix


def test_choose_prefers_the_best_ranked_installed_model(server: Server, tmp_path: Path) -> None:
    files = fake_files()
    archive = build_archive("tar.gz", files)
    url = server.serve("/a.tar.gz", archive)
    man = write_manifest(tmp_path / "m.yaml", asr_entry("best", url, archive, files, rank=1),
                         asr_entry("small", url, archive, files, rank=3, streaming=False),
                         asr_entry("english", url, archive, files, rank=1, language="en"))
    models.fetch("small", tmp_path / "models", manifest=man)
    assert models.choose(tmp_path / "models", "asr", "ru", manifest=man).name == "small"
    models.fetch("best", tmp_path / "models", manifest=man)
    models.fetch("english", tmp_path / "models", manifest=man)
    assert models.choose(tmp_path / "models", "asr", "ru", manifest=man).name == "best"
    assert models.choose(tmp_path / "models", "asr", "en_US", manifest=man).name == "english"
    assert models.choose(tmp_path / "models", "tts", "ru", manifest=man) is None
    report = models.startup_report(tmp_path / "models", "ru", manifest=man)
    assert report["asr"][0].name == "best" and report["asr"][1].startswith("ASR: best (")
    assert report["tts"] == (None, "TTS: no neural voice installed; only pre-rendered prompts and espeak-ng speak")
    assert [m.name for m in models.installed(tmp_path / "models", man)] == ["best", "english", "small"]


# ------------------------------------------------------------------------------------------ verify


@pytest.fixture
def installed_model(server: Server, tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    files = fake_files()
    archive = build_archive("tar.bz2", files)
    man = write_manifest(tmp_path / "m.yaml", asr_entry("t-one", server.serve("/a.tar.bz2", archive), archive, files),
                         asr_entry("unpinned", server.serve("/b.tar.bz2", archive), None, files, pin_files=False))
    models.fetch("t-one", tmp_path / "models", manifest=man)
    models.fetch("unpinned", tmp_path / "models", manifest=man, allow_unpinned=True)
    return man, tmp_path / "models", files


def test_verify_reports_a_corrupted_file(installed_model: tuple[Path, Path, dict[str, bytes]]) -> None:
    man, where, files = installed_model
    target = where / "t-one" / "tokens.txt"
    target.write_bytes(b"garbage")
    [p] = models.verify(where, manifest=man)
    text = str(p)
    assert p.path == target and str(target) in text and "sha256 mismatch" in text
    assert f"expected {sha(files['tokens.txt'])} from the manifest, found {sha(b'garbage')}" in text
    assert "run registratura models fetch t-one" in text


def test_verify_uses_the_install_record_when_the_manifest_pins_nothing(
        installed_model: tuple[Path, Path, dict[str, bytes]]) -> None:
    man, where, _ = installed_model
    (where / "unpinned" / "model.onnx").write_bytes(b"bitrot")
    [p] = models.verify(where, "unpinned", manifest=man)
    assert "from the install record" in p.what and "registratura models fetch unpinned" in p.fix


def test_verify_reports_a_missing_file_and_a_missing_model(
        installed_model: tuple[Path, Path, dict[str, bytes]]) -> None:
    man, where, _ = installed_model
    (where / "t-one" / "model.onnx").unlink()
    [p] = models.verify(where, manifest=man)
    assert str(p) == f"t-one: {where / 't-one' / 'model.onnx'}: missing file; run registratura models fetch t-one"
    assert models.installed(where, man)[0].name == "unpinned"  # an incomplete model does not count as installed
    import shutil

    shutil.rmtree(where / "t-one")
    assert models.verify(where, manifest=man) == []  # not installed is not a fault of the box...
    [p] = models.verify(where, "t-one", manifest=man)  # ...unless that model is asked for
    assert "not installed" in str(p) and "registratura models fetch t-one" in str(p)


# ------------------------------------------------------------------------------------------ CLI


def run_cli(argv: list[str], settings_loader=None) -> int:  # noqa: ANN001
    parser = argparse.ArgumentParser(prog="registratura")
    parser.add_argument("--config")
    sub = parser.add_subparsers(dest="cmd", required=True)
    model_cli.add_models_parser(sub, settings_loader)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_json(installed_model: tuple[Path, Path, dict[str, bytes]], capsys: pytest.CaptureFixture) -> None:
    man, where, _ = installed_model
    assert run_cli(["models", "list", "--json", "--models-dir", str(where), "--manifest", str(man)]) == 0
    out = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in out["models"]}
    assert out["models_dir"] == str(where)
    assert by_name["t-one"]["installed"] and by_name["t-one"]["kind"] == "asr" and by_name["t-one"]["pinned"]
    assert by_name["t-one"]["size_bytes"] > 200_000 and by_name["t-one"]["license"] == "Apache-2.0"
    assert by_name["unpinned"]["pinned"] is False


def test_cli_list_table_uses_settings_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    loader_calls = []

    def loader(args: argparse.Namespace) -> SimpleNamespace:
        loader_calls.append(args)
        return SimpleNamespace(data_dir=tmp_path / "data")

    assert run_cli(["models", "list"], loader) == 0
    out = capsys.readouterr().out
    assert loader_calls and str(tmp_path / "data" / "models") in out
    assert re.search(r"t-one-ru \*\s+asr\s+ru\s+no\s", out) and "ru-commands" in out and "Apache-2.0" in out


def test_cli_without_settings_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_cli(["--config", str(tmp_path / "none.yaml"), "models", "list"]) == 1
    err = capsys.readouterr().err
    assert "settings file not found" in err and "--models-dir" in err


def test_cli_verify_exit_codes(installed_model: tuple[Path, Path, dict[str, bytes]],
                               capsys: pytest.CaptureFixture) -> None:
    man, where, _ = installed_model
    base = ["--models-dir", str(where), "--manifest", str(man)]
    assert run_cli(["models", "verify", *base]) == 0
    assert "t-one" in capsys.readouterr().out
    (where / "t-one" / "tokens.txt").write_bytes(b"x")
    (where / "unpinned" / "model.onnx").unlink()
    assert run_cli(["models", "verify", *base]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and err[-1] == "2 problem(s)"
    assert any("tokens.txt: sha256 mismatch" in line for line in err)
    assert any("model.onnx: missing file" in line for line in err)


def test_cli_fetch_with_progress_and_refusal(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = fake_files()
    archive = build_archive("tar.bz2", files)
    url = server.serve("/a.tar.bz2", archive)
    man = write_manifest(tmp_path / "m.yaml", asr_entry("a", url, None, files, pin_files=False))
    base = ["--models-dir", str(tmp_path / "models"), "--manifest", str(man)]
    assert run_cli(["models", "fetch", "a", *base]) == 1
    err = capsys.readouterr().err
    assert "E507" in err and sha(archive) in err
    assert run_cli(["models", "fetch", "a", "--allow-unpinned", *base]) == 0
    cap = capsys.readouterr()
    assert "a: installed in" in cap.out and "NOT pinned" in cap.err and sha(archive) in cap.err
    assert_installed(tmp_path / "models", "a", files)
    mirror = server.serve("/mirror.tar.bz2", archive)
    assert run_cli(["models", "fetch", "a", "--url", mirror, "--allow-unpinned", *base]) == 0
    assert server.log[-1][0] == "/mirror.tar.bz2"
