"""The features sherpa-onnx computes for its NeMo CTC loader, reproduced with kaldi-native-fbank.

The box scores menu phrases against its CTC model's log-probabilities (``speech.ctc``) and so runs the model
through onnxruntime itself; these must be exactly the features sherpa feeds the model, or the scores would not
be the model's. How they were derived and checked against sherpa: tools/asr_train/features.py.
"""

from __future__ import annotations

import numpy as np

RATE = 16000
DIM = 80


def fbank_options():  # noqa: ANN201 - a knf.FbankOptions
    import kaldi_native_fbank as knf

    o = knf.FbankOptions()
    o.frame_opts.samp_freq = RATE
    o.frame_opts.frame_shift_ms = 10
    o.frame_opts.frame_length_ms = 25
    o.frame_opts.dither = 0.0
    o.frame_opts.preemph_coeff = 0.97
    o.frame_opts.remove_dc_offset = False
    o.frame_opts.window_type = "hann"
    o.frame_opts.snip_edges = False
    o.mel_opts.num_bins = DIM
    o.mel_opts.low_freq = 0
    o.mel_opts.high_freq = 0  # <= 0: Nyquist + high_freq = 8000 Hz
    o.mel_opts.is_librosa = True
    return o


_OPTS = None


def log_fbank(x: np.ndarray) -> np.ndarray:
    """(T, 80) log mel energies of 16 kHz float audio, before normalisation."""
    import kaldi_native_fbank as knf

    global _OPTS
    if _OPTS is None:
        _OPTS = fbank_options()
    fb = knf.OnlineFbank(_OPTS)
    fb.accept_waveform(RATE, np.asarray(x, dtype=np.float32).tolist())
    fb.input_finished()
    n = fb.num_frames_ready
    if n == 0:
        return np.zeros((0, DIM), np.float32)
    return np.stack([np.asarray(fb.get_frame(i), dtype=np.float32) for i in range(n)])


def per_feature(f: np.ndarray) -> np.ndarray:
    """sherpa's NemoNormalizePerFeature: per bin, (x - mean) / (sqrt(E[x²] - mean²) + 1e-5)."""
    mean = f.mean(axis=0, keepdims=True)
    var = np.maximum((f ** 2).mean(axis=0, keepdims=True) - mean ** 2, 0.0)
    return ((f - mean) / (np.sqrt(var) + 1e-5)).astype(np.float32)


def features(x: np.ndarray) -> np.ndarray:
    """(T, 80) features exactly as sherpa feeds them to the model (before its (N, T, C) → (N, C, T) transpose)."""
    return per_feature(log_fbank(x))
