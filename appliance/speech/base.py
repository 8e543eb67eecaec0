"""Speech protocols (Vad, Asr, Tts) and the small frozen results they pass around; no native imports here.

Audio crosses these interfaces as 16-bit signed little-endian mono PCM (``bytes``) with its sample rate, the
form pjsua2's ``AudioMediaPort`` hands out and WAV files hold. Engines convert to float internally.
The Vad protocol and its result live in ``speech/vad.py`` (the energy detector came first); they are
re-exported here so the rest of the box imports every speech interface from one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from appliance.speech.vad import Samples, Vad, VadResult

__all__ = [
    "Asr",
    "AsrStream",
    "AudioChunk",
    "Samples",
    "Transcript",
    "Tts",
    "Utterance",
    "Vad",
    "VadResult",
    "pcm_seconds",
]

TELEPHONY_RATE = 8000


def base_language(language: str) -> str:
    """"ru_RU" / "en-US" / "EN" -> "ru" / "en"."""
    return language.split("_")[0].split("-")[0].lower()


def pcm_seconds(pcm: bytes, sample_rate: int) -> float:
    return len(pcm) / 2 / sample_rate if sample_rate else 0.0


@dataclass(frozen=True, slots=True)
class Utterance:
    """A stretch of caller speech cut by the VAD: what an offline recogniser decodes in one go."""

    pcm: bytes
    sample_rate: int
    start: float  # seconds since the VAD's stream began (or was reset)

    @property
    def seconds(self) -> float:
        return pcm_seconds(self.pcm, self.sample_rate)


@dataclass(frozen=True, slots=True)
class Transcript:
    """What a recogniser heard. ``text`` is lowercase, words separated by single spaces."""

    text: str
    confidence: float  # 0..1; a CTC model's mean token posterior, 0.0 when nothing was heard
    final: bool  # False: a partial result of a streaming recogniser, more audio may change it
    audio_seconds: float  # audio the result covers
    decode_seconds: float  # wall time spent decoding it (for the final result: after end of speech)
    engine: str  # model name, e.g. "t-one-ru"

    @property
    def empty(self) -> bool:
        return not self.text.strip()


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of synthesised speech, usually one sentence, ready to play at ``sample_rate``."""

    pcm: bytes
    sample_rate: int
    text: str = ""  # the sentence it speaks, when the engine splits by sentence

    @property
    def seconds(self) -> float:
        return pcm_seconds(self.pcm, self.sample_rate)


@runtime_checkable
class AsrStream(Protocol):
    """One utterance (or one listening turn) of one call. Not thread-safe: feed it from one thread."""

    def feed(self, pcm: bytes, sample_rate: int = TELEPHONY_RATE) -> Transcript | None:
        """Add audio; a streaming engine returns a partial (or, at its own endpoint, a final) transcript."""
        ...

    def finish(self) -> Transcript:
        """End of speech (VAD or the engine's endpoint): decode what is left and return the final result."""
        ...


@runtime_checkable
class Asr(Protocol):
    """A loaded recogniser. Thread-safe: streams of different calls may be decoded on different threads."""

    name: str  # model name from the manifest
    family: str  # manifest family: streaming_ctc_tone, streaming_zipformer, nemo_ctc
    sample_rate: int  # the model's own rate; telephony audio is resampled to it
    streaming: bool  # True: partial results while the caller speaks; False: decodes VAD-cut utterances

    def stream(self) -> AsrStream: ...

    def transcribe(self, pcm: bytes, sample_rate: int = TELEPHONY_RATE) -> Transcript:
        """Decode one whole utterance."""
        ...


@runtime_checkable
class Tts(Protocol):
    """A text-to-speech engine with one voice. ``(name, voice, rate, text)`` keys the prompt cache."""

    name: str  # engine: "espeak-ng", "piper", "sherpa-piper"
    voice: str  # voice id: "ru", "en_US-joe-medium", "piper-ru-irina"
    language: str  # "ru", "en"
    native_rate: int  # what the model produces before resampling

    def stream(self, text: str, sample_rate: int = TELEPHONY_RATE) -> Iterator[AudioChunk]:
        """Sentence by sentence: the first chunk can play while the rest is synthesised."""
        ...

    def synthesize(self, text: str, sample_rate: int = TELEPHONY_RATE) -> AudioChunk:
        """All of ``text`` as one chunk."""
        ...
