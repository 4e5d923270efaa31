// The fleet as the browser knows it: servers by id, kept current by the live stream.
// Views subscribe and redraw what changed. `new Fleet()` follows every server (samples
// carry summary values); `new Fleet(id)` follows one server with full metrics.

import { request } from "./api.js";
import { connectLive } from "./live.js";

// A server whose newest sample is older than this is shown offline even before the
// server's own detection (3 intervals, ≤ 10 s at defaults) announces it.
const STALE_SECONDS = 15;

export class Fleet {
  constructor(serverId = null) {
    this.servers = new Map();
    this.link = "connecting";
    this.listeners = new Set();
    this.ready = false;
    this.fetching = new Set();
    this.close = connectLive((e) => this.apply(e), (s) => this.setLink(s), serverId);
    this.ticker = setInterval(() => this.emit({ type: "tick" }), 5000);
  }

  /** Call fn(event) on every change; returns the unsubscribe function. */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(event) {
    for (const fn of this.listeners) fn(event);
  }

  setLink(state) {
    this.link = state;
    this.emit({ type: "link", state });
  }

  apply(e) {
    const s = this.servers.get(e.server_id);
    if (e.type === "snapshot") {
      this.servers = new Map(e.servers.map((x) => [x.id, x]));
      this.ready = true;
    } else if (e.type === "server_removed") {
      this.servers.delete(e.server_id);
    } else if (!s) {
      this.fetchNew(e.server_id); // enrolled after the snapshot
      return;
    } else if (e.type === "sample") {
      s.latest = { ts: e.ts, values: e.values, metrics: e.metrics };
      s.online = true;
      s.last_seen = new Date(e.ts * 1000).toISOString();
    } else if (e.type === "online" || e.type === "offline") {
      s.online = e.type === "online";
      s.last_seen = new Date(e.last_seen * 1000).toISOString();
    } else if (e.type === "server_updated") {
      Object.assign(s, e.fields);
    }
    this.emit(e);
  }

  async fetchNew(id) {
    if (this.fetching.has(id)) return;
    this.fetching.add(id);
    try {
      const server = await request("GET", `/api/servers/${id}`);
      this.servers.set(id, server);
      this.emit({ type: "server_added", server_id: id });
    } catch {
      // removed again, or no access: nothing to show
    } finally {
      this.fetching.delete(id);
    }
  }

  /** Whether a server counts as online now. */
  isOnline(s) {
    if (!s.online || !s.latest) return Boolean(s.online && !s.latest);
    return Date.now() / 1000 - s.latest.ts < STALE_SECONDS;
  }

  stop() {
    clearInterval(this.ticker);
    this.close();
    this.listeners.clear();
  }
}
