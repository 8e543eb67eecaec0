"""Stage 1: the phrases the box must understand, as normalised text (lower case, ё → е, а–я and spaces).

Sources: every menu keyword and label of ivr_flows/*.yaml, menu keys said as words ("цифру три"), yes/no and
their variants, phone numbers as Russians dictate them (in groups: "восемь девятьсот шестнадцать ..."), dates of
birth, times, and short free phrases. Deterministic for a given seed.

    python -m tools.asr_train.vocab --flows ivr_flows --out phrases.jsonl [--numbers 400]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import yaml

from appliance.speech.numbers_ru import parse_digits

UNITS = ["ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"]
TEENS = ["десять", "одиннадцать", "двенадцать", "тринадцать", "четырнадцать", "пятнадцать", "шестнадцать",
         "семнадцать", "восемнадцать", "девятнадцать"]
TENS = ["", "", "двадцать", "тридцать", "сорок", "пятьдесят", "шестьдесят", "семьдесят", "восемьдесят",
        "девяносто"]
HUNDREDS = ["", "сто", "двести", "триста", "четыреста", "пятьсот", "шестьсот", "семьсот", "восемьсот",
            "девятьсот"]
MONTHS = ["января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября", "октября",
          "ноября", "декабря"]
ORD_GEN = ["", "первого", "второго", "третьего", "четвертого", "пятого", "шестого", "седьмого", "восьмого",
           "девятого", "десятого", "одиннадцатого", "двенадцатого", "тринадцатого", "четырнадцатого",
           "пятнадцатого", "шестнадцатого", "семнадцатого", "восемнадцатого", "девятнадцатого", "двадцатого"]
ORD_TENS_GEN = {20: "двадцатого", 30: "тридцатого"}
YEAR_ORD = ["", "первого", "второго", "третьего", "четвертого", "пятого", "шестого", "седьмого", "восьмого",
            "девятого"]
YEAR_TENS_ORD = {10: "десятого", 20: "двадцатого", 30: "тридцатого", 40: "сорокового", 50: "пятидесятого",
                 60: "шестидесятого", 70: "семидесятого", 80: "восьмидесятого", 90: "девяностого"}

YES_NO = ["да", "нет", "да да", "нет нет", "конечно", "верно", "правильно", "все верно", "да верно", "да правильно",
          "именно", "точно", "ага", "угу", "хорошо", "ладно", "согласен", "согласна", "подтверждаю", "неверно",
          "неправильно", "нет неправильно", "не надо", "не нужно", "отмена", "отменить", "нет спасибо",
          "да пожалуйста", "давайте", "не знаю", "повторите пожалуйста", "еще раз", "не расслышал", "не понял"]
FREE = ["я хочу записаться к терапевту", "вызвать врача на дом", "запишите меня к врачу", "мне нужен терапевт",
        "хочу записаться на прием", "записаться к педиатру", "запись к врачу", "нужен врач на дом",
        "можно вызвать доктора", "мне нужен больничный", "закрыть больничный", "продлить больничный лист",
        "хочу сделать прививку", "прививка от гриппа", "сдать анализ крови", "как подготовиться к узи",
        "анализ мочи", "сколько стоит прием", "у меня полис омс", "у меня дмс", "платные услуги",
        "соедините с оператором", "соедините с регистратурой", "живой человек", "позовите администратора",
        "когда работает поликлиника", "режим работы", "перезвоните мне", "обратный звонок", "главное меню",
        "назад", "повторите", "я не понял", "мой номер", "запишите мой номер", "до свидания", "спасибо",
        "спасибо все", "это все", "доктор на дом", "вызов врача на дом", "стоимость", "о эм эс", "дэ эм эс"]
KEY_WORDS = {"1": ["один", "первый", "цифру один"], "2": ["два", "второй", "цифру два"],
             "3": ["три", "третий", "цифру три"], "4": ["четыре", "четвертый"], "5": ["пять", "пятый"],
             "6": ["шесть", "шестой"], "7": ["семь"], "8": ["восемь"], "9": ["девять", "девятый"],
             "0": ["ноль", "нуль", "цифру ноль"], "*": ["звездочка", "звездочку"], "#": ["решетка", "решетку"]}
FILLERS = ["", "", "", "мне ", "я хочу ", "пожалуйста ", "ну ", "а ", "мне нужно ", "можно "]

_NOT_LETTER = re.compile(r"[^а-я ]+")


def normalise(text: str) -> str:
    """Lower case, ё → е, letters а–я and single spaces only (the model's alphabet)."""
    t = text.lower().replace("ё", "е").replace("-", " ").replace("/", " ")
    return " ".join(_NOT_LETTER.sub(" ", t).split())


def number_words(n: int) -> str:
    """0..999 as a Russian cardinal ("девятьсот шестнадцать")."""
    if n < 10:
        return UNITS[n]
    parts = []
    h, rest = divmod(n, 100)
    if h:
        parts.append(HUNDREDS[h])
    if 10 <= rest < 20:
        parts.append(TEENS[rest - 10])
    else:
        t, u = divmod(rest, 10)
        if t:
            parts.append(TENS[t])
        if u or not parts:
            parts.append(UNITS[u])
    return " ".join(parts)


def say_group(digits: str, rng: random.Random) -> str:
    """A digit group as people say it: "916" → "девятьсот шестнадцать"; leading zeros digit by digit."""
    if rng.random() < 0.15 or len(digits) == 1:
        return " ".join(UNITS[int(d)] for d in digits)
    lead = len(digits) - len(digits.lstrip("0"))
    if lead == len(digits):
        return "два нуля" if len(digits) == 2 and rng.random() < 0.5 else " ".join(["ноль"] * len(digits))
    head = " ".join(["ноль"] * lead)
    return (head + " " if head else "") + number_words(int(digits[lead:]))


def phone_number(rng: random.Random) -> tuple[str, str]:
    """(spoken text, digits) of an 11-digit Russian mobile or landline number."""
    first = rng.choice(["8", "8", "8", "7"])
    code = rng.choice(["9" + f"{rng.randrange(100):02d}", "495", "499", "812", "9" + f"{rng.randrange(100):02d}"])
    rest = f"{rng.randrange(10 ** 7):07d}"
    digits = first + code + rest
    groups = [rest[:3], rest[3:5], rest[5:]] if rng.random() < 0.8 else [rest[:2], rest[2:4], rest[4:]]
    head = "плюс семь" if first == "7" and rng.random() < 0.6 else UNITS[int(first)]
    words = [head, say_group(code, rng)] + [say_group(g, rng) for g in groups]
    return " ".join(words), digits


def date_of_birth(rng: random.Random) -> str:
    day, month, year = rng.randint(1, 28), rng.randrange(12), rng.randint(1930, 2024)
    d = ORD_GEN[day] if day <= 20 else f"{ORD_TENS_GEN[20]} {ORD_GEN[day - 20]}"
    if year >= 2000:
        y = "двухтысячного" if year == 2000 else f"две тысячи {_year_tail(year - 2000)}"
    else:
        y = f"тысяча девятьсот {_year_tail(year - 1900)}"
    return f"{d} {MONTHS[month]} {y}" + (" года" if rng.random() < 0.5 else "")


def _year_tail(n: int) -> str:
    if n < 10:
        return YEAR_ORD[n]
    if n < 20:
        return ORD_GEN[n] if n <= 20 else ""
    t, u = divmod(n, 10)
    return YEAR_TENS_ORD[t * 10] if not u else f"{TENS[t]} {YEAR_ORD[u]}"


def time_of_day(rng: random.Random) -> str:
    h, m = rng.randint(8, 19), rng.choice([0, 0, 15, 30, 45])
    hours = number_words(h)
    return f"в {hours}" + ("" if not m else f" {number_words(m)}") + (" часов" if rng.random() < 0.3 else "")


def flow_phrases(flows_dir: Path) -> list[tuple[str, str]]:
    """(text, "menu:<flow>:<node>:<key>") for every keyword and label of the shipped Russian flows."""
    out = []
    for path in sorted(Path(flows_dir).glob("*.yaml")):
        flow = yaml.safe_load(path.read_text(encoding="utf-8"))
        if flow.get("language") != "ru":
            continue
        for node_id, node in (flow.get("nodes") or {}).items():
            for key, opt in (node.get("options") or {}).items():
                for phrase in [opt.get("label", "")] + list(opt.get("keywords") or []):
                    text = normalise(str(phrase))
                    if text:
                        out.append((text, f"menu:{path.stem}:{node_id}:{key}"))
    return out


def phrases(flows_dir: Path, *, numbers: int = 400, seed: int = 1) -> list[dict]:
    """All training phrases: {"text", "kind", "ref"} (ref: the menu key or the digits, for the evaluation)."""
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    out: list[dict] = []

    def add(text: str, kind: str, ref: str = "") -> None:
        text = normalise(text)
        if text and (text, kind) not in seen:
            seen.add((text, kind))
            out.append({"text": text, "kind": kind, "ref": ref})

    for text, tag in flow_phrases(flows_dir):
        add(text, tag, tag.rsplit(":", 1)[1])
        add(rng.choice(FILLERS[3:]) + text, tag, tag.rsplit(":", 1)[1])
    for key, variants in KEY_WORDS.items():
        for v in variants:
            add(v, "key", key)
    for t in YES_NO:
        add(t, "yesno")
    for t in FREE:
        add(t, "free")
    made = 0
    while made < numbers:  # keep only numbers the box's own parser reads back (no "девяносто" + "восемь" merge)
        text, digits = phone_number(rng)
        if parse_digits(text) == digits:
            add(text, "phone", digits)
            made += 1
    for _ in range(max(numbers // 4, 1)):
        add(date_of_birth(rng), "date")
        add(time_of_day(rng), "time")
    for n in range(0, 1000, 1 if numbers >= 400 else 37):  # every group a caller can say
        add(number_words(n), "number", str(n))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=Path, default=Path("ivr_flows"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--numbers", type=int, default=400, help="phone numbers to generate")
    ap.add_argument("--limit", type=int, default=0, help="keep at most N phrases (smoke runs)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    items = phrases(args.flows, numbers=args.numbers, seed=args.seed)
    if args.limit:
        random.Random(args.seed).shuffle(items)
        items = items[: args.limit]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    print(f"vocab: {len(items)} phrases -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
