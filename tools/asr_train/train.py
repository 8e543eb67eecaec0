"""Stage 4b: CTC training on the synthetic clips, augmented on the fly, on exactly sherpa's features.

One thread (torch.set_num_threads(1)): the build machine's 2 cores are shared. Run under ``nice -n 19``.

    python -m tools.asr_train.train --clips clips/ --out run/ [--epochs 30] [--size full|smoke] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from tools.asr_train import features as F
from tools.asr_train import synth
from tools.asr_train.model import TOKENS, CtcModel, decode, encode, n_params

SIZES = {  # the full model stays well under the 5 M parameters
    "full": dict(dim=256, hidden=320, gru_layers=2, blocks=3, kernel=7, subsampling=2),
    "smoke": dict(dim=64, hidden=96, gru_layers=1, blocks=1, kernel=5, subsampling=2),
}


def load_clips(clips_dir: Path, split: str, limit: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in (clips_dir / "clips.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["split"] == split]
    if limit:
        random.Random(0).shuffle(rows)
        rows = rows[:limit]
    for r in rows:
        r["audio"], _ = synth.read_wav(clips_dir / "wav" / r["path"])
    return rows


def remix(rows: list[dict], mix: str, rng: random.Random) -> list[dict]:
    """Rebalance the training clips by kind (``menu``, ``phone``, ...): the synthetic set is mostly phone
    numbers and numbers, so short menu answers are rare unless repeated. ``mix`` is 'kind=factor,...'."""
    factors = synth.by_kind(mix)
    out = []
    for r in rows:
        f = factors.get(r["kind"].split(":")[0], 1.0)
        whole, part = int(f), f - int(f)
        out += [r] * whole + ([r] if rng.random() < part else [])
    return out


def batches(rows: list[dict], batch_frames: int, rng: random.Random) -> list[list[dict]]:
    """Length-sorted buckets of about ``batch_frames`` feature frames each, in random order."""
    rows = sorted(rows, key=lambda r: len(r["audio"]) + rng.random())
    out, cur, frames = [], [], 0
    for r in rows:
        n = len(r["audio"]) // 160 + 1
        if cur and (frames + n > batch_frames):
            out.append(cur)
            cur, frames = [], 0
        cur.append(r)
        frames += n
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def collate(items: list[tuple[np.ndarray, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    feats = [F.features(a) for a, _ in items]
    t = max(len(f) for f in feats)
    x = np.zeros((len(feats), F.DIM, t), np.float32)
    for i, f in enumerate(feats):
        x[i, :, : len(f)] = f.T
    labels = [encode(text) for _, text in items]
    y = torch.tensor([k for lab in labels for k in lab], dtype=torch.long)
    return (torch.from_numpy(x), torch.tensor([len(f) for f in feats], dtype=torch.long), y,
            torch.tensor([len(lab) for lab in labels], dtype=torch.long))


class Batches(torch.utils.data.Dataset):
    """One epoch's batches, augmented and turned into features in a worker process: on 2 cores the augmentation
    (as costly as the training step) then runs beside the model instead of before it."""

    def __init__(self, batches: list[list[dict]], pool: list[np.ndarray], strength: float, seed: int) -> None:
        self.batches, self.pool, self.strength, self.seed = batches, pool, strength, seed

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng((self.seed, i))
        return collate([(synth.augment(r["audio"], rng, self.pool, self.strength), r["text"]) for r in self.batches[i]])


def one_cycle(progress: float, peak: float, warm: float = 0.15) -> float:
    """OneCycle's cosine shape over a fraction of the run (steps or wall time): up from peak/25, down to ~0."""
    if progress < warm:
        return peak / 25 + (peak - peak / 25) * (1 - math.cos(math.pi * progress / warm)) / 2
    p = min((progress - warm) / (1 - warm), 1.0)
    return peak / 1e4 + (peak - peak / 1e4) * (1 + math.cos(math.pi * p)) / 2


def cer(ref: str, hyp: str) -> tuple[int, int]:
    d = list(range(len(hyp) + 1))
    for i, a in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, b in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (a != b))
    return d[len(hyp)], len(ref)


