"""The only sherpa_onnx import: Silero VAD, the ASR families of the manifest and Piper/VITS voices.

sherpa-onnx calls ``exit()`` (no Python exception) on a model whose metadata or inputs it does not expect, so
every loader here checks the ONNX file first: ``onnx_info`` reads metadata and graph inputs/outputs straight
from the protobuf (no onnx package, no weights loaded), and ``probe`` loads a model in a child process when
a check cannot be done by reading. Audio comes in as 16-bit PCM bytes (see ``speech/base.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sherpa_onnx

from appliance.errors import SpeechError
from appliance.speech.base import Transcript, Utterance
from appliance.speech.ctc import Spotted
from appliance.speech.tts import Resampler, float_to_pcm16, pcm16_to_float, resample
from appliance.speech.vad import FULL_SCALE, Samples, VadResult, from_dbfs, to_dbfs

_LOGGER = logging.getLogger(__name__)

# Spotting menu phrases in a CTC model's scores (``SherpaAsr.spot``): the best option may cost at most this many
# nats over the unconstrained best path and must beat every other option by the margin. Set on ru-commands'
# development answers (tools/asr_train/evaluate.py --spot-sweep); the card reports the held-out result.
SPOT_MAX_COST = 4.0
SPOT_MARGIN = 2.0

VERSION = getattr(sherpa_onnx, "__version__", "?")
SILERO_RATE = 16000  # sherpa-onnx's Silero path runs at 16 kHz only (it exits on anything else)
SILERO_WINDOW = 512
_ELEM = {1: "float32", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}


# --------------------------------------------------------------------------------- reading ONNX files


@dataclass(frozen=True)
class TensorInfo:
    name: str
    elem_type: str  # "float32", "int64", ... ("?" if unknown)
    dims: tuple[int | str, ...]  # ints for fixed sizes, names for symbolic ones


@dataclass(frozen=True)
class OnnxInfo:
    metadata: dict[str, str]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _file_varint(f) -> int | None:  # noqa: ANN001 - a binary file
    result = shift = 0
    while True:
        c = f.read(1)
        if not c:
            if shift:
                raise ValueError("truncated varint")
            return None
        result |= (c[0] & 0x7F) << shift
        if not c[0] & 0x80:
            return result
        shift += 7


def _skip_scalar(f, wire: int) -> bool:  # noqa: ANN001 - a binary file
    """Step over a varint or fixed-width field; False for a length-delimited one (the caller reads it)."""
    if wire == 0:
        _file_varint(f)
        return True
    if wire in (1, 5):
        f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
        return True
    return False


def _fields(buf: bytes):  # noqa: ANN202 - yields (field number, wire type, value)
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
            yield num, wire, val
        elif wire == 1:
            yield num, wire, buf[pos:pos + 8]
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            yield num, wire, buf[pos:pos + n]
            pos += n
        elif wire == 5:
            yield num, wire, buf[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _tensor_info(buf: bytes) -> TensorInfo:
    name, elem, dims = "", "?", []
    for num, _, val in _fields(buf):
        if num == 1:
            name = val.decode("utf-8", "replace")
        elif num == 2:  # TypeProto
            for tnum, _, tval in _fields(val):
                if tnum != 1:  # tensor_type
                    continue
                for ttnum, _, ttval in _fields(tval):
                    if ttnum == 1:
                        elem = _ELEM.get(ttval, str(ttval))
                    elif ttnum == 2:  # TensorShapeProto
                        for _, _, dim in _fields(ttval):
                            d: int | str = "?"
                            for dnum, _, dval in _fields(dim):
                                d = dval if dnum == 1 else dval.decode("utf-8", "replace")
                            dims.append(d)
    return TensorInfo(name, elem, tuple(dims))


def onnx_info(path: str | Path) -> OnnxInfo:
    """Metadata and graph inputs/outputs of an ONNX file, read from the protobuf without loading weights."""
    meta: dict[str, str] = {}
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    initializers: set[str] = set()
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            while True:
                key = _file_varint(f)
                if key is None:
                    break
                num, wire = key >> 3, key & 7
                if _skip_scalar(f, wire):
                    continue
                if wire != 2:
                    raise ValueError(f"unsupported protobuf wire type {wire}")
                n = _file_varint(f) or 0
                start = f.tell()
                if start + n > size:
                    raise ValueError("truncated file")
                if num == 14:  # metadata_props
                    k = v = ""
                    for fnum, _, val in _fields(f.read(n)):
                        if fnum == 1:
                            k = val.decode("utf-8", "replace")
                        elif fnum == 2:
                            v = val.decode("utf-8", "replace")
                    meta[k] = v
                elif num == 7:  # graph: walk it, skipping nodes and weights by seeking
                    end = start + n
                    while f.tell() < end:
                        gkey = _file_varint(f)
                        if gkey is None:
                            break
                        gnum, gwire = gkey >> 3, gkey & 7
                        if _skip_scalar(f, gwire):
                            continue
                        gn = _file_varint(f) or 0
                        if gnum in (11, 12):
                            (inputs if gnum == 11 else outputs).append(_tensor_info(f.read(gn)))
                        elif gnum == 5 and gn < 1 << 16:  # a small initializer: note its name
                            for inum, _, ival in _fields(f.read(gn)):
                                if inum == 8:
                                    initializers.add(ival.decode("utf-8", "replace"))
                        else:
                            f.seek(gn, os.SEEK_CUR)
                    f.seek(end)
                else:
                    f.seek(n, os.SEEK_CUR)
    except OSError as exc:
        raise SpeechError(f"{path}: cannot read the model ({exc.strerror})", code="E510") from None
    except ValueError as exc:
        raise SpeechError(f"{path}: not a readable ONNX file ({exc}); the file is corrupt: run "
                          "`registratura models verify` and fetch it again", code="E510") from None
    if not outputs:
        raise SpeechError(f"{path}: not an ONNX model (no graph outputs found); run `registratura models verify`",
                          code="E510")
    # Old exporters list weights as graph inputs too: they are not inputs a caller feeds.
    return OnnxInfo(meta, tuple(i for i in inputs if i.name not in initializers), tuple(outputs))


def _proto_len(payload: bytes) -> bytes:
    n, out = len(payload), bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out) + payload


def metadata_bytes(meta: dict[str, str]) -> bytes:
    """Serialized ``metadata_props`` entries: appended to a ModelProto they add (or override) metadata."""
    out = b""
    for k, v in meta.items():
        entry = b"\x0a" + _proto_len(k.encode()) + b"\x12" + _proto_len(v.encode())
        out += b"\x72" + _proto_len(entry)  # field 14, length-delimited
    return out


def read_tokens(path: str | Path) -> dict[str, int]:
    """sherpa's tokens.txt: ``symbol id`` per line (the symbol may be a space: the line then starts with one)."""
    tokens: dict[str, int] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpeechError(f"{path}: cannot read tokens ({exc})", code="E511") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        sym, _, num = line.rpartition(" ")
        if not num.lstrip("-").isdigit():
            raise SpeechError(f"{path}:{n}: expected 'symbol id', got {line!r}", code="E511")
        tokens[sym if sym else " "] = int(num)
    if not tokens:
        raise SpeechError(f"{path}: no tokens", code="E511")
    return tokens


