/* A budget's charts, drawn with the vendored Chart.js (no network access at run time): the current
 * period's burn-down and the period history. The data comes from the page (json_script
 * "budget-chart-data", built by budgets/admin.py): amounts travel as exact decimal strings with their
 * words ("1,234.50 USD"); they become numbers here for drawing only, and the tooltips show the words.
 * The tables beside the charts hold the same numbers. */
(function () {
  "use strict";

  function rgba(hex, alpha) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + ((n >> 16) & 255) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }

  function money(currency) {
    var format = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
    return function (value) { return format.format(value) + " " + currency; };
  }

  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (!canvas) { return null; }
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options);
    var chart = new window.Chart(canvas, config);
    canvas.setAttribute("data-rendered", "1");
    return chart;
  }

  // How each kind of line looks: width, dashes, and what the legend draws for it.
  var STYLES = {
    actual: { borderWidth: 2.5, pointRadius: 0, pointHoverRadius: 4 },
    dashed: { borderWidth: 1.5, borderDash: [6, 4] },
    forecast: { borderWidth: 2, borderDash: [8, 4] },
    "band-low": { borderWidth: 0, ccNoTooltip: true },
    "band-high": { borderWidth: 0, fill: "-1" },
    threshold: { borderWidth: 1.5, borderDash: [2, 3] },
    limit: { borderWidth: 2 },
    now: { borderWidth: 1.5, borderDash: [3, 3] }
  };

  function burnDown(spec) {
    var tickLabels = {};
    spec.ticks.forEach(function (t) { tickLabels[t.x] = t.label; });
    var datasets = spec.series.map(function (s) {
      var style = STYLES[s.style] || {};
      return Object.assign({
        label: s.label,
        data: s.points.map(function (p) { return { x: p.x, y: Number(p.y), text: p.text, when: p.when }; }),
        borderColor: s.colour,
        backgroundColor: s.style === "band-high" ? rgba(s.colour, 0.15) : s.colour,
        fill: false,
        pointRadius: 0,
        pointHitRadius: 6,
        tension: 0,
        ccName: s.name,
        ccHidden: s.legend === false,
        ccStyle: s.style
      }, style);
    });
    var amount = money(spec.currency);
    return draw("budget-burn-down", {
      type: "line",
      data: { datasets: datasets },
      options: {
        interaction: { mode: "nearest", intersect: false },
        scales: {
          x: {
            type: "linear",
            min: spec.start,
            max: spec.end,
            title: { display: true, text: "date (" + spec.timeZone + ")" },
            afterBuildTicks: function (scale) { scale.ticks = spec.ticks.map(function (t) { return { value: t.x }; }); },
            ticks: { autoSkip: true, maxRotation: 0, callback: function (value) { return tickLabels[value] || ""; } }
          },
          y: {
            beginAtZero: true,
            max: spec.yMax === null ? undefined : Number(spec.yMax),
            title: { display: true, text: "spent this period (" + spec.currency + ")" },
            ticks: { callback: amount }
          }
        },
        plugins: {
          legend: {
            position: "bottom",
            labels: {
              usePointStyle: true,
              filter: function (item, data) { return !data.datasets[item.datasetIndex].ccHidden; },
              generateLabels: function (chart) {
                return window.Chart.defaults.plugins.legend.labels.generateLabels(chart).map(function (item) {
                  var style = chart.data.datasets[item.datasetIndex].ccStyle;
                  item.pointStyle = style === "band-high" ? "rect" : "line";
                  if (style === "band-high") { item.fillStyle = rgba(chart.data.datasets[item.datasetIndex].borderColor, 0.3); }
                  return item;
                });
              }
            }
          },
          tooltip: {
            filter: function (item) { return !item.dataset.ccNoTooltip; },
            callbacks: {
              title: function (items) { return items.length ? items[0].raw.when : ""; },
              label: function (item) {
                var name = item.dataset.ccName;
                return name + ": " + item.raw.text;
              }
            }
          }
        }
      }
    });
  }

  function history(spec) {
    var spentIndex = spec.bars.length - 1;
    var datasets = spec.bars.map(function (b) {
      return {
        label: b.label,
        stack: b.stack,
        data: b.points.map(function (p) { return Number(p.y); }),
        ccTexts: b.points.map(function (p) { return p.text; }),
        backgroundColor: b.colours,
        borderColor: b.colours,
        ccLegendColour: b.stack === "spent" ? "#495057" : b.colours[0]
      };
    });
    return draw("budget-history", {
      type: "bar",
      data: { labels: spec.labels, datasets: datasets },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, title: { display: true, text: "closed period" } },
          y: { stacked: true, beginAtZero: true, title: { display: true, text: "amount (" + spec.currency + ")" }, ticks: { callback: money(spec.currency) } }
        },
        plugins: {
          legend: {
            position: "bottom",
            onClick: function (event, item, legend) {
              if (item.ccLevel) { return; }
              window.Chart.defaults.plugins.legend.onClick.call(this, event, item, legend);
            },
            labels: {
              generateLabels: function (chart) {
                var items = chart.data.datasets.map(function (d, i) {
                  return { text: d.label, fillStyle: d.ccLegendColour, strokeStyle: d.ccLegendColour, lineWidth: 0, datasetIndex: i, hidden: !chart.isDatasetVisible(i) };
                });
                return items.concat(spec.levels.map(function (level) {
                  return { text: level.label, fillStyle: level.colour, strokeStyle: level.colour, lineWidth: 0, datasetIndex: spentIndex, ccLevel: true, hidden: false };
                }));
              }
            }
          },
          tooltip: {
            callbacks: {
              title: function (items) { return items.length ? spec.ranges[items[0].dataIndex] : ""; },
              label: function (item) { return item.dataset.label.split(" (")[0] + ": " + item.dataset.ccTexts[item.dataIndex]; }
            }
          }
        }
      }
    });
  }

  function start() {
    var node = document.getElementById("budget-chart-data");
    if (!node || !window.Chart) { return; }
    var data = JSON.parse(node.textContent);
    if (data.burnDown) { burnDown(data.burnDown); }
    if (data.history) { history(data.history); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
