"""Schema migrations: frozen SQL, never edited once released; append new versions at the end."""

from __future__ import annotations

from collections.abc import Callable

import peewee as pw


def _m1_create_tables(db: pw.SqliteDatabase) -> None:
    for sql in (
        """CREATE TABLE "call" (
            "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
            "sip_call_id" TEXT NOT NULL DEFAULT '',
            "caller" TEXT NOT NULL DEFAULT '',
            "caller_raw" TEXT NOT NULL DEFAULT '',
            "called" TEXT NOT NULL DEFAULT '',
            "source" TEXT NOT NULL DEFAULT '',
            "flow" TEXT NOT NULL DEFAULT '',
            "started_at" REAL NOT NULL,
            "answered_at" REAL,
            "ended_at" REAL,
            "outcome" TEXT,
            "digits" TEXT NOT NULL DEFAULT '',
            "recording" TEXT,
            "end_reason" TEXT NOT NULL DEFAULT '')""",
        'CREATE INDEX "call_started_at" ON "call" ("started_at")',
        'CREATE INDEX "call_open" ON "call" ("outcome") WHERE "outcome" IS NULL',
        """CREATE TABLE "call_event" (
            "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
            "call_id" INTEGER NOT NULL REFERENCES "call" ("id") ON DELETE CASCADE,
            "at" REAL NOT NULL,
            "kind" TEXT NOT NULL,
            "detail" TEXT NOT NULL DEFAULT '')""",
        'CREATE INDEX "call_event_call_id" ON "call_event" ("call_id")',
    ):
        db.execute_sql(sql)


def _m2_blocks_and_marks(db: pw.SqliteDatabase) -> None:
    for sql in (
        """CREATE TABLE "block" (
            "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
            "pattern" TEXT NOT NULL,
            "reason" TEXT NOT NULL DEFAULT '',
            "source" TEXT NOT NULL DEFAULT 'manual',
            "created_at" REAL NOT NULL,
            "expires_at" REAL,
            "removed_at" REAL)""",
        'CREATE INDEX "block_pattern" ON "block" ("pattern")',
        """CREATE TABLE "abuse_mark" (
            "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
            "number" TEXT NOT NULL,
            "call_id" INTEGER REFERENCES "call" ("id") ON DELETE SET NULL,
            "at" REAL NOT NULL,
            "kind" TEXT NOT NULL)""",
        'CREATE INDEX "abuse_mark_number" ON "abuse_mark" ("number", "at")',
        'CREATE INDEX "call_caller_started" ON "call" ("caller", "started_at")',
    ):
        db.execute_sql(sql)




def _m3_queue_log_and_callbacks(db: pw.SqliteDatabase) -> None:
    for sql in (
        """CREATE TABLE "queue_log" (
            "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
            "queue" TEXT NOT NULL,
            "call_id" TEXT NOT NULL,
            "agent" TEXT NOT NULL,
            "event" TEXT NOT NULL,
            "at" REAL NOT NULL,
            "wait" REAL,
            "position" INTEGER,
            "orig_position" INTEGER,
            "talk" REAL,
            "ring" REAL,
            "number" TEXT NOT NULL DEFAULT '',
            "detail" TEXT NOT NULL DEFAULT '')""",
        'CREATE INDEX "queue_log_at" ON "queue_log" ("at")',
        'CREATE INDEX "queue_log_queue_at" ON "queue_log" ("queue", "at")',
        'CREATE INDEX "queue_log_number" ON "queue_log" ("number", "event", "at")',
        """CREATE TABLE "callback" (
            "id" TEXT NOT NULL PRIMARY KEY,
            "queue" TEXT NOT NULL,
            "number" TEXT NOT NULL,
            "reason" TEXT NOT NULL,
            "waited" REAL NOT NULL DEFAULT 0,
            "created_at" REAL NOT NULL,
            "priority_at" REAL,
            "state" TEXT NOT NULL,
            "attempts" INTEGER NOT NULL DEFAULT 0,
            "next_at" REAL NOT NULL DEFAULT 0,
            "agent" TEXT NOT NULL DEFAULT '',
            "updated_at" REAL NOT NULL DEFAULT 0,
            "detail" TEXT NOT NULL DEFAULT '')""",
        'CREATE INDEX "callback_state" ON "callback" ("state", "next_at")',
        'CREATE INDEX "callback_number" ON "callback" ("number")',
    ):
        db.execute_sql(sql)




def _m4_agent_commands(db: pw.SqliteDatabase) -> None:
    for sql in (
        """CREATE TABLE "agent_command" (
            "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
            "queue" TEXT NOT NULL,
            "action" TEXT NOT NULL,
            "uri" TEXT NOT NULL,
            "created_at" REAL NOT NULL,
            "done_at" REAL,
            "result" TEXT NOT NULL DEFAULT '')""",
        'CREATE INDEX "agent_command_open" ON "agent_command" ("done_at")',
        """CREATE TABLE "agent_state" (
            "queue" TEXT NOT NULL,
            "uri" TEXT NOT NULL,
            "state" TEXT NOT NULL,
            "calls_taken" INTEGER NOT NULL DEFAULT 0,
            "missed" INTEGER NOT NULL DEFAULT 0,
            "updated_at" REAL NOT NULL,
            PRIMARY KEY ("queue", "uri"))""",
    ):
        db.execute_sql(sql)


def _m5_recording_holds(db: pw.SqliteDatabase) -> None:
    for sql in (
        """CREATE TABLE "recording_hold" (
            "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
            "call_id" INTEGER NOT NULL REFERENCES "call" ("id"),
            "reason" TEXT NOT NULL DEFAULT '',
            "at" REAL NOT NULL,
            "released_at" REAL)""",
        'CREATE INDEX "recording_hold_call" ON "recording_hold" ("call_id", "released_at")',
        'CREATE INDEX "call_recorded" ON "call" ("started_at") WHERE "recording" IS NOT NULL',
    ):
        db.execute_sql(sql)


# index + 1 == version
MIGRATIONS: list[Callable[[pw.SqliteDatabase], None]] = [
    _m1_create_tables,
    _m2_blocks_and_marks,
    _m3_queue_log_and_callbacks,
    _m4_agent_commands,
    _m5_recording_holds,
]
