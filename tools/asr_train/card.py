"""Stage 7: the model card, written from the run's own records (clips, train.log, export.json, eval.json,
eval_festival.json), so every figure in ``models/ru-commands/MODEL_CARD.md`` comes from the files of the run that
built the model.

    python -m tools.asr_train.card --work build/asr_train/full --out models/ru-commands/MODEL_CARD.md

``--section festival --eval eval_festival.json --card MODEL_CARD.md`` rewrites only the card's marked section on
the Festival voice (inserted before **Limits** if the card has none yet) from an evaluation of the model the card
describes (its sha256 must be the card's): how ``train.sh --festival-eval`` measures the committed model on a
synthesiser it never heard without retraining it.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import hashlib
import json
import re
import subprocess
import textwrap
from pathlib import Path

import onnx


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _espeak_version() -> str:
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "espeak-ng"
    return " ".join(out.split()[:4])


def _festival_version() -> str:
    try:
        out = subprocess.run(["festival", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "Festival"
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)", out)
    return f"Festival {m.group(1)}" if m else "Festival"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


FRESH = "fresh renderings (seeds 2–4 of the held-out voices/speed, not used to set the spotting thresholds): "


def _menu_line(ev: dict, where: str) -> str:
    """Menu intent as the engine decides it: the words first, then the phrases spotted in the model's scores."""
    if not ev.get("menu_clips"):
        return ""
    line = f"  - {where}menu intent {_pct(ev['menu_intent_accuracy'])} ({ev['menu_clips']} clips; target ≥ 95 %)"
    if ev.get("menu_intent_words_only") is None:
        return line + "\n"
    return (f"{line}: {_pct(ev['menu_intent_words_only'])} from the words alone, {ev['spotted']} more spotted in "
            f"the scores ({ev['spotted_wrong']} to a wrong option; max cost {ev['spot_max_cost']}, margin "
            f"{ev['spot_margin']}); free phrases and yes/no said at a menu: {ev['non_answers_chosen']} of "
            f"{ev['non_answers_at_menus']} sent to an option\n")


def _misses(ev: dict) -> str:
    rows = ev.get("menu_misses") or []
    if not rows:
        return ""
    lines = [f"  - {m['menu']}: «{m['ref']}» heard «{m['hyp']}» → {m['got'] or 'asked again'} (want {m['want']}; "
             f"{m.get('how') or str(m['voice']) + ', ' + str(m['speed']) + ' wpm'})" for m in rows]
    return "- **Menu answers missed** (held out):\n" + "\n".join(lines) + "\n"


FESTIVAL_BEGIN = "<!-- festival-eval: written by tools/asr_train/card.py from eval_festival.json, not by hand -->"
FESTIVAL_END = "<!-- /festival-eval -->"


def festival_section(ev: dict, trained: bool, rerun: str) -> str:
    """The card's section on the Festival voice (msu_ru_nsh), from evaluate.py's report on its clips."""
    if not ev.get("clips"):
        return ""
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(ev.get("kinds", {}).items(), key=lambda kv: -kv[1]))
    how = ("in this model's training data at tempo 85–116 % and ±3 semitones; these clips at the held-out 125 % "
           "tempo or ±5 semitones" if trained else
           "never in this model's training data: each held-out phrase once, in the voice's own tempo and pitch")
    by_kind = ", ".join(f"{k} {_pct(v)}" for k, v in (ev.get("cer_by_kind") or {}).items())
    out = [f"- **Held-out synthesiser: Festival** ({_festival_version()} with Debian's festvox-ru voice "
           f"msu_ru_nsh_clunits, unit selection from recordings of one male speaker; {how}). Evaluated "
           f"{ev.get('date', '?')} on `model.int8.onnx` sha256 `{ev.get('model_sha256', '?')[:16]}…` over the "
           f"held-out phrases ({kinds}), each fed as an 8 kHz µ-law call through `sherpa.load_asr` as above:"]
    menu = _menu_line(ev, "").rstrip("\n")
    if menu:
        out.append(menu)
    if ev.get("phone_clips"):
        out.append(f"  - exact 11-digit phone number {_pct(ev['phone_exact_accuracy'])} ({ev['phone_clips']} clips; "
                   "target ≥ 90 %)")
    out.append(f"  - CER {_pct(ev['cer'])} over {ev['clips']} clips ({ev['audio_seconds']:.0f} s of audio)"
               + (f"; by kind: {by_kind}" if by_kind else ""))
    misses = ev.get("menu_misses") or []
    if misses:
        out.append(f"  - menu answers missed ({len(misses)}; the first 5): " + "; ".join(
            f"«{m['ref']}» heard «{m['hyp']}» → {m['got'] or 'asked again'} (want {m['want']})" for m in misses[:5]))
    phones = ev.get("phone_misses") or []
    if phones:
        out.append("  - phone numbers missed (the first 3): " + "; ".join(
            f"«{m['ref']}» heard «{m['hyp']}»" for m in phones[:3]))
    below = [name for name, value, target in (("menu intent", ev.get("menu_intent_accuracy"), 0.95),
                                               ("phone numbers", ev.get("phone_exact_accuracy"), 0.90))
             if value is not None and value < target]
    if below:
        out.append(f"  - **Below target ({', '.join(below)})**: the held-out espeak-ng figures above do not carry "
                   "over to this voice" + ("" if trained else ": trained on espeak-ng alone, the model does not "
                                            "generalise to a voice cut from recorded speech. `train.sh --full` now "
                                            "trains on Festival too (`synth --engines espeak,festival=0.25`)") + ".")
    out.append(f"  - rerun: `{rerun}`")
    wrapped = [textwrap.fill(line, width=116, subsequent_indent=" " * (len(line) - len(line.lstrip(" -"))),
                             break_long_words=False, break_on_hyphens=False) for line in out]
    return "\n".join([FESTIVAL_BEGIN, *wrapped, FESTIVAL_END]) + "\n"