# ---------------------------------------------------------------------------------------- checks


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise SpeechError(f"{path}: {what} is missing; run `registratura models verify`", code="E512")
    return path


def check_nemo_ctc(model: str | Path, tokens: str | Path) -> OnnxInfo:
    """Everything sherpa's NeMo CTC loader needs, checked without loading it (bad metadata makes it exit)."""
    model, tokens = _need(Path(model), "the model"), _need(Path(tokens), "tokens.txt")
    info = onnx_info(model)
    toks = read_tokens(tokens)
    meta, problems = info.metadata, []
    vocab = meta.get("vocab_size", "")
    if not vocab.isdigit():
        problems.append(f"metadata vocab_size is {vocab or 'missing'} (an integer is required)")
    elif int(vocab) != len(toks):
        problems.append(f"metadata vocab_size {vocab} but tokens.txt has {len(toks)} tokens")
    sub = meta.get("subsampling_factor", "")
    if not sub.isdigit() or int(sub) < 1:
        problems.append(f"metadata subsampling_factor is {sub or 'missing'} (an integer >= 1 is required)")
    if "normalize_type" not in meta:
        problems.append("metadata normalize_type is missing (\"\" or \"per_feature\")")
    elif meta["normalize_type"] not in ("", "per_feature"):
        problems.append(f"metadata normalize_type {meta['normalize_type']!r} is not \"\" or \"per_feature\"")
    if "<blk>" not in toks:
        problems.append("tokens.txt has no <blk> (the CTC blank)")
    if len(info.inputs) != 2:
        problems.append(f"expected 2 inputs (features, lengths), found {len(info.inputs)}")
    else:
        feats, lens = info.inputs
        if feats.elem_type != "float32" or len(feats.dims) != 3:
            problems.append(f"input 0 {feats.name} must be float32 (N, feature_dim, T); is {feats.elem_type} "
                            f"{feats.dims}")
        if lens.elem_type != "int64" or len(lens.dims) != 1:
            problems.append(f"input 1 {lens.name} must be int64 (N,); is {lens.elem_type} {lens.dims}")
    out = info.outputs[0]
    if len(out.dims) != 3:
        problems.append(f"output 0 {out.name} must be (N, T_out, vocab); has dims {out.dims}")
    elif isinstance(out.dims[2], int) and vocab.isdigit() and out.dims[2] != int(vocab):
        problems.append(f"output 0 has {out.dims[2]} classes but vocab_size is {vocab}")
    if problems:
        raise SpeechError(f"{model}: not loadable as a NeMo CTC model: " + "; ".join(problems), code="E513")
    return info


