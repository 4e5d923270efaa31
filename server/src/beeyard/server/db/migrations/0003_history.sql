-- Arranging the fleet (groups, tags, notes, traffic cycle) and the long-term
-- metric tiers: hourly and daily rollups of metrics_minute (services/rollups.py).
--
-- Rollups have metrics_minute's columns plus ``minutes`` (how many minute
-- summaries went in, for uptime) and a wider ``samples``. avg is weighted by
-- samples, min is the min of mins, max the max of maxes, byte counts are sums:
-- a day rolled from hours equals the day rolled from its minutes.
-- Partitioned like metrics_minute so that retention drops whole partitions:
-- metrics_hour by month (metrics_hour_YYYYMM), metrics_day by year
-- (metrics_day_YYYY); <table>_partition(ts) creates the partition holding ``ts``.

CREATE TABLE server_groups (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX server_groups_name_key ON server_groups (lower(name));

CREATE TABLE server_tags (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX server_tags_name_key ON server_tags (lower(name));

CREATE TABLE server_tag_links (
    server_id bigint NOT NULL REFERENCES servers ON DELETE CASCADE,
    tag_id    bigint NOT NULL REFERENCES server_tags ON DELETE CASCADE,
    PRIMARY KEY (server_id, tag_id)
);
CREATE INDEX server_tag_links_tag ON server_tag_links (tag_id);

ALTER TABLE servers
    ADD COLUMN group_id bigint REFERENCES server_groups ON DELETE SET NULL,
    ADD COLUMN notes text NOT NULL DEFAULT '',
    -- Day of the month a traffic cycle starts (UTC); past a short month's end it
    -- falls on that month's last day.
    ADD COLUMN traffic_reset_day smallint NOT NULL DEFAULT 1
        CHECK (traffic_reset_day BETWEEN 1 AND 31);
CREATE INDEX servers_group ON servers (group_id);

CREATE TABLE metrics_hour (
    server_id    bigint NOT NULL,      -- no foreign key, like metrics_minute
    bucket       timestamptz NOT NULL, -- start of the hour, UTC
    samples      integer NOT NULL,     -- live samples behind the bucket: the avg weights
    minutes      integer NOT NULL,     -- minute summaries behind it: uptime
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
    PRIMARY KEY (server_id, bucket)
) PARTITION BY RANGE (bucket);

CREATE TABLE metrics_day (
    server_id    bigint NOT NULL,      -- no foreign key, like metrics_minute
    bucket       timestamptz NOT NULL, -- start of the day, UTC
    samples      integer NOT NULL,     -- live samples behind the bucket: the avg weights
    minutes      integer NOT NULL,     -- minute summaries behind it: uptime
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
    PRIMARY KEY (server_id, bucket)
) PARTITION BY RANGE (bucket);

CREATE FUNCTION metrics_hour_partition(ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    since timestamptz := date_trunc('month', ts, 'UTC');
    part text := format('metrics_hour_%s', to_char(since AT TIME ZONE 'UTC', 'YYYYMM'));
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF metrics_hour FOR VALUES FROM (%L) TO (%L)',
        part, since, ((since AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC');
EXCEPTION WHEN duplicate_table OR unique_violation THEN
    NULL;  -- another replica created it at the same moment
END;
$$;

CREATE FUNCTION metrics_day_partition(ts timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    since timestamptz := date_trunc('year', ts, 'UTC');
    part text := format('metrics_day_%s', to_char(since AT TIME ZONE 'UTC', 'YYYY'));
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF metrics_day FOR VALUES FROM (%L) TO (%L)',
        part, since, ((since AT TIME ZONE 'UTC') + interval '1 year') AT TIME ZONE 'UTC');
EXCEPTION WHEN duplicate_table OR unique_violation THEN
    NULL;  -- another replica created it at the same moment
END;
$$;

-- How far the rollup job has got: every bucket before ``done_until`` has been
-- rolled up at least once (late summaries are rolled again by a later pass).
CREATE TABLE rollup_state (
    tier       text PRIMARY KEY CHECK (tier IN ('hour', 'day')),
    done_until timestamptz NOT NULL
);

SELECT metrics_hour_partition(now() + make_interval(months => m)) FROM generate_series(-1, 1) AS m;
SELECT metrics_day_partition(now() + make_interval(years => y)) FROM generate_series(-1, 1) AS y;