def update_section(card: str, ev: dict, rerun: str) -> str:
    """``card`` with its Festival section written anew from ``ev`` (an evaluation of the model the card names)."""
    m = re.search(r"`model\.int8\.onnx` sha256 `([0-9a-f]{64})`", card)
    if not m or m.group(1) != ev.get("model_sha256"):
        raise SystemExit(f"card: the evaluation is of model {ev.get('model_sha256')}, the card names "
                         f"{m.group(1) if m else 'none'}")
    data = re.search(r"- \*\*Data\*\*.*?(?=\n- \*\*)", card, re.S)  # the voices the model was trained on
    section = festival_section(ev, bool(data and "msu_ru_nsh" in data.group(0)), rerun)
    if FESTIVAL_BEGIN in card and FESTIVAL_END in card:
        head, rest = card.split(FESTIVAL_BEGIN, 1)
        return head + section + rest.split(FESTIVAL_END, 1)[1].lstrip("\n")
    at = card.find("\n- **Limits**")
    return card + section if at < 0 else card[: at + 1] + section + card[at + 1:]


def render(work: Path, note: str = "") -> str:
    clips = [json.loads(x) for x in (work / "clips" / "clips.jsonl").read_text(encoding="utf-8").splitlines() if x]
    train = [c for c in clips if c["split"] == "train"]
    test = [c for c in clips if c["split"] == "test"]
    phrases = {c["text"] for c in clips}
    kinds = collections.Counter(c["kind"].split(":")[0] for c in train)
    hours = sum(c["seconds"] for c in train) / 3600
    epochs, wall_s, stages = 0, 0.0, []
    # train.sh --full: A (run) from scratch, then B (run2) and C (run3) on from it; a run continued by hand adds
    # its extra stages as run<N><letter> directories, counted in name order
    for stage in sorted(d.name for d in work.iterdir() if re.fullmatch(r"run\d*[a-z]?", d.name)):
        path = work / stage / "train.log"
        if path.is_file():
            lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.startswith("epoch ")]
            epochs += len(lines)
            wall_s += float(re.search(r"(\d+)s$", lines[-1]).group(1)) if lines else 0.0
            stages.append(f"{stage}: {lines[-1]}" if lines else f"{stage}: no epoch")
    wall_h = wall_s / 3600
    exp = json.loads((work / "export" / "export.json").read_text(encoding="utf-8"))
    ev = json.loads((work / "eval.json").read_text(encoding="utf-8"))
    fresh_path = work / "eval_fresh.json"
    fresh = json.loads(fresh_path.read_text(encoding="utf-8")) if fresh_path.is_file() else {}
    fest_path = work / "eval_festival.json"
    fest = json.loads(fest_path.read_text(encoding="utf-8")) if fest_path.is_file() else {}
    model = work / "export" / "model.int8.onnx"
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    voices = sorted({c["voice"] for c in train})
    trained_festival = any(v.startswith("festival:") for v in voices)
    espeak_voices = [v for v in voices if not v.startswith("festival:")]
    fest_voices = "speeds 125–195 wpm, pitches 25–75" + (
        f";\n  {_festival_version()} with festvox-ru's msu_ru_nsh_clunits, tempo 85–116 %, pitch −3…+3 semitones.\n"
        "  No recorded speech but the units festvox-ru's voice is cut from (one male speaker)."
        if trained_festival else ".\n  No recorded human speech.")
    family = "two synthesisers (espeak-ng, Festival)" if trained_festival else "one synthetic voice family (espeak-ng)"
    fest_license = (", Festival and festvox-ru (free software; their output is not covered)" if trained_festival
                    else "")
    held = sorted({c["voice"] for c in test} - set(voices))
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    kind_list = ", ".join(f"{k} {n}" for k, n in kinds.most_common())
    return f"""# ru-commands: the box's own Russian command recogniser

- **What**: CTC over Russian letters for the clinic's spoken menu answers, yes/no and phone numbers;
  sherpa-onnx NeMo CTC layout (`family: nemo_ctc`), int8. Not a general recogniser.
- **Built**: {meta.get("built", dt.date.today().isoformat())}, commit {rev or "?"}, `tools/asr_train/train.sh`
  (work dir `{work.name}`; {epochs} epochs, {wall_h:.1f} h wall on the 2-core build machine, one training thread
  plus one augmenting process; last epoch of each stage: {"; ".join(stages)}).{(" " + note) if note else ""}
- **Architecture**: conv subsampling ×{meta.get("subsampling_factor")}, depthwise-separable conv blocks, a
  unidirectional GRU, {meta.get("vocab_size")} tokens; {int(meta.get("params", 0)):,} parameters;
  `model.int8.onnx` {exp["int8_bytes"] / 2 ** 20:.1f} MB (fp32 {exp["fp32_bytes"] / 2 ** 20:.1f} MB).
- **Files**: `model.int8.onnx` sha256 `{_sha256(model)}`, `tokens.txt` sha256
  `{_sha256(work / "export" / "tokens.txt")}` (also pinned in `models/manifest.yaml`).
- **Input**: 16 kHz (8 kHz calls resampled by sherpa), 80 log-mel fbank, per_feature normalisation.
- **Data**: synthetic only: {len(phrases):,} phrases from `ivr_flows/` and `tools/asr_train/vocab.py` →
  {len(train):,} training clips ({hours:.1f} h; by kind: {kind_list}) and {len(test):,} held-out clips.
  Voices: {_espeak_version()}, training voices {", ".join(espeak_voices)}; {fest_voices}
- **Augmentation** (on the fly): a 0–0.7 s pause of faint line before and after the words (the VAD's cut),
  speed ±15 %, room echo, white/pink/babble/hum noise 5–30 dB SNR, 300–3400 Hz
  band-pass, G.711 µ-law/A-law, gain/clipping.
- **Evaluation** (`tools/asr_train/evaluate.py`; held out: voices {", ".join(held) or "none"} and 210 wpm; each clip
  fed as an 8 kHz µ-law call through the box's own `sherpa.load_asr`, scored as the flow engine decides):
{_menu_line(ev, "")}{_menu_line(fresh, FRESH)}  - exact 11-digit phone number {_pct(ev["phone_exact_accuracy"])} \
({ev["phone_clips"]} clips; target ≥ 90 %)
  - CER {_pct(ev["cer"])} over {ev["clips"]} clips ({ev["audio_seconds"]:.0f} s of audio)
  - real-time factor {ev["rtf_one_thread"]} on one core (target ≤ 0.05), load {ev["load_seconds"]} s
  - export checks: PyTorch vs onnxruntime max |Δ log-prob| {exp.get("torch_vs_onnx_fp32_max_abs", "n/a")};
    sherpa vs our features: {exp.get("sherpa_vs_features_int8", {}).get("same_tokens", "n/a")} of
    {exp.get("sherpa_vs_features_int8", {}).get("clips", "n/a")} clips decode to the same tokens (int8)
{_misses(ev)}{festival_section(fest, trained_festival, "tools/asr_train/train.sh --full")}\
- **Limits**: trained on {family}: real callers (accents, elderly voices,
  noisy lines) will do worse than these figures; words outside the vocabulary come out as letter strings. The flow
  engine matches transcripts to the active menu's keywords with a spelling tolerance (`flow/keywords.choose`);
  when the words name no option the box aligns the menu's phrases against the model's scores
  (`speech/ctc.spot`), which absorbs most letter slips. Re-train when flows gain keywords. Production boxes
  should fetch `t-one-ru`.
- **License**: Proprietary (the project's); training data generated by espeak-ng (GPL-3.0 program; its output
  is not covered){fest_license}, no third-party weights.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, help="the run's directory (clips/, run/, export/, eval.json)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--note", default="", help="a sentence on how this run differed from train.sh, if it did")
    ap.add_argument("--section", choices=["festival"], help="rewrite only this section of --card from --eval")
    ap.add_argument("--eval", type=Path, help="with --section: the evaluation (evaluate.py --engine festival)")
    ap.add_argument("--card", type=Path, help="with --section: the card to update in place")
    ap.add_argument("--rerun", default="tools/asr_train/train.sh --festival-eval",
                    help="with --section: the command the section names to measure it again")
    args = ap.parse_args(argv)
    if args.section:
        if not (args.eval and args.card):
            ap.error("--section needs --eval and --card")
        ev = json.loads(args.eval.read_text(encoding="utf-8"))
        args.card.write_text(update_section(args.card.read_text(encoding="utf-8"), ev, args.rerun), encoding="utf-8")
        print(f"card: {args.section} section of {args.card}")
        return 0
    if not (args.work and args.out):
        ap.error("--work and --out are required")
    args.out.write_text(render(args.work, args.note), encoding="utf-8")
    print(f"card: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