def check_vits(model: str | Path, tokens: str | Path) -> OnnxInfo:
    """A Piper/VITS voice as sherpa expects it: metadata sample_rate, n_speakers, language, comment."""
    model, tokens = _need(Path(model), "the voice model"), _need(Path(tokens), "tokens.txt")
    info = onnx_info(model)
    read_tokens(tokens)
    missing = [k for k in ("sample_rate", "n_speakers", "language", "comment") if k not in info.metadata]
    if missing:
        raise SpeechError(f"{model}: a plain Piper voice, not packaged for sherpa-onnx (metadata {', '.join(missing)} "
                          "missing); use prepare_piper_voice() or the piper engine", code="E514")
    return info


def check_silero(model: str | Path) -> OnnxInfo:
    info = onnx_info(_need(Path(model), "the Silero VAD model"))
    names = [i.name for i in info.inputs]
    if names not in (["input", "state", "sr"], ["input", "sr", "h", "c"]):
        raise SpeechError(f"{model}: not a Silero VAD model sherpa-onnx can run (inputs {names}); use "
                          "silero_vad.onnx v4/v5", code="E515")
    return info


def probe(kind: str, *paths: str | Path, timeout: float = 120.0) -> str | None:
    """Load a model in a child process; None if it loads, else the reason (sherpa may exit() on bad models)."""
    cmd = [sys.executable, "-m", "appliance.speech.sherpa", "probe", kind, *map(str, paths)]
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"loading took more than {timeout:g} s"
    if proc.returncode == 0 and proc.stdout.strip().endswith("ok"):
        return None
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return (lines[-1] if lines else f"exit code {proc.returncode}")[-300:]


# ------------------------------------------------------------------------------------------- VAD


def _to_int16(samples: Samples) -> np.ndarray:
    if isinstance(samples, bytes | bytearray | memoryview):
        data = bytes(samples)
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
    if isinstance(samples, np.ndarray):
        return samples.astype(np.int16, copy=False)
    try:
        return np.frombuffer(memoryview(samples), dtype=np.int16)  # array('h')
    except TypeError:
        return np.asarray(samples, dtype=np.int16)


class _Upsample2:
    """8 → 16 kHz for the VAD: linear interpolation carrying one sample across chunks (Silero needs no more)."""

    def __init__(self) -> None:
        self.prev = 0.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not len(x):
            return x
        shifted = np.concatenate(([self.prev], x[:-1])).astype(np.float32)
        out = np.empty(2 * len(x), dtype=np.float32)
        out[0::2] = (shifted + x) * 0.5
        out[1::2] = x
        self.prev = float(x[-1])
        return out


class SileroVad:
    """Silero VAD through ``sherpa_onnx.VoiceActivityDetector``, behind the same ``Vad`` protocol as EnergyVad.

    Fed 20 ms chunks of telephony PCM (8 kHz, upsampled to the 16 kHz sherpa's Silero path requires) with
    their duration; ``speaking`` follows the model with its hysteresis (``min_speech`` to start,
    ``min_silence`` to stop). The level and the dead-line count are computed as EnergyVad does, so
    ``LineWatch`` works unchanged. Finished utterances (16 kHz PCM) wait in ``utterances()`` for an offline
    recogniser. One instance per call (it holds the model's state); about 4–9 MB each (see bench_speech.py).
    """

    name = "silero"

    def __init__(
        self,
        model: str | Path,
        *,
        sample_rate: int = 8000,
        threshold: float = 0.5,
        min_speech: float = 0.2,
        min_silence: float = 0.4,
        max_speech: float = 15.0,
        dead_dbfs: float = -66.0,
        keep_utterances: bool = True,
        num_threads: int = 1,
    ) -> None:
        if sample_rate not in (8000, SILERO_RATE):
            raise SpeechError(f"SileroVad takes 8000 or 16000 Hz audio, not {sample_rate}", code="E515")
        if not 0.0 < threshold < 1.0:
            raise SpeechError(f"VAD threshold {threshold} must be between 0 and 1", code="E515")
        self.model = str(model)
        check_silero(self.model)
        self.sample_rate = sample_rate
        self.dead_rms = from_dbfs(dead_dbfs)
        self.keep_utterances = keep_utterances
        silero = sherpa_onnx.SileroVadModelConfig(
            model=self.model, threshold=threshold, min_silence_duration=min_silence,
            min_speech_duration=min_speech, window_size=SILERO_WINDOW, max_speech_duration=max_speech)
        config = sherpa_onnx.VadModelConfig(silero_vad=silero, sample_rate=SILERO_RATE, num_threads=num_threads)
        self._vad = sherpa_onnx.VoiceActivityDetector(config, buffer_size_in_seconds=max_speech + 2.0)
        self._up = _Upsample2() if sample_rate == 8000 else None
        self._utterances: list[Utterance] = []
        self.reset()

    def reset(self) -> None:
        self._vad.reset()
        if self._up is not None:
            self._up.prev = 0.0
        self.speaking = False
        self.no_energy_seconds = 0.0
        self._utterances.clear()

    def feed(self, samples: Samples, seconds: float) -> VadResult:
        pcm = _to_int16(samples)
        x = pcm.astype(np.float32)
        rms = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
        x *= 1.0 / FULL_SCALE
        self._vad.accept_waveform(self._up(x) if self._up is not None else x)
        self._collect()
        speaking = bool(self._vad.is_speech_detected())
        changed, self.speaking = speaking != self.speaking, speaking
        if rms < self.dead_rms:
            self.no_energy_seconds += seconds
        else:
            self.no_energy_seconds = 0.0
        return VadResult(speaking, changed, to_dbfs(rms), self.no_energy_seconds)

    def flush(self) -> None:
        """End of the stream: close an utterance still open."""
        self._vad.flush()
        self._collect()

    def _collect(self) -> None:
        while not self._vad.empty():
            seg = self._vad.front
            if self.keep_utterances:
                self._utterances.append(Utterance(float_to_pcm16(np.asarray(seg.samples, dtype=np.float32)),
                                                  SILERO_RATE, seg.start / SILERO_RATE))
            self._vad.pop()

    def utterances(self) -> list[Utterance]:
        """Utterances finished since the last call (oldest first)."""
        out, self._utterances = self._utterances, []
        return out


