// Notices on every page: when a training or a video the person started ends, a note with a link to it
// (jobs/notify.py sends them on the person's jobs stream). Announced to screen readers (role=status).
(function () {
  "use strict";
  function start() {
    var box = document.getElementById("notices");
    if (!box || !window.WebSocket) return;
    var delay = 1000;
    function open() {
      var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/jobs/");
      ws.onmessage = function (event) {
        delay = 1000;
        var msg = JSON.parse(event.data);
        if (msg.type !== "notice") return;
        var note = document.createElement("p");
        note.className = "notice " + (msg.ok ? "ok" : "bad");
        var link = document.createElement("a");
        link.href = msg.url;
        link.textContent = msg.subject;
        note.appendChild(link);
        note.appendChild(document.createTextNode(" — " + msg.text + " "));
        var close = document.createElement("button");
        close.type = "button";
        close.className = "link";
        close.textContent = "Dismiss";
        close.addEventListener("click", function () { note.remove(); });
        note.appendChild(close);
        box.appendChild(note);
      };
      ws.onclose = function (e) {
        if (e.code === 4401) return;
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 15000);
      };
    }
    open();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
