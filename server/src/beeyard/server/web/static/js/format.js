// Number and time formatting for the fleet views. Every function returns text.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** 1536 → "1.5 KiB"; null/undefined → "–". */
export function bytes(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  let v = Number(value);
  let i = 0;
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v >= 10 || i === 0 ? 0 : 1)} ${UNITS[i]}`;
}

/** Bytes per second → "1.5 MiB/s". */
export function rate(value) {
  return value === null || value === undefined ? "–" : `${bytes(value)}/s`;
}

/** 42.123 → "42.1 %". */
export function percent(value) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(1)} %`;
}

/** Seconds → "3d 4h", "5h 12m", "7m". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  return `${m}m`;
}

/** A load triple → "0.42 0.35 0.30". */
export function load(triple) {
  return Array.isArray(triple) ? triple.map((x) => Number(x).toFixed(2)).join(" ") : "–";
}

/** An ISO date or unix seconds → "5 s ago" / "3 min ago" / a local date. */
export function ago(when) {
  if (when === null || when === undefined) return "never";
  const t = typeof when === "number" ? when * 1000 : Date.parse(when);
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 60) return `${Math.max(s, 0)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return new Date(t).toLocaleString();
}

/** An ISO date → local date and time. */
export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}
