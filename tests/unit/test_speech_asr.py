"""The ASR path without a Russian model: a tiny random-weight NeMo-CTC ONNX (the format of issue 8) built here
with onnx's helper API, loaded through sherpa_onnx.OfflineRecognizer.from_nemo_ctc; metadata checked before
sherpa sees it (sherpa exit()s on bad metadata); the streaming glue on a scripted recogniser."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
onnx = pytest.importorskip("onnx")
pytest.importorskip("sherpa_onnx")

from onnx import TensorProto as TP  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

from appliance.errors import SpeechError  # noqa: E402
from appliance.speech import sherpa  # noqa: E402
from appliance.speech.base import Asr, AsrStream, Transcript  # noqa: E402
from appliance.speech.engines import load_engines, packaged_silero  # noqa: E402
from appliance.speech.tts import float_to_pcm16  # noqa: E402

LETTERS = list("абвгдежзийклмнопрстуфхцчшщъыьэюя")
TOKENS = ["<blk>", "▁", *LETTERS]
META = {"vocab_size": str(len(TOKENS)), "subsampling_factor": "4", "normalize_type": "per_feature"}


def tiny_ctc(directory: Path, meta: dict[str, str] | None = None, tokens: list[str] | None = None,
             feat: int = 80, sub: int = 4, seed: int = 0) -> Path:
    """model.onnx + tokens.txt: features (N, feat, T) and lengths (N,) → log-probs (N, ceil(T/sub), V).

    A linear layer on every ``sub``-th frame; the lengths input really masks padded frames (sherpa reads the
    output length as T // sub, so T_out = ceil(T / sub) is never short)."""
    tokens = tokens or TOKENS
    v = len(tokens)
    w = np.random.default_rng(seed).normal(0, 0.1, (feat, v)).astype(np.float32)
    consts = {"W": w, "B": np.zeros(v, np.float32), "s0": np.array([0]), "s1": np.array([2 ** 62]),
              "ax2": np.array([2]), "step": np.array([sub]), "zero": np.array(0), "one": np.array(1),
              "sub": np.array(sub), "ax1": np.array([1]), "axm1": np.array([-1])}
    inits = [numpy_helper.from_array(a if a.dtype == np.float32 else a.astype(np.int64), k) for k, a in consts.items()]
    nodes = [
        helper.make_node("Slice", ["audio_signal", "s0", "s1", "ax2", "step"], ["xs"]),
        helper.make_node("Transpose", ["xs"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["xt", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["logits"]),
        helper.make_node("Shape", ["xt"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["t_out"], axis=0),
        helper.make_node("Range", ["zero", "t_out", "one"], ["frames"]),
        helper.make_node("Mul", ["frames", "sub"], ["frame_start"]),
        helper.make_node("Unsqueeze", ["length", "ax1"], ["len2"]),
        helper.make_node("Less", ["frame_start", "len2"], ["mask"]),
        helper.make_node("Cast", ["mask"], ["maskf"], to=TP.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axm1"], ["mask3"]),
        helper.make_node("Mul", ["logits", "mask3"], ["masked"]),
        helper.make_node("LogSoftmax", ["masked"], ["logprobs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_ctc",
        [helper.make_tensor_value_info("audio_signal", TP.FLOAT, ["N", feat, "T"]),
         helper.make_tensor_value_info("length", TP.INT64, ["N"])],
        [helper.make_tensor_value_info("logprobs", TP.FLOAT, ["N", "T_out", v])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, val in (META if meta is None else meta).items():
        p = model.metadata_props.add()
        p.key, p.value = k, val
    onnx.checker.check_model(model)
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(directory / "model.onnx"))
    (directory / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(tokens)), encoding="utf-8")
    return directory / "model.onnx"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny-ctc")
    tiny_ctc(d)
    return d


@pytest.fixture(scope="module")
def asr(model_dir):
    return sherpa.load_asr("tiny-ctc", "nemo_ctc", model_dir, 16000, files=["model.onnx", "tokens.txt"])


@pytest.fixture(scope="module")
def speech_8k(tmp_path_factory) -> bytes:
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("apt-get install espeak-ng sox")
    d = tmp_path_factory.mktemp("speech")
    subprocess.run(["espeak-ng", "-v", "ru", "-w", str(d / "a.wav"), "запись к врачу"], check=True)
    subprocess.run(["sox", str(d / "a.wav"), "-r", "8000", "-b", "16", "-c", "1", "-t", "raw", "-e", "signed",
                    str(d / "a.raw")], check=True)
    return (d / "a.raw").read_bytes()


# ------------------------------------------------------------------------------------ reading the file


def test_onnx_info_reads_metadata_and_io_without_loading(model_dir):
    info = sherpa.onnx_info(model_dir / "model.onnx")
    assert info.metadata == META
    assert [(i.name, i.elem_type, i.dims) for i in info.inputs] == [
        ("audio_signal", "float32", ("N", 80, "T")), ("length", "int64", ("N",))]
    assert info.outputs[0].dims == ("N", "T_out", len(TOKENS))


def test_metadata_can_be_appended(tmp_path, model_dir):
    copy = tmp_path / "m.onnx"
    copy.write_bytes((model_dir / "model.onnx").read_bytes() + sherpa.metadata_bytes({"extra": "ё ✓"}))
    assert sherpa.onnx_info(copy).metadata["extra"] == "ё ✓"
    assert onnx.load(str(copy)).metadata_props[-1].value == "ё ✓"  # still a valid model for onnx too


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\xff" * 100)
    with pytest.raises(SpeechError) as err:
        sherpa.onnx_info(bad)
    assert err.value.code == "E510"


@pytest.mark.parametrize("meta,tokens,why", [
    ({"subsampling_factor": "4", "normalize_type": ""}, None, "vocab_size is missing"),
    ({**META, "vocab_size": "7"}, None, f"tokens.txt has {len(TOKENS)} tokens"),
    ({"vocab_size": META["vocab_size"], "normalize_type": ""}, None, "subsampling_factor is missing"),
    ({**META, "normalize_type": "all_features"}, None, "normalize_type 'all_features'"),
    ({"vocab_size": META["vocab_size"], "subsampling_factor": "4"}, None, "normalize_type is missing"),
    (META, ["<eps>", "▁", *LETTERS], "no <blk>"),
])
def test_bad_metadata_is_a_clear_error_not_an_exit(tmp_path, meta, tokens, why):
    tiny_ctc(tmp_path, meta, tokens)
    with pytest.raises(SpeechError) as err:
        sherpa.load_asr("bad", "nemo_ctc", tmp_path, 16000)
    assert why in str(err.value) and err.value.code == "E513"


def test_probe_survives_a_model_sherpa_exits_on(model_dir):
    """Loaded as the wrong family, sherpa kills its process: the probe is a child, we get the reason."""
    t0 = time.perf_counter()
    why = sherpa.probe("streaming_ctc_tone", model_dir / "model.onnx", model_dir / "tokens.txt")
    assert why and time.perf_counter() - t0 < 15
    assert sherpa.probe("nemo_ctc", model_dir / "model.onnx", model_dir / "tokens.txt") is None


# ----------------------------------------------------------------------------------------- decoding


def test_loads_through_from_nemo_ctc_and_returns_text(asr, speech_8k):
    assert isinstance(asr, Asr) and not asr.streaming and asr.sample_rate == 16000
    t = asr.transcribe(speech_8k, 8000)
    assert isinstance(t, Transcript) and isinstance(t.text, str) and t.final
    assert t.text and set(t.text) <= set(LETTERS) | {" "}  # random weights: letters, but no meaning
    assert t.audio_seconds == pytest.approx(len(speech_8k) / 16000, abs=0.01)
    assert 0 < t.decode_seconds < 1.0 and t.engine == "tiny-ctc" and t.confidence == 1.0


def test_same_audio_same_text_and_chunked_feed(asr, speech_8k):
    s = asr.stream()
    assert isinstance(s, AsrStream)
    for i in range(0, len(speech_8k), 320):  # 20 ms frames, as the media port delivers them
        assert s.feed(speech_8k[i:i + 320]) is None  # offline: nothing until the end
    assert s.finish().text == asr.transcribe(speech_8k).text


def test_nothing_heard(asr):
    t = asr.transcribe(b"", 8000)
    assert (t.text, t.confidence, t.final, t.audio_seconds, t.empty) == ("", 0.0, True, 0.0, True)
    assert asr.transcribe(bytes(320), 8000).text == ""  # 20 ms: too short to decode


def test_vad_cut_utterance_into_offline_ctc(asr, speech_8k):
    model = packaged_silero()
    if model is None:
        pytest.skip("pip install --no-deps silero-vad")
    vad = sherpa.SileroVad(model)
    pcm = bytes(8000) + speech_8k + bytes(16000)  # 0.5 s silence, speech, 1 s silence
    for i in range(0, len(pcm), 320):
        vad.feed(pcm[i:i + 320], 0.02)
    vad.flush()
    utts = vad.utterances()
    assert len(utts) == 1 and utts[0].sample_rate == 16000
    t = asr.transcribe(utts[0].pcm, utts[0].sample_rate)
    assert t.text and t.audio_seconds == pytest.approx(utts[0].seconds)


# ------------------------------------------------------------------------------- start-up, manifest


MANIFEST = """\
version: 1
models:
  - name: broken-ctc
    kind: asr
    family: nemo_ctc
    language: ru
    sample_rate: 16000
    license: test
    url: file:///nowhere/model.tar.bz2
    files: [model.onnx, tokens.txt]
    rank: 1
  - name: tiny-ctc
    kind: asr
    family: nemo_ctc
    language: ru
    sample_rate: 16000
    license: test
    url: file:///nowhere/model.tar.bz2
    files: [model.onnx, tokens.txt]
    rank: 2
"""


def test_engines_load_the_installed_model_and_say_why(tmp_path):
    (tmp_path / "manifest.yaml").write_text(MANIFEST, encoding="utf-8")
    models = tmp_path / "models"
    eng = load_engines(models, "ru", manifest=tmp_path / "manifest.yaml", kinds=("asr",))
    assert eng.asr is None and eng.lines == ["ASR: none installed; spoken menu choices disabled"]
    tiny_ctc(models / "tiny-ctc")
    tiny_ctc(models / "broken-ctc", {**META, "vocab_size": "3"})
    eng = load_engines(models, "ru", manifest=tmp_path / "manifest.yaml", kinds=("asr",))
    assert eng.spoken_menus and eng.asr.name == "tiny-ctc"
    line = eng.lines[0]
    assert line.startswith("ASR: tiny-ctc (nemo_ctc, 16 kHz") and "spoken menu choices enabled" in line
    assert "skipped broken-ctc" in line and "vocab_size 3" in line


# ---------------------------------------------------------------------- streaming glue (scripted engine)


class ScriptedOnline:
    """Stands in for sherpa's OnlineRecognizer: 'hears' one letter per 0.1 s of loud audio, endpoints after
    0.3 s of quiet following speech; records the rate and amount of audio it got."""

    class Stream:
        def __init__(self) -> None:
            self.samples = np.zeros(0, np.float32)
            self.done = False

        def accept_waveform(self, rate: int, x: np.ndarray) -> None:
            assert rate == 16000
            self.samples = np.concatenate((self.samples, x))

        def input_finished(self) -> None:
            self.done = True

    def create_stream(self) -> ScriptedOnline.Stream:
        return self.Stream()

    def is_ready(self, s: Stream) -> bool:
        return False

    def decode_stream(self, s: Stream) -> None:
        raise AssertionError("not ready")

    def _frames(self, s: Stream) -> np.ndarray:
        n = len(s.samples) // 1600
        return np.abs(s.samples[: n * 1600]).reshape(n, 1600).max(axis=1) > 0.1

    def get_result(self, s: Stream) -> str:
        return "▁" + "а" * int(self._frames(s).sum())

    def is_endpoint(self, s: Stream) -> bool:
        f = self._frames(s)
        return bool(f.any() and len(f) >= 3 and not f[-3:].any())

    def reset(self, s: Stream) -> None:
        s.samples = np.zeros(0, np.float32)


def test_streaming_partials_endpoint_and_resampling():
    asr = sherpa.SherpaAsr("scripted", "streaming_zipformer", 16000, True, ScriptedOnline())
    s = asr.stream()
    loud = float_to_pcm16(np.full(160, 0.5, np.float32))
    quiet = bytes(320)
    partials = [r for r in (s.feed(loud) for _ in range(25)) if r is not None]  # 0.5 s of "speech" at 8 kHz
    assert partials and not any(p.final for p in partials) and partials[-1].text.startswith("аааа")
    finals = [r for r in (s.feed(quiet) for _ in range(25)) if r is not None and r.final]
    assert len(finals) == 1 and finals[0].text.startswith("аааа") and finals[0].engine == "scripted"
    s.feed(loud)
    last = s.finish()  # the audio since the endpoint: trailing quiet and one loud frame
    assert last.final and 0.02 <= last.audio_seconds <= 0.3
