"""Stage 3: the features sherpa-onnx computes for its NeMo CTC loader, reproduced with kaldi-native-fbank.

sherpa-onnx 2.0.1 (offline-recognizer-ctc-impl.h, offline-stream.cc, features.h) for ``from_nemo_ctc``:
16 kHz (it resamples other rates itself), 80 fbank bins, 25 ms frames every 10 ms, Hann window, pre-emphasis
0.97, no DC removal, dither 0, snip_edges false, mel filters 0–8000 Hz with librosa's Slaney scale and norm,
log power; with metadata normalize_type "per_feature": per-bin mean and (biased) std over the utterance,
x = (x - mean) / (std + 1e-5). Samples are floats in [-1, 1].

Checked two ways (export.py runs both): ``probe_features`` runs a "feature echo" model (logits = the features)
through sherpa, so sherpa's greedy output reveals, per frame, the largest bin of ITS features: on synthetic clips
99 % of emitted bins are also the largest in ours (the rest are near-ties, < 0.02 apart after normalisation),
against 19–94 % for any one option changed (snip_edges 29 %, non-Slaney mel 19 %, low_freq 20 Hz 69 %, povey
window 94 %, no pre-emphasis 94 %, DC removal 97 %, no normalisation 22 %). ``check_against_sherpa`` decodes
clips with an exported model through sherpa and through onnxruntime on these features: same tokens.
"""

from __future__ import annotations

import numpy as np

from appliance.speech.fbank import DIM, RATE, fbank_options, features, log_fbank, per_feature

__all__ = ["DIM", "RATE", "features", "fbank_options", "log_fbank", "per_feature"]


def check_against_sherpa(model: str, tokens: str, clips: list[np.ndarray]) -> dict:
    """Decode ``clips`` (16 kHz float) with sherpa-onnx and with onnxruntime on ``features``; returns the
    number of clips whose token sequences agree and the largest difference of the emitted log-probs."""
    import onnxruntime as ort
    import sherpa_onnx

    rec = sherpa_onnx.OfflineRecognizer.from_nemo_ctc(model=model, tokens=tokens, num_threads=1)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    syms = {}
    for line in open(tokens, encoding="utf-8"):
        parts = line.rstrip("\n").rsplit(" ", 1)
        if len(parts) == 2:
            syms[int(parts[1])] = parts[0]
    blank = next(i for i, s in syms.items() if s == "<blk>")
    same, max_diff, n_probs = 0, 0.0, 0
    for x in clips:
        s = rec.create_stream()
        s.accept_waveform(RATE, x)
        rec.decode_stream(s)
        f = features(x)
        out = sess.run(None, {names[0]: f.T[None], names[1]: np.array([len(f)], np.int64)})[0][0]
        out = out[: len(f) // int(sess.get_modelmeta().custom_metadata_map["subsampling_factor"])]
        ids, probs, prev = [], [], -1
        for t, k in enumerate(out.argmax(-1)):
            if k != blank and k != prev:
                ids.append(syms[int(k)])
                probs.append(float(out[t, k]))
            prev = k
        if [t.replace("▁", " ") for t in ids] == [t.replace("▁", " ") for t in s.result.tokens]:  # sherpa: "▁" → " "
            same += 1
        sp = list(getattr(s.result, "ys_log_probs", []) or [])
        if len(sp) == len(probs):
            for a, b in zip(sp, probs, strict=True):
                max_diff = max(max_diff, abs(a - b))
                n_probs += 1
    return {"clips": len(clips), "same_tokens": same, "log_probs_compared": n_probs, "max_log_prob_diff": max_diff}


def write_probe_model(out_dir) -> tuple[str, str]:  # noqa: ANN001
    """A "feature echo" NeMo CTC model: logits = the 80 features of each frame (+ a never-winning blank).

    sherpa's greedy decode of it emits, per frame, the bin with the largest normalised feature (repeats merged)
    and the frame's timestamp: a fingerprint of sherpa's own features that ``probe_features`` compares with
    ``features()`` here. Returns (model, tokens)."""
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    nodes = [helper.make_node("Transpose", ["audio_signal"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Pad", ["t", "pads", "padval"], ["logprobs"], mode="constant"),
             helper.make_node("Identity", ["length"], ["length_out"])]
    graph = helper.make_graph(
        nodes, "feature_echo",
        [helper.make_tensor_value_info("audio_signal", TensorProto.FLOAT, ["N", DIM, "T"]),
         helper.make_tensor_value_info("length", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("logprobs", TensorProto.FLOAT, ["N", "T", DIM + 1]),
         helper.make_tensor_value_info("length_out", TensorProto.INT64, ["N"])],
        [helper.make_tensor("pads", TensorProto.INT64, [6], [0, 0, 0, 0, 0, 1]),
         helper.make_tensor("padval", TensorProto.FLOAT, [], [-1e4])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    for k, v in {"vocab_size": str(DIM + 1), "subsampling_factor": "1", "normalize_type": "per_feature"}.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m)
    model, tokens = out / "probe.onnx", out / "probe_tokens.txt"
    onnx.save(m, str(model))
    tokens.write_text("".join(f"b{i:02d} {i}\n" for i in range(DIM)) + f"<blk> {DIM}\n", encoding="utf-8")
    return str(model), str(tokens)


def probe_features(model: str, tokens: str, clips: list[np.ndarray], feats=None) -> dict:  # noqa: ANN001
    """Compare sherpa's features with ``feats`` (default ``features``) through the echo model: every bin sherpa
    emits must be, in our features of that frame, the largest (within 1e-3: ties), and the frame count must
    agree. A little noise is added first: synthetic clips have digital silence, where all bins tie."""
    import sherpa_onnx

    feats = feats or features
    rec = sherpa_onnx.OfflineRecognizer.from_nemo_ctc(model=model, tokens=tokens, num_threads=1)
    rng = np.random.default_rng(0)
    emitted = agree = 0
    for x in clips:
        x = (x + rng.standard_normal(len(x)) * 1e-3).astype(np.float32)
        s = rec.create_stream()
        s.accept_waveform(RATE, x)
        rec.decode_stream(s)
        f = feats(x)
        for tok, ts in zip(s.result.tokens, s.result.timestamps, strict=False):
            i, k = round(ts * 100), int(tok[1:])
            emitted += 1
            agree += bool(i < len(f) and f[i, k] >= f[i].max() - 1e-3)
    return {"clips": len(clips), "emitted": emitted, "agree": agree,
            "agree_fraction": round(agree / max(emitted, 1), 4)}