class SharedSileroModel:
    """One Silero v5 onnxruntime session shared by every call; each call's ``SharedSileroVad`` keeps only its
    own recurrent state (2x128 floats) and 64 samples of context.

    Why next to the sherpa detector: ``sherpa_onnx.VoiceActivityDetector`` owns a session per instance
    (3.5 MB each: 60 calls in the IVR cost ~210 MB) and holds the GIL while it runs; one shared session costs
    ~16 MB for any number of calls and ``run`` releases the GIL. Same decisions: the model, the threshold and
    the hysteresis rules are sherpa's. ``bench_speech.py`` measures both.
    """

    def __init__(self, model: str | Path, num_threads: int = 1) -> None:
        import onnxruntime

        self.model = str(model)
        names = [i.name for i in check_silero(self.model).inputs]
        if names != ["input", "state", "sr"]:
            raise SpeechError(f"{model}: a Silero v5 model is needed (inputs input, state, sr; found {names})",
                              code="E515")
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(self.model, opts, providers=["CPUExecutionProvider"])
        self._sr = np.array(SILERO_RATE, dtype=np.int64)

    def prob(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """Speech probability of one 64 + 512 sample window at 16 kHz, and the next state."""
        out, state = self.session.run(None, {"input": window[None, :], "state": state, "sr": self._sr})
        return float(out[0, 0]), state


class SharedSileroVad:
    """A call's detector on a ``SharedSileroModel``; same ``Vad`` protocol and knobs as ``SileroVad``."""

    name = "silero-shared"
    CONTEXT = 64

    def __init__(self, model: SharedSileroModel, *, sample_rate: int = 8000, threshold: float = 0.5,
                 min_speech: float = 0.2, min_silence: float = 0.4, max_speech: float = 15.0,
                 dead_dbfs: float = -66.0, keep_utterances: bool = True, pre_roll: float = 0.2) -> None:
        if sample_rate not in (8000, SILERO_RATE):
            raise SpeechError(f"SharedSileroVad takes 8000 or 16000 Hz audio, not {sample_rate}", code="E515")
        self.shared, self.sample_rate, self.threshold = model, sample_rate, threshold
        w = SILERO_WINDOW
        self.min_speech_w = max(1, round(min_speech * SILERO_RATE / w))
        self.min_silence_w = max(1, round(min_silence * SILERO_RATE / w))
        self.max_speech_w = max(1, round(max_speech * SILERO_RATE / w))
        self.pre_roll_w = max(0, round(pre_roll * SILERO_RATE / w))
        self.dead_rms = from_dbfs(dead_dbfs)
        self.keep_utterances = keep_utterances
        self._up = _Upsample2() if sample_rate == 8000 else None
        self._utterances: list[Utterance] = []
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._buf = np.zeros(self.CONTEXT, dtype=np.float32)  # context + samples not yet in a window
        self._windows = 0
        self._above = self._below = 0
        self._recent: list[np.ndarray] = []  # the last windows before speech (pre-roll)
        self._speech: list[np.ndarray] = []
        self._start = 0
        if self._up is not None:
            self._up.prev = 0.0
        self.speaking = False
        self.no_energy_seconds = 0.0
        self._utterances = []

    def _window(self, win: np.ndarray) -> None:
        p, self._state = self.shared.prob(win, self._state)
        samples = win[self.CONTEXT:]
        self._windows += 1
        if not self.speaking:
            self._above = self._above + 1 if p > self.threshold else 0
            self._recent = (self._recent + [samples])[-(self.min_speech_w + self.pre_roll_w):]
            if self._above >= self.min_speech_w:
                self.speaking, self._below = True, 0
                self._speech = list(self._recent)
                self._start = self._windows - len(self._recent)
            return
        self._speech.append(samples)
        self._below = self._below + 1 if p < self.threshold - 0.15 else 0  # sherpa's hysteresis
        if self._below >= self.min_silence_w:
            self.speaking, self._above, self._recent = False, 0, []
            self._emit()
        elif len(self._speech) >= self.max_speech_w:
            self._emit()
            self._start = self._windows

    def _emit(self) -> None:
        if self.keep_utterances and self._speech:
            audio = np.concatenate(self._speech)
            self._utterances.append(Utterance(float_to_pcm16(audio), SILERO_RATE,
                                              self._start * SILERO_WINDOW / SILERO_RATE))
        self._speech = []

    def feed(self, samples: Samples, seconds: float) -> VadResult:
        pcm = _to_int16(samples)
        x = pcm.astype(np.float32)
        rms = float(np.sqrt(np.mean(x * x))) if len(x) else 0.0
        x *= 1.0 / FULL_SCALE
        self._buf = np.concatenate((self._buf, self._up(x) if self._up is not None else x))
        before = self.speaking
        step = SILERO_WINDOW
        while len(self._buf) >= self.CONTEXT + step:
            self._window(self._buf[: self.CONTEXT + step])
            self._buf = self._buf[step:]
        if rms < self.dead_rms:
            self.no_energy_seconds += seconds
        else:
            self.no_energy_seconds = 0.0
        return VadResult(self.speaking, self.speaking != before, to_dbfs(rms), self.no_energy_seconds)

    def flush(self) -> None:
        if self.speaking:
            self._emit()
            self.speaking = False

    def utterances(self) -> list[Utterance]:
        out, self._utterances = self._utterances, []
        return out


VAD_ENGINES = ("shared", "sherpa")


class SileroVadPool:
    """Per-call Silero detectors, reused: a call takes one while it is in the IVR and gives it back when it
    waits in the queue (music on hold needs no VAD). ``size`` bounds memory; an empty pool returns None and
    the caller falls back to EnergyVad. ``engine``: "shared" (one onnxruntime session for all calls, the
    default) or "sherpa" (sherpa_onnx.VoiceActivityDetector, a session per call)."""

    def __init__(self, model: str | Path, size: int, engine: str = "shared", **options: object) -> None:
        if engine not in VAD_ENGINES:
            raise SpeechError(f"VAD engine {engine!r} is not one of {', '.join(VAD_ENGINES)}", code="E515")
        self.model, self.size, self.engine, self.options = str(model), size, engine, options
        self._shared = SharedSileroModel(self.model) if engine == "shared" else None
        self._free: list[SileroVad | SharedSileroVad] = []
        self._made = 0
        self._lock = threading.Lock()

    def acquire(self) -> SileroVad | SharedSileroVad | None:
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._made >= self.size:
                return None
            self._made += 1
        if self._shared is not None:
            return SharedSileroVad(self._shared, **self.options)  # type: ignore[arg-type]
        return SileroVad(self.model, **self.options)  # type: ignore[arg-type]

    def release(self, vad: SileroVad | SharedSileroVad) -> None:
        vad.reset()
        with self._lock:
            self._free.append(vad)


# ------------------------------------------------------------------------------------------- ASR


ASR_FAMILIES = ("streaming_ctc_tone", "streaming_zipformer", "nemo_ctc")


@dataclass(frozen=True)
class Endpointing:
    """When a streaming recogniser decides the caller has finished. Tuned for short menu answers."""

    silence_before_speech: float = 3.0  # rule 1: nothing said for this long: final (empty) result
    silence_after_speech: float = 0.6  # rule 2: this much silence after words: the answer is complete
    max_utterance: float = 12.0  # rule 3: cut any utterance this long


def _pick(model_dir: Path, files: Sequence[str], stem: str) -> Path:
    names = [f for f in files if Path(f).name.startswith(stem) and f.endswith(".onnx")]
    if not names:
        names = sorted(p.name for p in model_dir.glob(f"{stem}*.onnx"))
    if not names:
        raise SpeechError(f"{model_dir}: no {stem}*.onnx; run `registratura models verify`", code="E512")
    names.sort(key=lambda n: (".int8." not in n, n))  # int8 first: a Pi has little memory and time
    return model_dir / names[0]


def _text(raw: str) -> str:
    return " ".join(raw.replace("▁", " ").lower().split())


def _confidence(text: str, probs: Sequence[float] | None, *, log: bool) -> float:
    if not text:
        return 0.0
    if not probs:
        return 1.0  # the engine gives no score (sherpa's CTC path): trust the words
    p = np.asarray(probs, dtype=np.float64)
    return float(np.clip(np.exp(p.mean()) if log else p.mean(), 0.0, 1.0))


class CtcScores:
    """The per-frame log-probabilities of a NeMo CTC model of letters, run through onnxruntime on the features
    sherpa computes (``fbank``): sherpa's CTC path gives only the greedy text, and spotting a menu's phrases
    (``ctc.spot``) needs the scores. Used only for an answer whose text named no option, so the model runs a
    second time for those alone. Needs kaldi-native-fbank and 80-bin "per_feature" models (the box's own)."""

    def __init__(self, model: str | Path, tokens: dict[str, int], info: OnnxInfo) -> None:
        import kaldi_native_fbank  # noqa: F401 - fail here, at load, rather than on a caller's answer
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in info.inputs]
        self.tokens = tokens

    @staticmethod
    def usable(info: OnnxInfo, tokens: dict[str, int]) -> bool:
        feats = info.inputs[0].dims if info.inputs else ()
        return (info.metadata.get("normalize_type") == "per_feature" and len(feats) == 3 and feats[1] == 80
                and "▁" in tokens and sum(len(t) == 1 and t.isalpha() for t in tokens) >= 20)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """(T_out, V) log-probabilities of 16 kHz float audio."""
        from appliance.speech import ctc, fbank

        f = fbank.features(audio)
        x = f.T[None, :, :].astype(np.float32)
        out = self.session.run(None, {self.inputs[0]: x, self.inputs[1]: np.array([f.shape[0]], np.int64)})[0]
        return ctc.log_softmax(out[0].astype(np.float64))


