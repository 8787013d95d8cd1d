// Live job progress over websockets. No framework, no CDN: served from static/.
(function () {
  "use strict";

  function socketUrl(path) {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + location.host + path;
  }

  // Reconnects with backoff; a new connection starts with a fresh snapshot, so nothing is missed.
  function connect(path, onMessage) {
    var delay = 500;
    function open() {
      var ws = new WebSocket(socketUrl(path));
      ws.onmessage = function (e) { delay = 500; onMessage(JSON.parse(e.data)); };
      ws.onclose = function (e) {
        if (e.code === 4404 || e.code === 4401) return;  // not yours, or not signed in: don't retry
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      };
    }
    open();
  }

  function formatEta(seconds) {
    if (seconds === null || seconds === undefined || seconds === "") return "—";
    seconds = Math.round(seconds);
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return (m ? m + " min " : "") + s + " s";
  }

  function setProgress(root, jobId, progress) {
    var el = root.querySelector('[data-progress-for="' + jobId + '"]');
    if (!el || progress === undefined || progress === null) return;
    var pct = Math.round(progress * 100);
    el.setAttribute("aria-valuenow", pct);
    el.querySelector(".bar").style.width = pct + "%";
    el.querySelector(".pct").textContent = pct + "%";
  }

  function setField(root, name, value) {
    var el = root.querySelector('[data-field="' + name + '"]');
    if (el && value !== undefined) el.textContent = value === null ? "" : value;
    return el;
  }

  function applyState(root, jobId, msg) {
    if (msg.status) {
      var st = setField(root, "status", msg.status);
      if (st) st.className = "status status-" + msg.status;
    }
    if (msg.stage !== undefined) setField(root, "stage", msg.stage);
    if (msg.progress !== undefined) setProgress(root, jobId, msg.progress);
    if (msg.eta_seconds !== undefined) setField(root, "eta", formatEta(msg.eta_seconds));
    if (msg.node) setField(root, "node", msg.node + (msg.gpu ? ":" + msg.gpu : ""));
    if (msg.metrics) {
      setField(root, "metrics", Object.keys(msg.metrics).map(function (k) { return k + "=" + msg.metrics[k]; }).join(" "));
    }
  }

  var TERMINAL = { succeeded: 1, failed: 1, canceled: 1 };

  // onStatus(status), if given, hears every status change (a page can reload when the job ends).
  function watchJob(root, logEl, onStatus) {
    var jobId = root.dataset.job, shown = 0, count = document.getElementById("log-count");
    function appendLines(first, lines) {
      if (first !== shown + 1) { if (first <= shown) { lines = lines.slice(shown + 1 - first); } }
      if (!lines.length) return;
      var stick = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 20;
      logEl.appendChild(document.createTextNode(lines.join("\n") + "\n"));
      shown += lines.length;
      if (count) count.textContent = "(" + shown + " lines)";
      if (stick) logEl.scrollTop = logEl.scrollHeight;
    }
    connect("/ws/jobs/" + jobId + "/", function (msg) {
      if (msg.type === "snapshot") {
        logEl.textContent = ""; shown = msg.log_first - 1;
        appendLines(msg.log_first, msg.log);
      } else if (msg.type === "log") {
        appendLines(msg.first, msg.lines);
      }
      applyState(root, jobId, msg);
      if (msg.status) {
        var err = root.querySelector('[data-field="error"]');
        if (err) { err.textContent = msg.error || ""; err.hidden = !msg.error; }
        var cancel = document.getElementById("cancel-form");
        if (cancel) cancel.hidden = !!TERMINAL[msg.status];
        if (onStatus) onStatus(msg.status);
      }
    });
  }

  // Swaps the page's [data-live] parts (matched by id) for the server's current rendering of the same
  // page: what a reload would show, without one (scroll, open forms and playing videos stay). A video
  // already on the page is kept (same src) so it goes on playing.
  function refreshLive(after) {
    return fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { if (!response.ok) throw new Error(response.status); return response.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (old) {
          var next = fresh.getElementById(old.id);
          if (!next) return;
          next = document.importNode(next, true);
          next.querySelectorAll("video[src]").forEach(function (video) {
            var kept = Array.prototype.find.call(old.querySelectorAll("video[src]"), function (v) {
              return v.getAttribute("src") === video.getAttribute("src");
            });
            if (kept) video.replaceWith(kept);
          });
          old.replaceWith(next);
        });
        if (after) after();
      })
      .catch(function () { /* the next event tries again */ });
  }

  // Rows of jobs (tr[data-job]) follow their job's progress; when a job ends, or one this page does not
  // show yet starts (a pipeline's next step), the page's live parts are refreshed. options.match(msg):
  // whether a job the page does not show concerns it (default: every job of the person);
  // options.refreshed(): run after each refresh (charts, sockets of the new parts).
  function watchDashboard(table, options) {
    options = options || {};
    var rootId = table && table.id, timer = null;
    function root() { return (rootId && document.getElementById(rootId)) || table; }
    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(function () { refreshLive(options.refreshed); }, 250);
    }
    connect("/ws/jobs/", function (msg) {
      var row = root() && root().querySelector('tr[data-job="' + msg.job + '"]');
      if (row) {
        applyState(row, msg.job, msg);
        if (msg.type === "status" && TERMINAL[msg.status]) schedule();
      } else if (msg.type === "status" && (!options.match || options.match(msg))) {
        schedule();
      }
    });
  }

  window.Talkforge = Object.assign(window.Talkforge || {}, {
    watchJob: watchJob, watchDashboard: watchDashboard, refreshLive: refreshLive,
  });
})();
