"""Stage 6: accuracy and speed of an exported model through the box's own loader, for the model card.

Runs in the box's venv (no torch): ``appliance.speech.sherpa.load_asr`` loads the model exactly as the box does,
each held-out clip goes in as an 8 kHz G.711 call would (16 kHz clip → 8 kHz → µ-law round trip → the box
resamples back to 16 kHz), and the transcript is scored the way the flow engine uses it:

- menu intent: ``flow.keywords.choose`` (what the engine runs: spoken key, keyword, near-miss spelling) against
  the options of the clip's menu node in ivr_flows/ → the right key;
- phone number: ``numbers_ru.parse_digits`` → exactly the 11 digits;
- CER over all held-out clips; real-time factor of ``finish()`` on one thread.

``--engine festival`` scores only the clips one synthesiser spoke (a clip's engine is named by its voice:
``festival:msu_ru_nsh``; espeak-ng otherwise), e.g. festival's held-out renderings (``synth --held-out-engines``).

    python -m tools.asr_train.evaluate --model-dir run/export --clips clips/ [--engine espeak] [--out eval.json]
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import json
import time
from pathlib import Path

import yaml

from appliance.flow.keywords import choose
from appliance.speech import ctc, sherpa
from appliance.speech.numbers_ru import parse_digits
from appliance.speech.tts import float_to_pcm16, resample
from tools.asr_train import synth


def menu_options(flows_dir: Path) -> dict[str, list[tuple[str, list[str]]]]:
    out = {}
    for path in sorted(flows_dir.glob("*.yaml")):
        flow = yaml.safe_load(path.read_text(encoding="utf-8"))
        for node_id, node in (flow.get("nodes") or {}).items():
            if node.get("options"):
                out[f"{path.stem}:{node_id}"] = [(str(k), list(o.get("keywords") or []))
                                                 for k, o in node["options"].items()]
    return out


def _cer(ref: str, hyp: str) -> int:
    d = list(range(len(hyp) + 1))
    for i, a in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, b in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (a != b))
    return d[len(hyp)]


def _test_rows(dirs: list[Path], unlike: Path | None) -> list[dict]:
    """The test split of each clip directory; with ``unlike``, without any clip rendered exactly (same text,
    voice, speed and pitch: espeak-ng then gives the same audio) as one in that directory, nor twice."""
    def read(d: Path) -> list[dict]:
        rows = [json.loads(x) for x in (d / "clips.jsonl").read_text(encoding="utf-8").splitlines() if x]
        return [{**r, "dir": d} for r in rows if r["split"] == "test"]

    seen = {(r["text"], r["voice"], r["speed"], r["pitch"]) for r in read(unlike)} if unlike else set()
    out = []
    for d in dirs:
        for r in read(d):
            k = (r["text"], r["voice"], r["speed"], r["pitch"])
            if unlike and k in seen:
                continue
            seen.add(k)
            out.append(r)
    return out


def _accept(spotted, max_cost: float | None = None, margin: float | None = None) -> bool:  # noqa: ANN001
    """Would the box take this spotted option (a ``ctc.Spotted`` or a (cost, runner_up, ...) tuple)?"""
    cost, runner_up = (spotted.cost, spotted.runner_up) if hasattr(spotted, "cost") else spotted[:2]
    max_cost = sherpa.SPOT_MAX_COST if max_cost is None else max_cost
    margin = sherpa.SPOT_MARGIN if margin is None else margin
    return ctc.accepted(cost, runner_up, max_cost, margin)


def _sweep(spots: list, others: list, menu_n: int, text_ok: int, other_n: int) -> None:
    print("max_cost margin  menu_intent  wrong_branch  non_answers_chosen")
    for max_cost in (2, 3, 4, 5, 6, 8, 10, 12, 15):
        for margin in (0.5, 1, 2, 3, 4, 6):
            ok = sum(_accept(s, max_cost, margin) and s[2] for s in spots)
            wrong = sum(_accept(s, max_cost, margin) and not s[2] for s in spots)
            chosen = sum(_accept(o, max_cost, margin) for o in others)
            print(f"{max_cost:8} {margin:6}  {(text_ok + ok) / max(menu_n, 1):11.3f}  {wrong:12}  "
                  f"{chosen:5} of {other_n}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--clips", type=Path, required=True)
    ap.add_argument("--also", type=Path, action="append", default=[], help="more clip directories to score")
    ap.add_argument("--unlike", type=Path, help="skip clips rendered exactly as one in this directory's test split")
    ap.add_argument("--flows", type=Path, default=Path("ivr_flows"))
    ap.add_argument("--engine", choices=synth.ENGINES, help="score only the clips this synthesiser spoke")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--spot-sweep", action="store_true",
                    help="print menu accuracy and false choices over a grid of spotting thresholds (tuning)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    asr = sherpa.load_asr("ru-commands", "nemo_ctc", args.model_dir, 16000, files=["model.int8.onnx", "tokens.txt"])
    load_s = time.perf_counter() - t0
    rows = [r for r in _test_rows([args.clips, *args.also], args.unlike)
            if not args.engine or synth.engine_of(r["voice"]) == args.engine][: args.limit or None]
    options = menu_options(args.flows)
    menu_ok = menu_n = phone_ok = phone_n = errs = chars = text_ok = other_n = 0
    spots: list[tuple[float, float, bool]] = []  # menu answers whose words named no option
    others: list[tuple[float, float]] = []  # free phrases and yes/no at a menu
    busy = audio_s = 0.0
    samples, misses, phone_misses = [], [], []
    kind_errs: collections.Counter[str] = collections.Counter()
    kind_chars: collections.Counter[str] = collections.Counter()
    for r in rows:
        x, _ = synth.read_wav(r["dir"] / "wav" / r["path"])
        call = synth.ulaw_roundtrip(resample(x, 16000, 8000))
        t1 = time.perf_counter()
        tr = asr.transcribe(float_to_pcm16(call), 8000)  # resampling + features + model + greedy decode
        busy, audio_s = busy + time.perf_counter() - t1, audio_s + len(x) / 16000
        hyp = tr.text
        e = _cer(r["text"], hyp)
        errs, chars = errs + e, chars + len(r["text"])
        kind_errs[r["kind"].split(":")[0]] += e
        kind_chars[r["kind"].split(":")[0]] += len(r["text"])
        if r["kind"].startswith("menu:"):
            _, flow, node, key = r["kind"].split(":")
            opts = options[f"{flow}:{node}"]
            m = choose(hyp, opts)  # exactly what the flow engine decides: the words first, then the scores
            text_ok += bool(m and m[0] == key)
            spotted = None if m else asr.spot(float_to_pcm16(call), 8000, opts, max_cost=float("inf"), margin=0)
            if spotted is not None:
                spots.append((spotted.cost, spotted.runner_up, spotted.key == key))
            got = m[0] if m else (spotted.key if spotted and _accept(spotted) else None)
            menu_n, menu_ok = menu_n + 1, menu_ok + (got == key)
            if got != key:
                misses.append({"ref": r["text"], "hyp": hyp, "menu": node, "want": key, "got": got,
                               "voice": r["voice"], "speed": r["speed"], "how": synth.describe(r)})
        elif r["kind"].split(":")[0] in ("free", "yesno"):
            # Not a menu answer: said at every menu, how often would the box pick an option from the scores?
            for opts in options.values():
                if choose(hyp, opts) is None:
                    other_n += 1
                    spotted = asr.spot(float_to_pcm16(call), 8000, opts, max_cost=float("inf"), margin=0)
                    if spotted is not None:
                        others.append((spotted.cost, spotted.runner_up))
        elif r["kind"] == "phone":
            digits = parse_digits(hyp)
            phone_n, phone_ok = phone_n + 1, phone_ok + (digits == r["ref"])
            if digits != r["ref"] and len(phone_misses) < 50:
                phone_misses.append({"ref": r["text"], "hyp": hyp, "digits": digits, "want": r["ref"],
                                     "how": synth.describe(r)})
        if len(samples) < 10:
            samples.append({"ref": r["text"], "hyp": hyp, "voice": r["voice"], "speed": r["speed"]})
    model = args.model_dir / "model.int8.onnx"
    report = {
        "date": dt.date.today().isoformat(), "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "engines": dict(collections.Counter(synth.engine_of(r["voice"]) for r in rows)),
        "kinds": dict(collections.Counter(r["kind"].split(":")[0] for r in rows)),
        "clips": len(rows), "audio_seconds": round(audio_s, 1), "load_seconds": round(load_s, 2),
        "cer": round(errs / max(chars, 1), 4),
        "cer_by_kind": {k: round(kind_errs[k] / max(n, 1), 4) for k, n in sorted(kind_chars.items())},
        "menu_intent_accuracy": round(menu_ok / menu_n, 4) if menu_n else None, "menu_clips": menu_n,
        "menu_intent_words_only": round(text_ok / menu_n, 4) if menu_n else None,
        "spotted": sum(_accept(sp) for sp in spots), "spotted_wrong": sum(_accept(sp) and not sp[2] for sp in spots),
        "non_answers_at_menus": other_n, "non_answers_chosen": sum(_accept(o) for o in others),
        "spot_max_cost": sherpa.SPOT_MAX_COST, "spot_margin": sherpa.SPOT_MARGIN,
        "phone_exact_accuracy": round(phone_ok / phone_n, 4) if phone_n else None, "phone_clips": phone_n,
        "rtf_one_thread": round(busy / audio_s, 4) if audio_s and busy else None,
        "model_bytes": model.stat().st_size, "samples": samples,
        "menu_misses": misses, "phone_misses": phone_misses,
    }
    if args.spot_sweep:
        _sweep(spots, others, menu_n, text_ok, other_n)
    print(json.dumps(report, ensure_ascii=False, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