@torch.no_grad()
def evaluate(model: CtcModel, rows: list[dict]) -> dict:
    model.eval()
    errs = total = exact = 0
    for r in rows:
        f = F.features(r["audio"])
        out = model(torch.from_numpy(f.T[None].copy()), torch.tensor([len(f)]))
        hyp = decode(out[0].argmax(-1).tolist())
        e, n = cer(r["text"], hyp)
        errs, total, exact = errs + e, total + n, exact + (hyp == r["text"])
    model.train()
    return {"cer": errs / max(total, 1), "exact": exact / max(len(rows), 1), "n": len(rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after N optimiser steps (smoke runs)")
    ap.add_argument("--limit", type=int, default=0, help="use at most N training clips")
    ap.add_argument("--batch-frames", type=int, default=6000, help="feature frames per batch")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--augment", type=float, default=1.0, help="augmentation strength (0: clean clips)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="processes that augment the next batches (0: inline)")
    ap.add_argument("--minutes", type=float, default=0, help="a wall-time budget: the LR schedule follows the "
                    "clock and training stops when it is spent (for a run that must end by a given time)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--init", type=Path, help="start from this checkpoint's weights (a fine-tuning run)")
    ap.add_argument("--mix", default="", help="training mix by clip kind, e.g. 'menu=6,yesno=6,key=6,phone=0.3': "
                    "repeat (>1) or keep a random fraction (<1) of the clips of each kind")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    train_rows = load_clips(args.clips, "train", args.limit)
    test_rows = load_clips(args.clips, "test", max(args.limit // 3, 0) if args.limit else 0)
    pool = [r["audio"] for r in train_rows[:200]]  # babble sources
    train_rows = remix(train_rows, args.mix, random.Random(args.seed))
    model = CtcModel(**SIZES[args.size])
    if args.init:
        init = torch.load(args.init, weights_only=False)
        model = CtcModel(**init["config"])
        model.load_state_dict(init["state"])
        print(f"init: {args.init} (epoch {init.get('epoch')}, test {init.get('test')})")
    print(f"train: {len(train_rows)} clips, test: {len(test_rows)}; model {args.size}, {n_params(model)} parameters")
    steps_per_epoch = len(batches(train_rows, args.batch_frames, random.Random(0)))
    total = args.epochs * steps_per_epoch if not args.max_steps else min(args.max_steps, args.epochs * steps_per_epoch)
    budget = args.minutes * 60
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "train.log", "a", encoding="utf-8")
    step, t0, best = 0, time.time(), math.inf

    def spent() -> bool:
        return step >= total or (budget and time.time() - t0 >= budget)

    for epoch in range(args.epochs):
        losses = []
        data = Batches(batches(train_rows, args.batch_frames, rng), pool, args.augment, args.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=args.workers,
                                             prefetch_factor=4 if args.workers else None)
        for x, lx, y, ly in loader:
            if spent():
                break
            progress = (time.time() - t0) / budget if budget else step / max(total, 1)
            for g in opt.param_groups:
                g["lr"] = one_cycle(progress, args.lr)
            logp = model(x, lx)
            loss = ctc(logp.transpose(0, 1), y, model.out_lengths(lx), ly)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            losses.append(loss.item())
        ev = evaluate(model, test_rows) if test_rows else {"cer": float("nan"), "exact": float("nan"), "n": 0}
        line = (f"epoch {epoch + 1} step {step} loss {np.mean(losses) if losses else float('nan'):.3f} "
                f"test CER {ev['cer']:.3f} exact {ev['exact']:.3f} ({ev['n']}) {time.time() - t0:.0f}s")
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()
        ckpt = {"config": model.config, "tokens": TOKENS, "state": model.state_dict(), "epoch": epoch + 1,
                "step": step, "test": ev, "params": n_params(model)}
        torch.save(ckpt, args.out / "last.pt")
        if not ev["cer"] >= best:  # nan (no test set) counts as better
            best = ev["cer"]
            torch.save(ckpt, args.out / "best.pt")
        if spent():
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
