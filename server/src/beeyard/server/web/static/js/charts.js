// Time-series charts with uPlot (vendored, pinned in web/vendor.json). The library is
// loaded on first use, so the sign-in page stays small.

const BASE = "/static/vendor/uplot/dist/";
let loading = null;

function loadUplot() {
  loading ??= new Promise((resolve, reject) => {
    const css = document.createElement("link");
    css.rel = "stylesheet";
    css.href = `${BASE}uPlot.min.css`;
    document.head.append(css);
    const script = document.createElement("script");
    script.src = `${BASE}uPlot.iife.min.js`;
    script.addEventListener("load", () => resolve(window.uPlot));
    script.addEventListener("error", () => reject(new Error("charts failed to load")));
    document.head.append(script);
  });
  return loading;
}

// Byte axes tick at whole KiB, MiB… (1 KiB, 2 KiB, 4 KiB, …), not at decimal steps.
const POWERS_OF_TWO = Array.from({ length: 50 }, (_, i) => 2 ** i);
const COLORS = ["#e09b00", "#1d7fd6", "#2aa876", "#c2417a"];

/**
 * A chart in `container`: `series` is [{label}], `format(value)` labels the y axis,
 * `max` fixes its top (percentages) and `floor` is the least top (so an idle chart
 * does not label its axis in fractions of a unit), `binary` ticks at powers of two.
 * Returns { setData(window, xs, ...ys), destroy() }: xs are unix seconds and the
 * x axis spans `window` ([from, to]) whatever part of it has data.
 */
export async function lineChart(container, { series, format, max, floor = 1, binary = false }) {
  const uPlot = await loadUplot();
  const width = () => Math.max(container.clientWidth, 240);
  const opts = {
    width: width(),
    height: 160,
    legend: { show: true },
    cursor: { drag: { x: false, y: false } },
    scales: {
      x: { time: true, range: (_u, lo, hi) => span ?? [lo, hi] },
      y: { range: (_u, lo, hi) => [0, max ?? Math.max(hi * 1.1, floor)] },
    },
    axes: [
      { stroke: "#888", grid: { stroke: "rgba(128,128,128,0.15)" } },
      { stroke: "#888", grid: { stroke: "rgba(128,128,128,0.15)" }, size: 88,
        incrs: binary ? POWERS_OF_TWO : undefined, values: (_u, ticks) => ticks.map(format) },
    ],
    series: [{}, ...series.map((s, i) => ({
      label: s.label,
      stroke: COLORS[i % COLORS.length],
      width: 1.5,
      fill: i === 0 ? "rgba(224,155,0,0.08)" : undefined,
      value: (_u, v) => (v === null || v === undefined ? "–" : format(v)),
    }))],
  };
  let span = null;
  const plot = new uPlot(opts, [[], ...series.map(() => [])], container);
  const resize = () => plot.setSize({ width: width(), height: 160 });
  window.addEventListener("resize", resize);
  return {
    setData: (window, xs, ...ys) => {
      span = window;
      plot.setData([xs, ...ys]);
    },
    destroy: () => {
      window.removeEventListener("resize", resize);
      plot.destroy();
    },
  };
}
