"""Store part: call recordings, their legal holds and deletions (decisions live in appliance.recordings)."""

from __future__ import annotations

from typing import Any

_HELD = 'EXISTS (SELECT 1 FROM "recording_hold" h WHERE h.call_id = {call}.id AND h.released_at IS NULL)'
_HELD_CALL = _HELD.format(call='"call"')


class RecordingsMixin:
    _db: Any

    # --- legal holds ----------------------------------------------------------------------------------

    def hold_recording(self, call_id: int, reason: str, at: float) -> int:
        """Put the call's recording on legal hold: retention and the disk quota never delete it."""
        with self._db.atomic():
            found = self._db.execute_sql('SELECT 1 FROM "call" WHERE id = ?', (call_id,)).fetchone()
            if found is None:
                from appliance.errors import StoreError

                raise StoreError(f"no call with id {call_id}; `registratura calls` lists them", code="E410")
            cur = self._db.execute_sql('INSERT INTO "recording_hold" (call_id, reason, at) VALUES (?, ?, ?)',
                                       (call_id, reason, float(at)))
            self._db.execute_sql('INSERT INTO "call_event" (call_id, at, kind, detail) VALUES (?, ?, ?, ?)',
                                 (call_id, float(at), "recording", f"legal hold: {reason}"))
        return int(cur.lastrowid)

    def release_recording(self, call_id: int, at: float, reason: str = "") -> int:
        """Lift every active hold on the call; returns how many were lifted (0: it was not held)."""
        with self._db.atomic():
            cur = self._db.execute_sql(
                'UPDATE "recording_hold" SET released_at = ? WHERE call_id = ? AND released_at IS NULL',
                (float(at), call_id))
            if cur.rowcount:
                self._db.execute_sql('INSERT INTO "call_event" (call_id, at, kind, detail) VALUES (?, ?, ?, ?)',
                                     (call_id, float(at), "recording", "hold released" + (f": {reason}" if reason
                                                                                           else "")))
        return int(cur.rowcount)

    def is_held(self, call_id: int) -> bool:
        cur = self._db.execute_sql('SELECT 1 FROM "recording_hold" WHERE call_id = ? AND released_at IS NULL '
                                   "LIMIT 1", (call_id,))
        return cur.fetchone() is not None

    def holds(self, call_id: int | None = None, active_only: bool = True) -> list[dict[str, Any]]:
        sql = 'SELECT id, call_id, reason, at, released_at FROM "recording_hold"'
        where, args = [], []
        if call_id is not None:
            where.append("call_id = ?")
            args.append(call_id)
        if active_only:
            where.append("released_at IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        cur = self._db.execute_sql(sql + " ORDER BY at, id", tuple(args))
        keys = ("id", "call_id", "reason", "at", "released_at")
        return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]

    # --- recordings -----------------------------------------------------------------------------------

    def recordings(self, since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        """Calls that still have a recording, oldest first, with whether they are held or still open."""
        sql = ('SELECT c.id, c.started_at, c.answered_at, c.ended_at, c.caller, c.recording, c.outcome, '
               f'{_HELD.format(call="c")} FROM "call" c WHERE c.recording IS NOT NULL')
        args: list[float] = []
        if since is not None:
            sql += " AND c.started_at >= ?"
            args.append(float(since))
        if until is not None:
            sql += " AND c.started_at < ?"
            args.append(float(until))
        cur = self._db.execute_sql(sql + " ORDER BY c.started_at, c.id", tuple(args))
        keys = ("call_id", "started_at", "answered_at", "ended_at", "caller", "path", "outcome", "held")
        out = []
        for row in cur.fetchall():
            item = dict(zip(keys, row, strict=True))
            item["held"] = bool(item["held"])
            item["open"] = item["outcome"] is None
            out.append(item)
        return out

    def recording_deleted(self, call_id: int, path: str, at: float, reason: str) -> bool:
        """Forget the recording's path and note why in the call's timeline; False if the call has another path
        by now (sealed meanwhile, say) or is held (a hold placed after the decision wins)."""
        with self._db.atomic("IMMEDIATE"):
            cur = self._db.execute_sql(
                f'UPDATE "call" SET recording = NULL WHERE id = ? AND recording = ? AND NOT {_HELD_CALL}',
                (call_id, str(path)))
            if not cur.rowcount:
                return False
            self._db.execute_sql('INSERT INTO "call_event" (call_id, at, kind, detail) VALUES (?, ?, ?, ?)',
                                 (call_id, float(at), "recording", f"deleted: {reason}"))
        return True

    def recording_replaced(self, call_id: int, old: str, new: str, at: float, note: str) -> bool:
        """Point the call at a new file (the sealed one) if it still points at ``old``; note it in the timeline."""
        with self._db.atomic("IMMEDIATE"):
            cur = self._db.execute_sql('UPDATE "call" SET recording = ? WHERE id = ? AND recording = ?',
                                       (str(new), call_id, str(old)))
            if not cur.rowcount:
                return False
            self._db.execute_sql('INSERT INTO "call_event" (call_id, at, kind, detail) VALUES (?, ?, ?, ?)',
                                 (call_id, float(at), "recording", note))
        return True
