// Line charts as SVG: loss and PSNR across a training (new points arrive live over the job's websocket),
// and the quality figures across checkpoints or frames (Talkforge.chart).
(function () {
  "use strict";
  window.Talkforge = window.Talkforge || {};
  var SERIES = [["loss", "#b42318"], ["psnr", "#3451b2"]];

  // x: the key on the horizontal axis ("progress" runs 0..1; any other key spans its own min..max).
  function draw(svg, points, series, x) {
    series = series || SERIES;
    x = x || "progress";
    var width = 600, height = 180, pad = 24;
    var xs = points.map(function (p) { return p[x]; }).filter(function (v) { return typeof v === "number"; });
    var xlo = x === "progress" ? 0 : Math.min.apply(null, xs), xhi = x === "progress" ? 1 : Math.max.apply(null, xs);
    var xspan = xhi - xlo || 1;
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    series.forEach(function (entry, row) {
      var key = entry[0], colour = entry[1];
      var values = points.filter(function (p) { return typeof p[key] === "number" && typeof p[x] === "number"; });
      if (values.length < 2) return;
      var lo = Math.min.apply(null, values.map(function (p) { return p[key]; }));
      var hi = Math.max.apply(null, values.map(function (p) { return p[key]; }));
      var span = hi - lo || 1;
      var path = values.map(function (p) {
        var px = pad + ((p[x] - xlo) / xspan) * (width - 2 * pad);
        var py = height - pad - ((p[key] - lo) / span) * (height - 2 * pad);
        return px.toFixed(1) + "," + py.toFixed(1);
      }).join(" ");
      var line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      line.setAttribute("points", path);
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", colour);
      line.setAttribute("stroke-width", "1.5");
      line.setAttribute("data-series", key);
      svg.appendChild(line);
      var label = document.createElementNS("http://www.w3.org/2000/svg", "text");
      label.setAttribute("x", pad);
      label.setAttribute("y", 14 + row * 14);
      label.setAttribute("fill", colour);
      label.setAttribute("font-size", "11");
      label.textContent = key + " " + values[values.length - 1][key].toFixed(4) + " (" + lo.toFixed(3) + "–" + hi.toFixed(3) + ")";
      svg.appendChild(label);
    });
  }

  window.Talkforge.chart = function (svg, points, options) {
    options = options || {};
    draw(svg, points || [], options.series, options.x);
  };

  window.Talkforge.curve = function (svg, points, liveJobId) {
    points = points || [];
    draw(svg, points);
    if (!liveJobId) return;
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + "/ws/jobs/" + liveJobId + "/");
    ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.type !== "progress" || !msg.metrics) return;
      var point = {progress: msg.progress};
      SERIES.forEach(function (entry) {
        if (typeof msg.metrics[entry[0]] === "number") point[entry[0]] = msg.metrics[entry[0]];
      });
      points.push(point);
      draw(svg, points);
    };
  };
})();
