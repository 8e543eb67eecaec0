"""Stage 4a: the acoustic model: conv subsampling + depthwise-separable conv blocks + a unidirectional GRU → CTC
over Russian letters. Input (N, 80, T) per_feature-normalised fbank and lengths (N,) int64; output (N, T_out, V)
log-probabilities, T_out = ceil(T / subsampling) ≥ T // subsampling (what sherpa assumes).

The graph really uses the lengths: frames past each utterance's length are zeroed after every layer, and the
GRU runs left to right, so a padded stream (sherpa pads a batch with -23.03) decodes exactly like the same
stream alone. No bidirectional layer for that reason (the issue's pitfall); the conv blocks give lookahead.
"""

from __future__ import annotations

import torch
from torch import nn

BLANK, SPACE = "<blk>", "▁"
LETTERS = "абвгдежзийклмнопрстуфхцчшщъыьэюя"  # ё is written е (vocab.normalise)
TOKENS = [BLANK, SPACE, *LETTERS]


def encode(text: str) -> list[int]:
    idx = {c: i for i, c in enumerate(TOKENS)}
    return [idx[SPACE] if c == " " else idx[c] for c in text if c == " " or c in idx]


def decode(ids: list[int]) -> str:
    out, prev = [], -1
    for k in ids:
        if k != prev and k != 0:
            out.append(" " if TOKENS[k] == SPACE else TOKENS[k])
        prev = k
    return " ".join("".join(out).split())


def write_tokens(path) -> None:  # noqa: ANN001
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(TOKENS):
            f.write(f"{t} {i}\n")


class Block(nn.Module):
    def __init__(self, dim: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.pw = nn.Conv1d(dim, dim, 1)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (x + self.drop(self.act(self.pw(self.dw(x))))) * mask


class CtcModel(nn.Module):
    def __init__(self, vocab: int = len(TOKENS), feat: int = 80, dim: int = 256, hidden: int = 320,
                 gru_layers: int = 2, blocks: int = 3, kernel: int = 7, subsampling: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        assert subsampling in (1, 2, 4)
        self.config = dict(vocab=vocab, feat=feat, dim=dim, hidden=hidden, gru_layers=gru_layers, blocks=blocks,
                           kernel=kernel, subsampling=subsampling, dropout=dropout)
        self.subsampling = subsampling
        self.strides = (2 if subsampling >= 2 else 1, 2 if subsampling == 4 else 1)
        self.sub = nn.ModuleList([nn.Conv1d(feat, dim, 5, stride=self.strides[0], padding=2),
                                  nn.Conv1d(dim, dim, 5, stride=self.strides[1], padding=2)])
        self.blocks = nn.ModuleList(Block(dim, kernel, dropout) for _ in range(blocks))
        self.gru = nn.GRU(dim, hidden, gru_layers, batch_first=True, dropout=dropout if gru_layers > 1 else 0.0)
        self.out = nn.Linear(hidden, vocab)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        s = self.subsampling
        return torch.div(lengths + s - 1, s, rounding_mode="floor")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lens = lengths
        mask = (torch.arange(x.shape[2], device=x.device)[None, :] < lens[:, None]).to(x.dtype)[:, None, :]
        x = x * mask
        for conv, stride in zip(self.sub, self.strides, strict=True):  # mask after each layer: no leaks
            x = torch.relu(conv(x))
            lens = torch.div(lens + stride - 1, stride, rounding_mode="floor")
            mask = (torch.arange(x.shape[2], device=x.device)[None, :] < lens[:, None]).to(x.dtype)[:, None, :]
            x = x * mask
        for b in self.blocks:
            x = b(x, mask)
        y, _ = self.gru(x.transpose(1, 2))
        return torch.log_softmax(self.out(y), dim=-1)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
