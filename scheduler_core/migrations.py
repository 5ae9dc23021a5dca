"""The database's schema, as the migrations that make it: each a list of single statements,
applied in order under `PRAGMA user_version` by `scheduler_core.store` (the only module that
talks to SQLite; this one only holds the text, and reads from it what the schema holds).

A migration is never edited once released: a change is a new one at the end.
"""

import re

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE task (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            position INTEGER NOT NULL DEFAULT 0,
            configured INTEGER NOT NULL DEFAULT 1,
            status TEXT NOT NULL DEFAULT 'idle',
            paused INTEGER NOT NULL DEFAULT 0,
            last_run REAL,
            next_run REAL,
            run_count INTEGER NOT NULL DEFAULT 0,
            error_count INTEGER NOT NULL DEFAULT 0,
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            last_outcome TEXT,
            checkpoint TEXT
        ) STRICT""",
        """CREATE TABLE run (
            id INTEGER PRIMARY KEY,
            task_id TEXT NOT NULL REFERENCES task(id),
            cause TEXT NOT NULL,
            due REAL,
            started REAL NOT NULL,
            ended REAL,
            outcome TEXT,
            exit_code INTEGER,
            duration_s REAL,
            stdout TEXT NOT NULL DEFAULT '',
            stderr TEXT NOT NULL DEFAULT ''
        ) STRICT""",
        "CREATE INDEX task_by_position ON task(configured, position)",
        "CREATE INDEX run_by_task ON run(task_id, id)",
        "CREATE INDEX run_open ON run(outcome) WHERE outcome IS NULL",
        """CREATE TABLE log (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            task_id TEXT,
            action TEXT NOT NULL,
            message TEXT NOT NULL DEFAULT '',
            duration_s REAL,
            actor TEXT
        ) STRICT""",
        "CREATE INDEX log_by_task ON log(task_id, id)",
        "CREATE INDEX log_by_time ON log(time)",
    ],
    [
        # When the task's current failure streak was last alerted (NULL: not alerted).
        "ALTER TABLE task ADD COLUMN alerted_at REAL",
        # Alerts are written here before any send, one row per recipient, and marked sent
        # only once delivered: so each goes out once, in order, also across a restart.
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            created REAL NOT NULL,
            task_id TEXT,
            kind TEXT NOT NULL,
            recipient TEXT NOT NULL,
            text TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt REAL NOT NULL,
            last_error TEXT,
            sent REAL
        ) STRICT""",
        "CREATE INDEX outbox_pending ON outbox(id) WHERE sent IS NULL",
    ],
    [
        # The size of each run's kept output, and of all of it (one row), so the retention
        # budget is checked without adding up a million rows.
        "ALTER TABLE run ADD COLUMN output_bytes INTEGER NOT NULL DEFAULT 0",
        "UPDATE run SET output_bytes = length(CAST(stdout AS BLOB)) + length(CAST(stderr AS BLOB))",
        "CREATE INDEX run_with_output ON run(id) WHERE output_bytes > 0",
        """CREATE TABLE usage (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            output_bytes INTEGER NOT NULL
        ) STRICT""",
        "INSERT INTO usage VALUES (1, (SELECT COALESCE(SUM(output_bytes), 0) FROM run))",
    ],
    [
        # A run starting and a run ending each change three tables. Written as one statement
        # whose triggers do the rest, each is one trip to the connection's thread and its
        # own transaction (see Store.start_runs, finish_run): a run row inserted is a run
        # that started; a run given its outcome is a run that ended. The triggers run before
        # the statement's RETURNING is read, so it can give back the task as they left it.
        "ALTER TABLE run ADD COLUMN message TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE retention (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            runs_per_task INTEGER NOT NULL
        ) STRICT""",
        "INSERT INTO retention VALUES (1, 1000)",
        """CREATE TRIGGER run_started AFTER INSERT ON run BEGIN
            UPDATE task SET status = 'running', last_run = NEW.started WHERE id = NEW.task_id;
            INSERT INTO log (time, task_id, action, message)
                VALUES (NEW.started, NEW.task_id, 'started', NEW.cause || ' run');
        END""",
        """CREATE TRIGGER run_ended BEFORE UPDATE OF outcome ON run
            WHEN OLD.outcome IS NULL AND NEW.outcome IS NOT NULL BEGIN
            UPDATE task SET
                status = CASE NEW.outcome WHEN 'success' THEN 'idle'
                    WHEN 'interrupted' THEN 'interrupted' ELSE 'error' END,
                run_count = run_count + (NEW.outcome != 'interrupted'),
                error_count = error_count + (NEW.outcome NOT IN ('success', 'interrupted')),
                consecutive_failures = CASE NEW.outcome WHEN 'success' THEN 0
                    WHEN 'interrupted' THEN consecutive_failures
                    ELSE consecutive_failures + 1 END,
                last_error = CASE NEW.outcome WHEN 'success' THEN NULL
                    WHEN 'interrupted' THEN last_error ELSE NEW.message END,
                last_outcome = CASE NEW.outcome WHEN 'interrupted' THEN last_outcome
                    ELSE NEW.outcome END
                WHERE id = NEW.task_id;
            INSERT INTO log (time, task_id, action, message, duration_s)
                VALUES (NEW.ended, NEW.task_id,
                    CASE NEW.outcome WHEN 'success' THEN 'completed' ELSE NEW.outcome END,
                    NEW.message, NEW.duration_s);
            UPDATE usage SET output_bytes = output_bytes + NEW.output_bytes - OLD.output_bytes;
            DELETE FROM run WHERE task_id = NEW.task_id AND id < NEW.id AND id <= (
                SELECT id FROM run WHERE task_id = NEW.task_id ORDER BY id DESC LIMIT 1
                OFFSET (SELECT runs_per_task FROM retention));
        END""",
        # Every run deleted gives its output's bytes back to the budget.
        """CREATE TRIGGER run_gone AFTER DELETE ON run BEGIN
            UPDATE usage SET output_bytes = output_bytes - OLD.output_bytes;
        END""",
    ],
    [
        # Runs asked for at a time, kept until they start: one-shots (`run TASK --in 20m`)
        # and retries. A retry never waits past its task's next slot: it takes that slot
        # (`took_slot`), and the task's next_run moves past it.
        """CREATE TABLE later (
            id INTEGER PRIMARY KEY,
            task_id TEXT NOT NULL,
            cause TEXT NOT NULL,
            due REAL NOT NULL,
            created REAL NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            actor TEXT,
            took_slot REAL
        ) STRICT""",
        "CREATE INDEX later_by_task ON later(task_id, due)",
        # A failed run that a retry follows: the retry decides for the pair (alerts count
        # the run and its retries as one failure, and flapping looks at the last of them).
        "ALTER TABLE run ADD COLUMN retried INTEGER NOT NULL DEFAULT 0",
        # For max_age: when the task last succeeded, when it was first configured, and when
        # its current stale period was alerted (NULL: not stale, or not alerted yet).
        "ALTER TABLE task ADD COLUMN last_success REAL",
        "ALTER TABLE task ADD COLUMN added REAL",
        "ALTER TABLE task ADD COLUMN stale_alerted REAL",
        """UPDATE task SET last_success = (SELECT MAX(ended) FROM run
            WHERE run.task_id = task.id AND run.outcome = 'success')""",
        "UPDATE task SET added = (julianday('now') - 2440587.5) * 86400.0",
        # Which channel delivered an alert: 'signal' or 'fallback' (NULL: not delivered).
        "ALTER TABLE outbox ADD COLUMN channel TEXT",
        "UPDATE outbox SET channel = 'signal' WHERE sent IS NOT NULL",
        # The run_ended trigger of migration 4, with `stopped` (neither a run that counts nor
        # a failure, like `interrupted`, but it does not resume), retries (a retry's failure
        # does not lengthen the failure streak: the run it retries counted already) and the
        # time of the last success.
        "DROP TRIGGER run_ended",
        """CREATE TRIGGER run_ended BEFORE UPDATE OF outcome ON run
            WHEN OLD.outcome IS NULL AND NEW.outcome IS NOT NULL BEGIN
            UPDATE task SET
                status = CASE NEW.outcome WHEN 'success' THEN 'idle' WHEN 'stopped' THEN 'idle'
                    WHEN 'interrupted' THEN 'interrupted' ELSE 'error' END,
                run_count = run_count + (NEW.outcome NOT IN ('interrupted', 'stopped')),
                error_count = error_count + (NEW.outcome IN ('failed', 'timeout')),
                consecutive_failures = CASE
                    WHEN NEW.outcome = 'success' THEN 0
                    WHEN NEW.outcome IN ('interrupted', 'stopped') THEN consecutive_failures
                    WHEN NEW.cause = 'retry' THEN MAX(consecutive_failures, 1)
                    ELSE consecutive_failures + 1 END,
                last_error = CASE NEW.outcome WHEN 'success' THEN NULL
                    WHEN 'interrupted' THEN last_error WHEN 'stopped' THEN last_error
                    ELSE NEW.message END,
                last_outcome = CASE NEW.outcome WHEN 'interrupted' THEN last_outcome
                    ELSE NEW.outcome END,
                last_success = CASE NEW.outcome WHEN 'success' THEN NEW.ended
                    ELSE last_success END
                WHERE id = NEW.task_id;
            INSERT INTO log (time, task_id, action, message, duration_s)
                VALUES (NEW.ended, NEW.task_id,
                    CASE NEW.outcome WHEN 'success' THEN 'completed' ELSE NEW.outcome END,
                    NEW.message, NEW.duration_s);
            UPDATE usage SET output_bytes = output_bytes + NEW.output_bytes - OLD.output_bytes;
            DELETE FROM run WHERE task_id = NEW.task_id AND id < NEW.id AND id <= (
                SELECT id FROM run WHERE task_id = NEW.task_id ORDER BY id DESC LIMIT 1
                OFFSET (SELECT runs_per_task FROM retention));
        END""",
    ],
    [
        # A slot's run carries its task's next slot, recorded by the statement that records
        # its start: until then the task's next_run stays the slot the run waits in (see
        # scheduler_core.timetable), and a write of its own would cost every run a commit.
        "ALTER TABLE run ADD COLUMN next_due REAL",
        "DROP TRIGGER run_started",
        """CREATE TRIGGER run_started AFTER INSERT ON run BEGIN
            UPDATE task SET status = 'running', last_run = NEW.started,
                next_run = COALESCE(NEW.next_due, next_run) WHERE id = NEW.task_id;
            INSERT INTO log (time, task_id, action, message)
                VALUES (NEW.started, NEW.task_id, 'started', NEW.cause || ' run');
        END""",
    ],
    [
        # The schedule a task's next_run was decided by (`triggers.schedule_key`): a start
        # after the file changed it (edit, restart) applies the new one from now, as a reload
        # does, instead of waiting for a slot of the old one.
        "ALTER TABLE task ADD COLUMN schedule TEXT",
    ],
]


_MADE = re.compile(r"\s*CREATE (TABLE|INDEX|TRIGGER) (\w+)", re.IGNORECASE)
_DROPPED = re.compile(r"\s*DROP (TABLE|INDEX|TRIGGER) (\w+)", re.IGNORECASE)


def objects() -> frozenset[str]:
    """What a file the migrations brought up to date holds, as `sqlite_schema` names it
    (`table log`, `trigger run_ended`): each made and not dropped again."""
    made: set[str] = set()
    for statement in (sql for migration in MIGRATIONS for sql in migration):
        if m := _MADE.match(statement):
            made.add(f"{m[1].lower()} {m[2]}")
        elif m := _DROPPED.match(statement):
            made.discard(f"{m[1].lower()} {m[2]}")
    return frozenset(made)
