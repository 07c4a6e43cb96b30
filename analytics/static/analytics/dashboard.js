/* Draws the cost dashboard's charts with the vendored Chart.js (no network access at run time).
 * The data comes from the page (json_script "cc-chart-data", analytics.dashboard.chart_series): amounts
 * travel as decimal strings and become numbers here, for drawing only; each value's exact words
 * (dataset.text, as the table beside the chart shows them) are what the tooltips say.
 * Every chart has axes titled with their units, gridlines, a legend and tooltips.
 * window.costcontrolCharts maps canvas id -> Chart instance (the browser tests inspect it). */
(function () {
  "use strict";
  var PALETTE = ["#417690", "#e8590c", "#2b8a3e", "#7048e8", "#e2a300", "#c92a2a", "#1098ad", "#5c940d", "#d6336c", "#495057"];
  var NUMBER = new Intl.NumberFormat("en-US", { maximumFractionDigits: 6 });

  function numbers(values) {
    return values.map(function (v) { return v === null || v === "" ? null : Number(v); });
  }

  function datasets(spec, options) {
    return spec.datasets.map(function (d, i) {
      var colour = PALETTE[i % PALETTE.length];
      return Object.assign(
        { label: d.label, data: numbers(d.data), text: d.text || [], backgroundColor: colour, borderColor: colour },
        options || {}
      );
    });
  }

  function axis(title, extra) {
    return Object.assign(
      { title: { display: Boolean(title), text: title }, grid: { display: true, color: "rgba(0, 0, 0, 0.08)" } },
      extra || {}
    );
  }

  function moneyAxis(title, extra) {
    return axis(title, Object.assign({ beginAtZero: true, ticks: { callback: function (v) { return NUMBER.format(v) + " USD"; } } }, extra || {}));
  }

  function plugins(spec, legend) {
    return {
      legend: Object.assign({ display: true, position: "top" }, legend || {}),
      tooltip: {
        enabled: true,
        callbacks: {
          // The exact amount, as the table shows it, not the drawn number.
          label: function (item) {
            var text = (item.dataset.text || [])[item.dataIndex];
            return item.dataset.label + ": " + (text || item.formattedValue);
          },
          footer: function (items) {
            if (!spec.totals || !spec.totals.length || !items.length) { return ""; }
            return "total: " + spec.totals[items[0].dataIndex];
          }
        }
      }
    };
  }

  function draw(id, spec, config) {
    var canvas = document.getElementById(id);
    if (!canvas || !spec) { return; }
    config.options = Object.assign(
      { animation: false, responsive: true, maintainAspectRatio: false, interaction: { mode: "index", intersect: false } },
      config.options || {}
    );
    var chart = new window.Chart(canvas, config);
    window.costcontrolCharts[id] = chart;
    canvas.setAttribute("data-rendered", "1");
  }

  function start() {
    window.costcontrolCharts = {};
    var node = document.getElementById("cc-chart-data");
    if (!node || !window.Chart) { return; }
    var data = JSON.parse(node.textContent);

    var spend = data.spend_by_provider;
    draw("chart-spend_by_provider", spend, {
      type: "bar",
      data: { labels: spend.labels, datasets: datasets(spend) },
      options: {
        plugins: plugins(spend),
        scales: { x: axis(spend.axes.x, { stacked: true }), y: moneyAxis(spend.axes.y, { stacked: true }) }
      }
    });
    ["top_models", "top_subjects"].forEach(function (name, i) {
      var spec = data[name];
      draw("chart-" + name, spec, {
        type: "bar",
        data: { labels: spec.labels, datasets: datasets(spec, { backgroundColor: PALETTE[i], borderColor: PALETTE[i] }) },
        options: {
          indexAxis: "y",
          plugins: plugins(spec),
          scales: { x: moneyAxis(spec.axes.x), y: axis(spec.axes.y) }
        }
      });
    });
    var cpl = data.cost_per_lead;
    draw("chart-cost_per_lead", cpl, {
      type: "line",
      data: { labels: cpl.labels, datasets: datasets(cpl, { fill: false, tension: 0.2, spanGaps: true, pointRadius: 3 }) },
      options: { plugins: plugins(cpl), scales: { x: axis(cpl.axes.x), y: moneyAxis(cpl.axes.y) } }
    });
    var bills = data.bill_drift;
    if (bills) {
      draw("chart-bill_drift", bills, {
        type: "line",
        data: { labels: bills.labels, datasets: datasets(bills, { fill: false, tension: 0.1, pointRadius: 3 }) },
        options: { plugins: plugins(bills), scales: { x: axis(bills.axes.x), y: moneyAxis(bills.axes.y) } }
      });
    }
    var gpu = data.gpu;
    draw("chart-gpu", gpu, {
      type: "bar",
      data: { labels: gpu.labels, datasets: datasets(gpu) },
      options: {
        plugins: plugins(gpu),
        scales: { x: axis(gpu.axes.x, { stacked: true }), y: moneyAxis(gpu.axes.y, { stacked: true }) }
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
