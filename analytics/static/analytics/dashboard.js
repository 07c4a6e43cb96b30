/* Draws the cost dashboard's charts with the vendored Chart.js (no network access at run time).
 * The data comes from the page (json_script "cc-chart-data"); amounts travel as decimal strings
 * and are turned into numbers here, for drawing only: the tables beside the charts show them exactly.
 * window.costcontrolCharts maps canvas id -> Chart instance (the browser test inspects it). */
(function () {
  "use strict";
  var PALETTE = ["#417690", "#e8590c", "#2b8a3e", "#7048e8", "#e2a300", "#c92a2a", "#1098ad", "#5c940d", "#d6336c", "#495057"];

  function numbers(values) {
    return values.map(function (v) { return v === null || v === "" ? null : Number(v); });
  }

  function datasets(spec, options) {
    return spec.datasets.map(function (d, i) {
      var colour = PALETTE[i % PALETTE.length];
      return Object.assign({ label: d.label, data: numbers(d.data), backgroundColor: colour, borderColor: colour }, options || {});
    });
  }

  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (!canvas) { return; }
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
    var chart = new window.Chart(canvas, config);
    window.costcontrolCharts[id] = chart;
    canvas.setAttribute("data-rendered", "1");
  }

  function start() {
    window.costcontrolCharts = {};
    var node = document.getElementById("cc-chart-data");
    if (!node || !window.Chart) { return; }
    var data = JSON.parse(node.textContent);
    var money = { ticks: { callback: function (v) { return v + " USD"; } } };
    draw("chart-spend_by_provider", {
      type: "bar",
      data: { labels: data.spend_by_provider.labels, datasets: datasets(data.spend_by_provider) },
      options: { scales: { x: { stacked: true }, y: Object.assign({ stacked: true }, money) } }
    });
    draw("chart-top_models", {
      type: "bar",
      data: { labels: data.top_models.labels, datasets: datasets(data.top_models) },
      options: { indexAxis: "y", plugins: { legend: { display: false } } }
    });
    draw("chart-top_subjects", {
      type: "bar",
      data: { labels: data.top_subjects.labels, datasets: datasets(data.top_subjects, { backgroundColor: PALETTE[1] }) },
      options: { indexAxis: "y", plugins: { legend: { display: false } } }
    });
    draw("chart-cost_per_lead", {
      type: "line",
      data: { labels: data.cost_per_lead.labels, datasets: datasets(data.cost_per_lead, { fill: false, tension: 0.2, spanGaps: true }) },
      options: { scales: { y: money } }
    });
    draw("chart-gpu", {
      type: "bar",
      data: { labels: data.gpu.labels, datasets: datasets(data.gpu) },
      options: { scales: { x: { stacked: true }, y: Object.assign({ stacked: true }, money) } }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
