// The live fleet: a snapshot then change events over WebSocket /api/ws/servers.
// Reconnects with exponential backoff and full jitter; each new connection starts
// again from a fresh snapshot, so nothing missed while disconnected stays wrong.

const MIN_DELAY = 1000;
const MAX_DELAY = 30000;
const REVOKED = 4001;

/**
 * Open the stream. `onEvent(event)` gets the snapshot, then every change (the
 * server sends changes in batches: one JSON array per frame);
 * `onState("open" | "connecting" | "closed" | "revoked")` reports the link.
 * With `serverId`, only that server's events, samples with their full metrics.
 * Returns a function that closes it for good.
 */
export function connectLive(onEvent, onState = () => {}, serverId = null) {
  let socket = null;
  let attempt = 0;
  let timer = null;
  let stopped = false;

  function open() {
    onState("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = serverId === null ? "" : `?server_id=${serverId}`;
    socket = new WebSocket(`${scheme}//${location.host}/api/ws/servers${query}`);
    socket.addEventListener("message", (msg) => {
      attempt = 0;
      try {
        const data = JSON.parse(msg.data);
        for (const event of Array.isArray(data) ? data : [data]) onEvent(event);
      } catch (err) {
        console.warn("live: bad frame", err);
      }
    });
    socket.addEventListener("open", () => onState("open"));
    socket.addEventListener("close", (e) => {
      if (stopped) return;
      if (e.code === REVOKED) {
        onState("revoked");
        return;
      }
      onState("closed");
      const delay = Math.min(MAX_DELAY, MIN_DELAY * 2 ** attempt);
      attempt += 1;
      timer = setTimeout(open, Math.random() * delay + 250);
    });
  }

  open();
  return () => {
    stopped = true;
    clearTimeout(timer);
    socket?.close();
  };
}