@dataclass
class SherpaAsr:
    """A loaded recogniser of one manifest family (see ``load_asr``); implements ``base.Asr``."""

    name: str
    family: str
    sample_rate: int
    streaming: bool
    recognizer: object
    endpointing: Endpointing = field(default_factory=Endpointing)
    scores: CtcScores | None = None  # a letters CTC model: menu phrases can be spotted in its scores

    def spot(self, pcm: bytes, sample_rate: int, options: Sequence[tuple[str, Sequence[str]]], *,
             max_cost: float = SPOT_MAX_COST, margin: float = SPOT_MARGIN) -> Spotted | None:
        """The menu option whose keywords the model's scores fit (``ctc.spot``), for an answer whose transcript
        named none; None when the model gives no scores or no option fits clearly enough."""
        if self.scores is None:
            return None
        from appliance.speech import ctc

        x = resample(pcm16_to_float(pcm), sample_rate, self.sample_rate)
        if len(x) < self.sample_rate // 10:
            return None
        return ctc.spot(self.scores(x), options, self.scores.tokens, max_cost=max_cost, margin=margin)

    def stream(self) -> _OnlineStream | _OfflineStream:
        if self.streaming:
            return _OnlineStream(self)
        return _OfflineStream(self)

    def transcribe(self, pcm: bytes, sample_rate: int = 8000) -> Transcript:
        s = self.stream()
        s.feed(pcm, sample_rate)
        return s.finish()


