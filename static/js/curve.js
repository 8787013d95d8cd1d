// Line charts as SVG, with axes a person can read: the horizontal axis in its unit with ticks, a left axis
// for one series and a right axis for another (each on its own scale and unit: PSNR in dB, SSIM 0–1, loss),
// and vertical marks where a training hands over from one stage to the next. Talkforge.curve draws a
// training's loss and PSNR (new points arrive live over the job's websocket); Talkforge.chart the quality
// figures across checkpoints or frames.
(function () {
  "use strict";
  window.Talkforge = window.Talkforge || {};
  var NS = "http://www.w3.org/2000/svg";
  var WIDTH = 640, HEIGHT = 230, PAD = {left: 58, right: 58, top: 26, bottom: 42};
  var TRAINING = {
    left: {key: "loss", label: "loss", colour: "#c2410c"},
    right: {key: "psnr", label: "PSNR (dB)", colour: "#3451b2"},
  };

  function el(name, attrs, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // About `count` round steps (1, 2 or 5 × 10^k, at least `minStep`) covering lo..hi.
  function ticks(lo, hi, count, minStep) {
    if (!(hi > lo)) { var pad = Math.abs(lo) * 0.05 || 1; lo -= pad; hi += pad; }
    var raw = (hi - lo) / count, power = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * power; }).find(function (s) { return s >= raw; });
    if (minStep && step < minStep) step = minStep;
    var first = Math.floor(lo / step) * step, last = Math.ceil(hi / step) * step, out = [];
    for (var v = first; v <= last + step / 2; v += step) out.push(Number(v.toPrecision(12)));
    return {lo: first, hi: last, values: out, step: step};
  }

  function fmt(value, step) {
    if (Math.abs(value) >= 10000) return (value / 1000).toFixed(step >= 1000 ? 0 : 1) + "k";
    var digits = Math.max(0, -Math.floor(Math.log10(step)));
    return value.toFixed(Math.min(digits, 4));
  }

  // options: x (key), xLabel, xOf(point) → number (default point[x]), xRange [lo, hi] (fixed),
  // left / right {key, label, colour}, marks [{at, label, note}], describe (the chart's name for aria).
  function plot(svg, points, options) {
    var x = options.x, xOf = options.xOf || function (p) { return p[x]; };
    var inner = {w: WIDTH - PAD.left - PAD.right, h: HEIGHT - PAD.top - PAD.bottom};
    svg.setAttribute("viewBox", "0 0 " + WIDTH + " " + HEIGHT);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.appendChild(el("title", {}, options.describe || ""));
    var xs = points.map(xOf).filter(function (v) { return typeof v === "number" && isFinite(v); });
    var xr = options.xRange || [Math.min.apply(null, xs), Math.max.apply(null, xs)];
    var xt = ticks(xr[0], xr[1], 6, 1);  // iterations and frames are counted: whole ticks
    if (options.xRange) { xt.lo = xr[0]; xt.hi = xr[1]; xt.values = xt.values.filter(function (v) { return v >= xr[0] && v <= xr[1]; }); }
    var px = function (v) { return PAD.left + ((v - xt.lo) / ((xt.hi - xt.lo) || 1)) * inner.w; };
    var axes = el("g", {class: "axes"});
    svg.appendChild(axes);
    axes.appendChild(el("line", {x1: PAD.left, x2: PAD.left + inner.w, y1: PAD.top + inner.h, y2: PAD.top + inner.h, class: "axis"}));
    xt.values.forEach(function (v) {
      axes.appendChild(el("line", {x1: px(v), x2: px(v), y1: PAD.top + inner.h, y2: PAD.top + inner.h + 4, class: "axis"}));
      axes.appendChild(el("text", {x: px(v), y: PAD.top + inner.h + 16, "text-anchor": "middle", class: "tick", "data-axis": "x"}, fmt(v, xt.step)));
    });
    axes.appendChild(el("text", {x: PAD.left + inner.w / 2, y: HEIGHT - 6, "text-anchor": "middle", class: "axis-label", "data-axis": "x"}, options.xLabel));

    [["left", options.left], ["right", options.right]].forEach(function (pair) {
      var side = pair[0], series = pair[1];
      if (!series) return;
      var values = points.filter(function (p) { return typeof p[series.key] === "number" && typeof xOf(p) === "number"; });
      if (values.length < 1) return;
      var yt = ticks(Math.min.apply(null, values.map(function (p) { return p[series.key]; })),
                     Math.max.apply(null, values.map(function (p) { return p[series.key]; })), 4);
      var py = function (v) { return PAD.top + inner.h - ((v - yt.lo) / ((yt.hi - yt.lo) || 1)) * inner.h; };
      var edge = side === "left" ? PAD.left : PAD.left + inner.w, dir = side === "left" ? -1 : 1;
      axes.appendChild(el("line", {x1: edge, x2: edge, y1: PAD.top, y2: PAD.top + inner.h, class: "axis", stroke: series.colour}));
      yt.values.forEach(function (v) {
        axes.appendChild(el("line", {x1: edge, x2: edge + 4 * dir, y1: py(v), y2: py(v), stroke: series.colour}));
        axes.appendChild(el("text", {x: edge + 7 * dir, y: py(v) + 4, "text-anchor": side === "left" ? "end" : "start",
          fill: series.colour, class: "tick", "data-axis": side}, fmt(v, yt.step)));
      });
      axes.appendChild(el("text", {x: side === "left" ? 4 : WIDTH - 4, y: 14, "text-anchor": side === "left" ? "start" : "end",
        fill: series.colour, class: "axis-label", "data-axis": side}, series.label));
      var path = values.map(function (p) { return px(xOf(p)).toFixed(1) + "," + py(p[series.key]).toFixed(1); }).join(" ");
      if (values.length === 1) path += " " + path;
      svg.appendChild(el("polyline", {points: path, fill: "none", stroke: series.colour, "stroke-width": "1.8", "data-series": series.key}));
    });

    (options.marks || []).forEach(function (mark) {
      if (!(mark.at > xt.lo && mark.at < xt.hi)) return;
      var g = el("g", {class: "mark", "data-mark": mark.label});
      g.appendChild(el("line", {x1: px(mark.at), x2: px(mark.at), y1: PAD.top, y2: PAD.top + inner.h, "stroke-dasharray": "4 3", class: "mark-line"}));
      g.appendChild(el("text", {x: px(mark.at) + 4, y: PAD.top + 10, class: "mark-label"}, mark.label));
      if (mark.note) g.appendChild(el("title", {}, mark.note));
      svg.appendChild(g);
    });
  }

  window.Talkforge.plot = plot;

  // The quality figures: options.x ("iteration" or "frame"), options.xLabel; PSNR on the left, SSIM on the right.
  window.Talkforge.chart = function (svg, points, options) {
    options = options || {};
    plot(svg, points || [], {
      x: options.x, xLabel: options.xLabel || options.x, describe: svg.getAttribute("aria-label"),
      left: {key: "psnr", label: "PSNR (dB)", colour: "#3451b2"},
      right: {key: "ssim", label: "SSIM (0–1)", colour: "#18794e"},
    });
  };

  // A training's loss (left) and PSNR (right) against its iterations. axis: {total, phases: [{stage, label,
  // iterations, note}]} (avatars/views.py): progress 0..1 of the whole training becomes iterations counted
  // across its stages, and each hand-over between stages is marked.
  window.Talkforge.curve = function (svg, points, liveJobId, axis) {
    points = points || [];
    axis = axis || {total: 0, phases: []};
    var total = axis.total || 0, marks = [], done = 0;
    axis.phases.forEach(function (phase, index) {
      if (index > 0) marks.push({at: done, label: axis.phases[index - 1].stage + " → " + phase.stage, note: phase.note});
      done += phase.iterations;
    });
    var options = {
      x: "progress", xOf: total ? function (p) { return p.progress * total; } : function (p) { return p.progress * 100; },
      xRange: total ? [0, total] : [0, 100],
      xLabel: total ? "iteration (" + axis.phases.map(function (p) { return p.stage; }).join(", then ") + ")" : "progress (%)",
      left: TRAINING.left, right: TRAINING.right, marks: marks, describe: svg.getAttribute("aria-label"),
    };
    plot(svg, points, options);
    if (!liveJobId) return;
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + "/ws/jobs/" + liveJobId + "/");
    ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.type !== "progress" || !msg.metrics) return;
      var point = {progress: msg.progress};
      ["loss", "psnr"].forEach(function (key) {
        if (typeof msg.metrics[key] === "number") point[key] = msg.metrics[key];
      });
      points.push(point);
      plot(svg, points, options);
    };
  };
})();
