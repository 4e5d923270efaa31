// The live fleet: a snapshot then change events over WebSocket /api/ws/servers.
// Reconnects with exponential backoff and full jitter; each new connection starts
// again from a fresh snapshot, so nothing missed while disconnected stays wrong.

const MIN_DELAY = 1000;
const MAX_DELAY = 30000;
const REVOKED = 4001;

/**
 * Open the stream. `onEvent(event)` gets every JSON frame (snapshot first);
 * `onState("open" | "connecting" | "closed" | "revoked")` reports the link.
 * Returns a function that closes it for good.
 */
export function connectLive(onEvent, onState = () => {}) {
  let socket = null;
  let attempt = 0;
  let timer = null;
  let stopped = false;

  function open() {
    onState("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}/api/ws/servers`);
    socket.addEventListener("message", (msg) => {
      attempt = 0;
      try {
        onEvent(JSON.parse(msg.data));
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
