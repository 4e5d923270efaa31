// The figures the fleet views show, taken from one live sample's metrics
// (the agent's `sample` frame; see docs/agent-link.md).

/** Disk space used over all real filesystems, in percent (as the server's summaries). */
export function diskPercent(m) {
  const fs = m?.filesystems ?? [];
  const used = fs.reduce((a, f) => a + f.used, 0);
  const room = used + fs.reduce((a, f) => a + f.free, 0);
  return room > 0 ? (100 * used) / room : null;
}

/** Disk I/O over all devices: [read bytes/s, write bytes/s]. */
export function diskIO(m) {
  const disks = m?.disks ?? [];
  return [
    disks.reduce((a, d) => a + d.read_bps, 0),
    disks.reduce((a, d) => a + d.write_bps, 0),
  ];
}

/** The scalars a chart plots for one sample, named as in GET /records. */
export function scalars(m) {
  const [read, write] = diskIO(m);
  return {
    cpu: m.cpu,
    memory_percent: m.memory?.percent,
    net_rx_bps: m.net_total?.rx_bps,
    net_tx_bps: m.net_total?.tx_bps,
    disk_read_bps: read,
    disk_write_bps: write,
  };
}
