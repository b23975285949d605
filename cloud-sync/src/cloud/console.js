// The console's charts: each element with data-chart="<id>" is drawn with uPlot from
// the JSON in <script type="application/json" id="<id>">. No inline script anywhere
// (the console's CSP allows only its own files).
"use strict";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

for (const el of document.querySelectorAll("[data-chart]")) {
  const source = document.getElementById(el.dataset.chart);
  if (!source || typeof uPlot === "undefined") continue;
  const rows = JSON.parse(source.textContent);
  const hours = Array.from({ length: 24 }, (_, h) => h);
  const series = [{ label: "hour" }].concat(
    rows.map((r, i) => ({ label: r.canteen, stroke: COLORS[i % COLORS.length], width: 2 })),
  );
  const options = {
    width: Math.max(el.clientWidth, 320),
    height: 280,
    series,
    scales: { x: { time: false } },
    axes: [{ label: "hour", values: (_, ticks) => ticks.map((h) => `${h}:00`) }, { label: "orders" }],
  };
  new uPlot(options, [hours].concat(rows.map((r) => r.orders)), el);
}