class _OfflineStream:
    """Buffers one utterance; ``finish`` decodes it (NeMo CTC on VAD-cut audio)."""

    def __init__(self, asr: SherpaAsr) -> None:
        self.asr = asr
        self._chunks: list[np.ndarray] = []
        self._resampler: Resampler | None = None
        self._rate_in = 0
        self._seconds = 0.0

    def feed(self, pcm: bytes, sample_rate: int = 8000) -> Transcript | None:
        x = pcm16_to_float(pcm)
        self._seconds += len(x) / sample_rate
        if sample_rate != self.asr.sample_rate:
            if self._resampler is None or self._rate_in != sample_rate:
                self._flush()
                self._resampler, self._rate_in = Resampler(sample_rate, self.asr.sample_rate), sample_rate
            x = self._resampler.process(x)
        self._chunks.append(x)
        return None

    def _flush(self) -> None:
        if self._resampler is not None:
            self._chunks.append(self._resampler.flush())
            self._resampler = None

    def finish(self) -> Transcript:
        t0 = time.perf_counter()
        self._flush()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        self._chunks = []
        seconds, self._seconds = self._seconds, 0.0
        rec = self.asr.recognizer
        text, probs = "", []
        if len(audio) >= self.asr.sample_rate // 10:  # < 100 ms: nothing a model can read
            s = rec.create_stream()  # type: ignore[attr-defined]
            s.accept_waveform(self.asr.sample_rate, audio)
            rec.decode_stream(s)  # type: ignore[attr-defined]
            text = _text(s.result.text)
            probs = list(getattr(s.result, "ys_log_probs", []) or [])
        return Transcript(text, _confidence(text, probs, log=True), True, seconds, time.perf_counter() - t0,
                          self.asr.name)


