"""Stage 5: ONNX export in the layout sherpa-onnx's NeMo CTC loader reads, int8 quantisation, and checks.

- ``torch.onnx.export(dynamo=False)``: one file; inputs ``audio_signal`` float32 (N, 80, T) and ``length``
  int64 (N,), output ``logprobs`` (N, T_out, V), all axes but 80 and V dynamic;
- metadata ``vocab_size``, ``subsampling_factor``, ``normalize_type`` = "per_feature" (+ model_type, version);
- ``onnxruntime.quantization.quantize_dynamic`` to int8, the metadata copied over again in case it was dropped;
- ``appliance.speech.sherpa.check_nemo_ctc`` on both files BEFORE sherpa ever loads them (sherpa exit()s on
  bad metadata), then ``sherpa.probe`` (a child process), then ``features.check_against_sherpa``.

    python -m tools.asr_train.export --ckpt run/best.pt --out run/export/ [--clips clips/]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from tools.asr_train.model import TOKENS, CtcModel, write_tokens


def set_metadata(path: Path, meta: dict[str, str]) -> None:
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.save(m, str(path))


def export(ckpt_path: Path, out: Path) -> tuple[Path, Path, Path]:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    model = CtcModel(**ckpt["config"])
    model.load_state_dict(ckpt["state"])
    model.eval()
    assert ckpt["tokens"] == TOKENS, "tokens of the checkpoint differ from model.TOKENS"
    out.mkdir(parents=True, exist_ok=True)
    fp32, int8, tokens = out / "model.onnx", out / "model.int8.onnx", out / "tokens.txt"
    x, lengths = torch.randn(2, 80, 123), torch.tensor([123, 77], dtype=torch.long)
    torch.onnx.export(model, (x, lengths), str(fp32), input_names=["audio_signal", "length"],
                      output_names=["logprobs"], opset_version=17, dynamo=False,
                      dynamic_axes={"audio_signal": {0: "N", 2: "T"}, "length": {0: "N"},
                                    "logprobs": {0: "N", 1: "T_out"}})
    meta = {"vocab_size": str(len(TOKENS)), "subsampling_factor": str(model.subsampling),
            "normalize_type": "per_feature", "model_type": "EncDecCTCModel", "model_author": "registratura",
            "comment": "ru-commands: clinic command CTC over Russian letters (tools/asr_train)",
            "params": str(ckpt.get("params", "")), "epoch": str(ckpt.get("epoch", "")),
            "built": time.strftime("%Y-%m-%d")}
    set_metadata(fp32, meta)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    kept = {p.key: p.value for p in onnx.load(str(int8)).metadata_props}
    if any(kept.get(k) != v for k, v in meta.items()):
        set_metadata(int8, meta)
    write_tokens(tokens)
    return fp32, int8, tokens


def check(model: Path, tokens: Path) -> None:
    """The box's own checks, in the box's order: read the metadata, then load in a child process."""
    from appliance.speech import sherpa

    sherpa.check_nemo_ctc(model, tokens)
    why = sherpa.probe("nemo_ctc", model, tokens)
    if why:
        raise SystemExit(f"{model}: sherpa-onnx cannot load it: {why}")


def compare_torch_onnx(ckpt_path: Path, model_path: Path, clips: list[np.ndarray]) -> float:
    """Largest |log-prob| difference between PyTorch and onnxruntime on real features."""
    import onnxruntime as ort

    from tools.asr_train import features as F

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    model = CtcModel(**ckpt["config"])
    model.load_state_dict(ckpt["state"])
    model.eval()
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for a in clips:
        f = F.features(a).T[None].copy()
        n = np.array([f.shape[2]], np.int64)
        with torch.no_grad():
            ref = model(torch.from_numpy(f), torch.from_numpy(n)).numpy()
        got = sess.run(None, {"audio_signal": f, "length": n})[0]
        worst = max(worst, float(np.max(np.abs(ref - got))))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--clips", type=Path, help="clips dir: check features and decoding against sherpa on its clips")
    ap.add_argument("--n-check", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    fp32, int8, tokens = export(args.ckpt, args.out)
    report: dict = {"fp32_bytes": fp32.stat().st_size, "int8_bytes": int8.stat().st_size}
    for m in (fp32, int8):
        check(m, tokens)
    print(f"export: {fp32} ({report['fp32_bytes']} B), {int8} ({report['int8_bytes']} B): check_nemo_ctc + "
          "sherpa probe ok")
    if args.clips:
        from tools.asr_train import features as F
        from tools.asr_train.train import load_clips

        rows = load_clips(args.clips, "test", args.n_check)  # topped up from train (a smoke run has few test clips)
        rows += load_clips(args.clips, "train", args.n_check)[: max(args.n_check - len(rows), 0)]
        audio = [r["audio"] for r in rows]
        report["torch_vs_onnx_fp32_max_abs"] = compare_torch_onnx(args.ckpt, fp32, audio)
        report["sherpa_vs_features_fp32"] = F.check_against_sherpa(str(fp32), str(tokens), audio)
        report["sherpa_vs_features_int8"] = F.check_against_sherpa(str(int8), str(tokens), audio)
        report["feature_echo_probe"] = F.probe_features(*F.write_probe_model(args.out / "probe"), audio)
        print("export checks:", json.dumps(report))
    (args.out / "export.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
