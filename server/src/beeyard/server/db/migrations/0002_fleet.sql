-- The fleet: enrolled servers, one-time enrollment codes, and per-minute metrics.
--
-- Run tokens and enrollment codes are kept as SHA-256 digests (UNIQUE, so a
-- presented secret is found by one indexed lookup); the plaintext is shown once.

CREATE TABLE servers (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL,
    hostname         text,
    host             jsonb NOT NULL DEFAULT '{}',   -- hello.host: os, kernel, cores, addresses...
    capabilities     text[] NOT NULL DEFAULT '{}',  -- what the agent's own config allows
    agent_version    text,
    protocol         text,
    sample_interval  real,                          -- seconds between live samples (hello)
    token_digest     bytea NOT NULL UNIQUE,         -- SHA-256 of the current run token
    token_rotated_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    connected_at     timestamptz,                   -- last accepted hello
    last_seen_at     timestamptz                    -- last frame, written at most every minute
    -- group_id and tags: added by 0003
);

CREATE TABLE enrollments (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code_prefix text NOT NULL,                      -- first 8 characters, for recognising a code
    code_digest bytea NOT NULL UNIQUE,
    created_by  bigint REFERENCES users ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    consumed_at timestamptz,
    server_id   bigint REFERENCES servers ON DELETE SET NULL
);
CREATE INDEX enrollments_created ON enrollments (created_at DESC);

-- One row per server and minute, from the agent's summary frame. Aggregates are
-- plain columns (<name>_avg/_min/_max for each of beeyard.shared.frames.SUMMARY_NAMES)
-- rather than a jsonb or real[]: rollups and charts read them with ordinary SQL
-- aggregates and no per-row decoding, and a NULL column (no GPU, no sensors)
-- costs one bit in the row's null bitmap, so a row is ~250 bytes either way.
-- real (float4, 7 significant digits) is ample for a chart and half of
-- double precision; the byte counters that traffic accounting sums are exact
-- bigints.
--
-- The primary key makes replays idempotent (INSERT ... ON CONFLICT DO NOTHING).
-- Partitioned by day on minute: retention drops whole partitions.
-- metrics_minute_partition(day) creates a day's partition; the ingest writer
-- calls it for the days of each batch and a background job creates the next
-- days ahead.
CREATE TABLE metrics_minute (
    server_id bigint NOT NULL,      -- no foreign key: deleting a server drops its rows itself
    minute    timestamptz NOT NULL,
    samples   smallint NOT NULL,
    net_rx_bytes bigint,
    net_tx_bytes bigint,
    cpu_avg real, cpu_min real, cpu_max real,
    load1_avg real, load1_min real, load1_max real,
    load5_avg real, load5_min real, load5_max real,
    load15_avg real, load15_min real, load15_max real,
    memory_used_avg real, memory_used_min real, memory_used_max real,
    memory_percent_avg real, memory_percent_min real, memory_percent_max real,
    swap_used_avg real, swap_used_min real, swap_used_max real,
    disk_used_percent_avg real, disk_used_percent_min real, disk_used_percent_max real,
    disk_read_bps_avg real, disk_read_bps_min real, disk_read_bps_max real,
    disk_write_bps_avg real, disk_write_bps_min real, disk_write_bps_max real,
    net_rx_bps_avg real, net_rx_bps_min real, net_rx_bps_max real,
    net_tx_bps_avg real, net_tx_bps_min real, net_tx_bps_max real,
    tcp_avg real, tcp_min real, tcp_max real,
    udp_avg real, udp_min real, udp_max real,
    processes_avg real, processes_min real, processes_max real,
    temperature_max_avg real, temperature_max_min real, temperature_max_max real,
    gpu_utilization_avg real, gpu_utilization_min real, gpu_utilization_max real,
    gpu_memory_used_avg real, gpu_memory_used_min real, gpu_memory_used_max real,
    PRIMARY KEY (server_id, minute)
) PARTITION BY RANGE (minute);

CREATE FUNCTION metrics_minute_partition(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('metrics_minute_%s', to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF metrics_minute FOR VALUES FROM (%L) TO (%L)',
        part, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
EXCEPTION WHEN duplicate_table OR unique_violation THEN
    NULL;  -- another replica created it at the same moment
END;
$$;

SELECT metrics_minute_partition((now() AT TIME ZONE 'UTC')::date + d)
  FROM generate_series(-1, 2) AS d;
