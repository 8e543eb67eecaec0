"""Store part: the blocklist and receptionists' abuse marks (decisions live in appliance.security)."""

from __future__ import annotations

from typing import Any


class BlocksMixin:
    _db: Any

    def add_block(self, pattern: str, reason: str, source: str, at: float, expires_at: float | None = None) -> int:
        with self._db.atomic():
            cur = self._db.execute_sql(
                'INSERT INTO "block" (pattern, reason, source, created_at, expires_at) VALUES (?, ?, ?, ?, ?)',
                (pattern, reason, source, at, expires_at))
        return int(cur.lastrowid)

    def remove_block(self, pattern: str, at: float) -> int:
        """Lift every active entry for exactly this pattern; returns how many were lifted."""
        with self._db.atomic():
            cur = self._db.execute_sql(
                'UPDATE "block" SET removed_at = ? WHERE pattern = ? AND removed_at IS NULL '
                "AND (expires_at IS NULL OR expires_at > ?)", (at, pattern, at))
        return int(cur.rowcount)

    def active_blocks(self, now: float) -> list[dict[str, Any]]:
        cur = self._db.execute_sql(
            'SELECT id, pattern, reason, source, created_at, expires_at FROM "block" WHERE removed_at IS NULL '
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY created_at", (now,))
        keys = ("id", "pattern", "reason", "source", "created_at", "expires_at")
        return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]

    def count_blocks(self, pattern: str, source: str) -> int:
        """How many blocks of this kind the pattern ever had (auto blocks escalate on repeat)."""
        cur = self._db.execute_sql('SELECT COUNT(*) FROM "block" WHERE pattern = ? AND source = ?',
                                   (pattern, source))
        return int(cur.fetchone()[0])

    def call_times_from(self, caller: str, since: float) -> list[float]:
        cur = self._db.execute_sql('SELECT started_at FROM "call" WHERE caller = ? AND started_at >= ?',
                                   (caller, since))
        return [row[0] for row in cur.fetchall()]

    def add_mark(self, number: str, call_id: int | None, at: float, kind: str) -> None:
        with self._db.atomic():
            self._db.execute_sql('INSERT INTO "abuse_mark" (number, call_id, at, kind) VALUES (?, ?, ?, ?)',
                                 (number, call_id, at, kind))

    def mark_times(self, number: str, kind: str, since: float) -> list[float]:
        cur = self._db.execute_sql('SELECT at FROM "abuse_mark" WHERE number = ? AND kind = ? AND at >= ?',
                                   (number, kind, since))
        return [row[0] for row in cur.fetchall()]

