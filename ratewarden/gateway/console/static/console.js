/* The console's charts: each element `.chart[data-src][data-series]` becomes a uPlot chart of that
 * series of the JSON at data-src, redrawn every 5 s (the overview's decisions and flags, a subject's
 * windows: requests and users per analytics window). Loaded as a file (the CSP forbids inline scripts);
 * the page's live numbers are htmx fragments and need no script of their own. */
(function () {
  "use strict";
  var COLOURS = ["#2a7", "#e90", "#d33", "#36c", "#939", "#0aa", "#777", "#a52"];
  var REFRESH_MS = 5000;
  var AXIS = { decisions: "per second", flags: "flags", windows: "per window" };

  function width(el) { return Math.max(320, el.clientWidth || 800); }

  function seriesOf(block, kind) {
    var names = Object.keys(block).filter(function (k) { return k !== "t"; });
    var data = [block.t].concat(names.map(function (k) { return block[k]; }));
    var series = [{ label: kind === "decisions" ? "time" : "window" }].concat(names.map(function (name, i) {
      return { label: name, stroke: COLOURS[i % COLOURS.length], width: 1.5, points: { show: kind !== "decisions" } };
    }));
    return { names: names.join(","), data: data, series: series };
  }

  function draw(el) {
    var kind = el.getAttribute("data-series");
    var chart = null, shape = "";
    function refresh() {
      fetch(el.getAttribute("data-src"), { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (answer) { if (!answer.ok) { throw new Error(answer.status); } return answer.json(); })
        .then(function (body) {
          var block = body[kind];
          if (!block || !block.t || block.t.length === 0) {
            el.setAttribute("data-state", block ? "empty" : "unknown");
            return;
          }
          el.setAttribute("data-state", "drawn");
          var s = seriesOf(block, kind);
          if (chart && shape === s.names) { chart.setData(s.data); return; }
          if (chart) { chart.destroy(); }
          shape = s.names;
          chart = new uPlot({ width: width(el), height: 240, series: s.series,
                              axes: [{}, { label: AXIS[kind] || kind }] }, s.data, el);
        })
        .catch(function () { el.setAttribute("data-state", "error"); });
    }
    refresh();
    setInterval(refresh, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (typeof uPlot === "undefined") { return; }
    Array.prototype.forEach.call(document.querySelectorAll(".chart[data-src]"), draw);
  });
})();
