-- Commands and tasks (services/tasks.py): a task is a command and where to run it;
-- each run of it has one result per target server.
--
-- A task's command is an argv array or a shell line, never both. Its target is a
-- list of servers, a group or a tag; deleting the group or tag leaves the task
-- without a target (it then refuses to run, 409) rather than blocking the delete.
-- next_run_at is the scheduler's claim token: a replica fires a due task only if
-- its UPDATE ... WHERE next_run_at = <the value it read> moves it on, so with
-- several replicas exactly one fires each due minute.

CREATE TABLE tasks (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL,
    argv           text[],
    shell          text,
    server_ids     bigint[] NOT NULL DEFAULT '{}',  -- no foreign key: a deleted server is skipped
    group_id       bigint REFERENCES server_groups ON DELETE SET NULL,
    tag_id         bigint REFERENCES server_tags ON DELETE SET NULL,
    timeout        integer NOT NULL CHECK (timeout > 0),          -- seconds
    max_output     integer NOT NULL CHECK (max_output > 0),       -- bytes kept per server
    cwd            text,
    env            jsonb NOT NULL DEFAULT '{}',
    schedule       text,                                          -- cron, UTC; NULL: manual only
    next_run_at    timestamptz,                                   -- NULL: not scheduled
    enabled        boolean NOT NULL DEFAULT true,
    created_by     bigint REFERENCES users ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((argv IS NULL) <> (shell IS NULL))
);
CREATE INDEX tasks_due ON tasks (next_run_at) WHERE next_run_at IS NOT NULL;

CREATE TABLE task_runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id      bigint NOT NULL REFERENCES tasks ON DELETE CASCADE,
    trigger      text NOT NULL CHECK (trigger IN ('manual', 'schedule', 'retry')),
    retry_of     bigint REFERENCES task_runs ON DELETE SET NULL,
    triggered_by bigint REFERENCES users ON DELETE SET NULL,   -- NULL for the scheduler
    state        text NOT NULL DEFAULT 'running'
                 CHECK (state IN ('running', 'finished', 'cancelled')),
    command      jsonb NOT NULL,           -- what was run: argv or shell, timeout, cap, cwd, env
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    -- the replica running it touches this every few seconds; a running run whose
    -- heartbeat stopped (that replica died) is marked cancelled by any other
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_runs_task ON task_runs (task_id, id DESC);
CREATE INDEX task_runs_running ON task_runs (heartbeat_at) WHERE state = 'running';

-- Output is kept as bytes (a command may write anything, NUL included), at most
-- the task's max_output per server; the API shows it as UTF-8 text.
CREATE TABLE task_results (
    run_id       bigint NOT NULL REFERENCES task_runs ON DELETE CASCADE,
    server_id    bigint NOT NULL,          -- no foreign key: results outlive the server
    server_name  text NOT NULL,
    state        text NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'timed_out',
                                  'cancelled', 'denied', 'offline')),
    reason       text,                     -- why it failed, was denied or cancelled
    exit_code    integer,
    signal       integer,
    output       bytea NOT NULL DEFAULT '',
    output_bytes bigint NOT NULL DEFAULT 0,  -- what the command wrote, kept or not
    truncated    boolean NOT NULL DEFAULT false,
    started_at   timestamptz,
    finished_at  timestamptz,
    duration     real,                     -- seconds, as the agent measured
    PRIMARY KEY (run_id, server_id)
);