class _OnlineStream:
    """Streaming recognition with sherpa's endpointing; partial results while the caller speaks."""

    def __init__(self, asr: SherpaAsr) -> None:
        self.asr = asr
        self.rec = asr.recognizer
        self.s = self.rec.create_stream()  # type: ignore[attr-defined]
        self._resampler: Resampler | None = None
        self._rate_in = 0
        self._seconds = 0.0
        self._last = ""

    def _decode(self) -> None:
        while self.rec.is_ready(self.s):  # type: ignore[attr-defined]
            self.rec.decode_stream(self.s)  # type: ignore[attr-defined]

    def _result(self, final: bool, t0: float) -> Transcript:
        text = _text(self.rec.get_result(self.s))  # type: ignore[attr-defined]
        probs: list[float] = []
        try:
            probs = list(self.rec.ys_probs(self.s))  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError, TypeError):
            pass
        return Transcript(text, _confidence(text, probs, log=True), final, self._seconds,
                          time.perf_counter() - t0, self.asr.name)

    def feed(self, pcm: bytes, sample_rate: int = 8000) -> Transcript | None:
        t0 = time.perf_counter()
        x = pcm16_to_float(pcm)
        self._seconds += len(x) / sample_rate
        if sample_rate != self.asr.sample_rate:
            if self._resampler is None or self._rate_in != sample_rate:
                self._resampler, self._rate_in = Resampler(sample_rate, self.asr.sample_rate), sample_rate
            x = self._resampler.process(x)
        if len(x):
            self.s.accept_waveform(self.asr.sample_rate, x)
        self._decode()
        if self.rec.is_endpoint(self.s):  # type: ignore[attr-defined]
            result = self._result(True, t0)
            self.rec.reset(self.s)  # type: ignore[attr-defined]
            self._seconds, self._last = 0.0, ""
            return result
        result = self._result(False, t0)
        if result.text != self._last:
            self._last = result.text
            return result
        return None

    def finish(self) -> Transcript:
        t0 = time.perf_counter()
        if self._resampler is not None:
            tail = self._resampler.flush()
            if len(tail):
                self.s.accept_waveform(self.asr.sample_rate, tail)
        # Tail padding: the model's right context must see the end of the last word.
        self.s.accept_waveform(self.asr.sample_rate, np.zeros(int(0.3 * self.asr.sample_rate), np.float32))
        self.s.input_finished()
        self._decode()
        result = self._result(True, t0)
        self.s = self.rec.create_stream()  # type: ignore[attr-defined]
        self._seconds, self._last = 0.0, ""
        return result


def asr_files(family: str, model_dir: Path, files: Sequence[str] = ()) -> dict[str, Path]:
    """The files a family needs, by role (model, tokens, encoder, decoder, joiner)."""
    if family not in ASR_FAMILIES:
        raise SpeechError(f"ASR family {family!r} is not one of {', '.join(ASR_FAMILIES)}", code="E516")
    out = {"tokens": _need(model_dir / "tokens.txt", "tokens.txt")}
    if family == "streaming_zipformer":
        for role in ("encoder", "decoder", "joiner"):
            out[role] = _need(_pick(model_dir, files, role), role)
    else:
        out["model"] = _need(_pick(model_dir, files, "model"), "the model")
    return out


def _ctc_scores(model: Path, tokens_path: Path, info: OnnxInfo) -> CtcScores | None:
    tokens = read_tokens(tokens_path)
    if not CtcScores.usable(info, tokens):
        return None
    try:
        return CtcScores(model, tokens, info)
    except ImportError as exc:  # kaldi-native-fbank missing: transcripts still work, only the spotting is lost
        _LOGGER.warning("%s: menu phrases will not be spotted in the model's scores (%s)", model, exc)
        return None


def load_asr(name: str, family: str, model_dir: str | Path, sample_rate: int, *, files: Sequence[str] = (),
             num_threads: int = 1, endpointing: Endpointing | None = None, safe: bool = True) -> SherpaAsr:
    """Load a recogniser. ``safe``: for families whose metadata cannot be checked by reading, load it in a
    child process first (sherpa exits the whole process on a model it does not understand)."""
    model_dir = Path(model_dir)
    paths = asr_files(family, model_dir, files)
    ep = endpointing or Endpointing()
    if family == "nemo_ctc":
        info = check_nemo_ctc(paths["model"], paths["tokens"])
    elif safe:
        why = probe(family, *paths.values())
        if why:
            raise SpeechError(f"{name}: sherpa-onnx {VERSION} cannot load {model_dir} ({why}); run "
                              f"`registratura models verify {name}` or fetch it again", code="E517")
    rules = dict(enable_endpoint_detection=True, rule1_min_trailing_silence=ep.silence_before_speech,
                 rule2_min_trailing_silence=ep.silence_after_speech, rule3_min_utterance_length=ep.max_utterance)
    if family == "nemo_ctc":
        rec = sherpa_onnx.OfflineRecognizer.from_nemo_ctc(model=str(paths["model"]), tokens=str(paths["tokens"]),
                                                          num_threads=num_threads, sample_rate=sample_rate)
        return SherpaAsr(name, family, sample_rate, False, rec, ep, _ctc_scores(paths["model"], paths["tokens"], info))
    if family == "streaming_ctc_tone":
        rec = sherpa_onnx.OnlineRecognizer.from_t_one_ctc(tokens=str(paths["tokens"]), model=str(paths["model"]),
                                                          num_threads=num_threads, sample_rate=sample_rate, **rules)
        return SherpaAsr(name, family, sample_rate, True, rec, ep)
    rec = sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(paths["tokens"]), encoder=str(paths["encoder"]), decoder=str(paths["decoder"]),
        joiner=str(paths["joiner"]), num_threads=num_threads, sample_rate=sample_rate, **rules)
    return SherpaAsr(name, family, sample_rate, True, rec, ep)


# ------------------------------------------------------------------------------------------- TTS


