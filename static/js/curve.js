// Loss and PSNR across a training, as an SVG chart; new points arrive live over the job's websocket.
(function () {
  "use strict";
  window.Talkforge = window.Talkforge || {};
  var SERIES = [["loss", "#b42318"], ["psnr", "#3451b2"]];

  function draw(svg, points) {
    var width = 600, height = 180, pad = 24;
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    SERIES.forEach(function (entry, row) {
      var key = entry[0], colour = entry[1];
      var values = points.filter(function (p) { return typeof p[key] === "number"; });
      if (values.length < 2) return;
      var lo = Math.min.apply(null, values.map(function (p) { return p[key]; }));
      var hi = Math.max.apply(null, values.map(function (p) { return p[key]; }));
      var span = hi - lo || 1;
      var path = values.map(function (p) {
        var x = pad + p.progress * (width - 2 * pad);
        var y = height - pad - ((p[key] - lo) / span) * (height - 2 * pad);
        return x.toFixed(1) + "," + y.toFixed(1);
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