def prepare_piper_voice(model: str | Path, config: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """Make a plain Piper voice (``.onnx`` + ``.onnx.json``) loadable by sherpa-onnx: a copy of the model with
    the metadata sherpa reads, and tokens.txt from the phoneme map. Done once; reused while the source is
    unchanged. Returns (model, tokens)."""
    import json

    model, config, out_dir = Path(model), Path(config), Path(out_dir)
    cfg = json.loads(config.read_text(encoding="utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    dst, tokens = out_dir / model.name, out_dir / "tokens.txt"
    src_stat = model.stat()
    stamp = out_dir / ".source"
    want = f"{model.resolve()}|{src_stat.st_size}|{int(src_stat.st_mtime)}|{config.stat().st_size}"
    if dst.is_file() and tokens.is_file() and stamp.is_file() and stamp.read_text() == want:
        return dst, tokens
    lang = cfg.get("language", {})
    meta = {
        "model_type": "vits",
        "comment": "piper",
        "language": str(lang.get("name_english") or lang.get("code") or cfg.get("espeak", {}).get("voice", "")),
        "voice": str(cfg.get("espeak", {}).get("voice", "")),
        "n_speakers": str(int(cfg.get("num_speakers", 1))),
        "sample_rate": str(int(cfg["audio"]["sample_rate"])),
    }
    part = out_dir / f".{model.name}.{os.getpid()}.part"
    with open(model, "rb") as src, open(part, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
        out.write(metadata_bytes(meta))
    lines = "".join(f"{ph} {ids[0]}\n" for ph, ids in cfg["phoneme_id_map"].items() if ids and ph != "\n")
    tpart = out_dir / f".tokens.{os.getpid()}.part"
    tpart.write_text(lines, encoding="utf-8")
    os.replace(part, dst)
    os.replace(tpart, tokens)
    stamp.write_text(want)
    return dst, tokens


class SherpaVitsVoice:
    """A Piper/VITS voice in sherpa-onnx's OfflineTts, fed phonemes from outside (sherpa 2.x has no espeak)."""

    def __init__(self, model: str | Path, tokens: str | Path, *, num_threads: int = 1, noise_scale: float = 0.667,
                 noise_scale_w: float = 0.8, length_scale: float = 1.0) -> None:
        info = check_vits(model, tokens)
        self.metadata = info.metadata
        vits = sherpa_onnx.OfflineTtsVitsModelConfig(model=str(model), tokens=str(tokens), noise_scale=noise_scale,
                                                     noise_scale_w=noise_scale_w, length_scale=length_scale)
        config = sherpa_onnx.OfflineTtsConfig(
            model=sherpa_onnx.OfflineTtsModelConfig(vits=vits, num_threads=num_threads), max_num_sentences=1)
        if not config.validate():
            raise SpeechError(f"{model}: sherpa-onnx rejects the TTS config", code="E514")
        self._tts = sherpa_onnx.OfflineTts(config)
        self.sample_rate = int(self._tts.sample_rate)
        self.num_speakers = int(self._tts.num_speakers)
        self.espeak_voice = info.metadata.get("voice", "")

    def generate(self, phonemes: Sequence[Sequence[str]], *, speed: float = 1.0, sid: int = 0) -> np.ndarray:
        """Float32 audio at ``sample_rate`` for sentences given as lists of phoneme codepoints."""
        gen = sherpa_onnx.GenerationConfig()
        gen.sid = sid
        gen.speed = speed
        gen.phoneme_codepoints = [[ord(c) for ph in sentence for c in ph] for sentence in phonemes if sentence]
        if not gen.phoneme_codepoints:
            return np.zeros(0, np.float32)
        audio = self._tts.generate("", gen)
        return np.asarray(audio.samples, dtype=np.float32)


# -------------------------------------------------------------------------------------- probe entry


def _probe_main(argv: list[str]) -> int:
    kind, paths = argv[0], argv[1:]
    if kind == "nemo_ctc":
        model = next(p for p in paths if p.endswith(".onnx"))
        tokens = next(p for p in paths if p.endswith(".txt"))
        check_nemo_ctc(model, tokens)
        sherpa_onnx.OfflineRecognizer.from_nemo_ctc(model=model, tokens=tokens)
    elif kind in ("streaming_ctc_tone", "streaming_zipformer"):
        d = Path(paths[0]).parent
        load_asr("probe", kind, d, 8000 if kind == "streaming_ctc_tone" else 16000,
                 files=[Path(p).name for p in paths], safe=False)
    elif kind == "vits":
        SherpaVitsVoice(paths[0], paths[1])
    elif kind == "silero":
        SileroVad(paths[0])
    else:
        print(f"unknown kind {kind}", file=sys.stderr)
        return 2
    print("ok")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "probe":
        try:
            sys.exit(_probe_main(sys.argv[2:]))
        except SpeechError as exc:
            print(str(exc), file=sys.stderr)
            sys.exit(1)
    print("usage: python -m appliance.speech.sherpa probe KIND FILE...", file=sys.stderr)
    sys.exit(2)
