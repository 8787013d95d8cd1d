// Live job progress over websockets. No framework, no CDN: served from static/.
(function () {
  "use strict";

  var TERMINAL = { succeeded: 1, failed: 1, canceled: 1 };

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

  // "1 h 2 min", "3 min 5 s", "42 s" (as Job.duration_text on the server); "—" when unknown.
  function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined || seconds === "" || !isFinite(seconds)) return "—";
    seconds = Math.max(0, Math.round(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h) return h + " h " + m + " min";
    return (m ? m + " min " : "") + s + " s";
  }
  var formatEta = formatSeconds;

  function clock(unixSeconds) {
    var d = new Date(unixSeconds * 1000);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map(function (n) { return (n < 10 ? "0" : "") + n; }).join(":");
  }

  // Elements with data-since (unix seconds) show the time elapsed since then, every second, until their
  // data-until is set (the job ended).
  function tickElapsed() {
    document.querySelectorAll("[data-since]").forEach(function (el) {
      var since = Number(el.dataset.since);
      if (!el.dataset.since || !since) return;
      var until = el.dataset.until ? Number(el.dataset.until) : Date.now() / 1000;
      el.textContent = formatSeconds(until - since);
    });
  }
  setInterval(tickElapsed, 1000);

  // A running job that has reported no percentage yet (an upload check, a render before its first frame)
  // shows an indeterminate bar: moving, no number. The first percentage, or the end, makes it determinate.
  function setProgress(root, jobId, progress, status) {
    var el = root.querySelector('[data-progress-for="' + jobId + '"]');
    if (!el) return;
    if (status && status !== "running") el.classList.remove("indeterminate");
    if (progress === undefined || progress === null) return;
    var pct = Math.round(progress * 100);
    if (pct > 0 || (status && status !== "running")) el.classList.remove("indeterminate");
    el.setAttribute("aria-valuenow", pct);
    el.removeAttribute("aria-valuetext");
    el.querySelector(".bar").style.width = pct + "%";
    el.querySelector(".pct").textContent = el.classList.contains("indeterminate") ? "" : pct + "%";
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
    if (msg.stage !== undefined) setField(root, "stage", msg.stage_label || msg.stage);
    if (msg.stage_since !== undefined) {
      var since = root.querySelector('[data-field="stage-elapsed"]');
      if (since) since.dataset.since = msg.stage_since || "";
      if (since && !msg.stage_since) since.textContent = "—";
    }
    if (msg.progress !== undefined || msg.status) setProgress(root, jobId, msg.progress, msg.status);
    if (msg.eta_seconds !== undefined) {
      var eta = setField(root, "eta", msg.status && TERMINAL[msg.status] ? "—" : formatEta(msg.eta_seconds));
      if (eta) eta.dataset.seconds = msg.eta_seconds === null ? "" : msg.eta_seconds;
    }
    if (msg.status) {
      var elapsed = root.querySelector('[data-field="elapsed"]');
      if (elapsed && msg.started_at) elapsed.dataset.since = Date.parse(msg.started_at) / 1000;
      if (elapsed && msg.finished_at) elapsed.dataset.until = Date.parse(msg.finished_at) / 1000;
      var stageElapsed = root.querySelector('[data-field="stage-elapsed"]');
      if (stageElapsed && TERMINAL[msg.status]) stageElapsed.dataset.until = (msg.finished_at ? Date.parse(msg.finished_at) : Date.now()) / 1000;
      tickElapsed();
    }
    if (msg.node) setField(root, "node", msg.node + (msg.gpu ? ":" + msg.gpu : ""));
    if (msg.metrics) {
      setField(root, "metrics", Object.keys(msg.metrics).map(function (k) { return k + "=" + msg.metrics[k]; }).join(" "));
    }
  }

  // A progress bar's redraw: "Training progress:  45%|████▌     | 3600/7999 [12:34<15:20, …]" or without
  // the |…| body ("100% 550/550 [00:20<00:00, …]"): what comes before the percentage, n and total.
  var BAR = /^(.*?)\s*\d{1,3}%(?:\|[^|]*\|)?\s*(\d+)\/(\d+)/;

  // The log as a person reads it: each line with the time it arrived (when known), and a progress bar's
  // redraws collapsed into one line at its last state, kept below the lines printed while it ran (as a
  // terminal shows tqdm). A bar that reached its total is closed: the next one gets a line of its own.
  // The raw log is the download link's.
  function LogView(el) {
    this.el = el; this.shown = 0; this.marks = []; this.open = {};
  }
  LogView.prototype.reset = function (first, marks) {
    this.el.textContent = ""; this.shown = first - 1; this.marks = marks || []; this.open = {};
  };
  LogView.prototype.timeOf = function (number) {
    var at = null;
    for (var i = 0; i < this.marks.length && this.marks[i][0] <= number; i++) at = this.marks[i][1];
    return at;
  };
  LogView.prototype.row = function (text, when) {
    var line = document.createElement("div"), time = document.createElement("time"), span = document.createElement("span");
    line.className = "line";
    time.textContent = when ? clock(when) : "";
    if (when) time.dateTime = new Date(when * 1000).toISOString();
    span.className = "text"; span.textContent = text;
    line.appendChild(time); line.appendChild(span);
    return line;
  };
  LogView.prototype.append = function (first, lines, at, marks) {
    if (first <= this.shown) { lines = lines.slice(this.shown + 1 - first); first = this.shown + 1; }
    if (!lines.length) return;
    if (marks && marks.length) {  // the stored marks (lines fetched from the database), then the live ones after them
      var last = marks[marks.length - 1][0];
      this.marks = marks.concat(this.marks.filter(function (m) { return m[0] > last; }));
    }
    if (at) this.marks.push([first, at]);
    var el = this.el, stick = el.scrollTop + el.clientHeight >= el.scrollHeight - 20, self = this;
    lines.forEach(function (text, index) {
      var when = self.timeOf(first + index), bar = BAR.exec(text), key = bar && bar[1] + "|" + bar[3];
      var row = bar && self.open[key];
      if (row) {
        row.querySelector(".text").textContent = text;
        row.dataset.redraws = Number(row.dataset.redraws) + 1;
        row.title = row.dataset.redraws + " redraws of this progress bar, shown at their last state";
        if (when) row.querySelector("time").textContent = clock(when);
      } else {
        row = self.row(text, when);
        if (bar) { row.dataset.redraws = 1; self.open[key] = row; }
      }
      el.appendChild(row);  // a redrawn bar moves below what was printed meanwhile
      if (bar && Number(bar[2]) >= Number(bar[3])) delete self.open[key];
    });
    this.shown += lines.length;
    if (stick) el.scrollTop = el.scrollHeight;
  };

  // onStatus(status), if given, hears every status change (a page can reload when the job ends).
  function watchJob(root, logEl, onStatus) {
    var jobId = root.dataset.job, count = document.getElementById("log-count"), log = new LogView(logEl);
    function counted() {
      if (!count) return;
      var rows = logEl.querySelectorAll(".line").length;
      count.textContent = "(" + log.shown + " lines" + (rows < log.shown ? ", " + rows + " shown: progress bars at their last state" : "") + ")";
    }
    connect("/ws/jobs/" + jobId + "/", function (msg) {
      if (msg.type === "snapshot") {
        log.reset(msg.log_first, msg.log_times);
        log.append(msg.log_first, msg.log);
        counted();
      } else if (msg.type === "log") {
        log.append(msg.first, msg.lines, msg.at, msg.log_times);
        counted();
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
  // options.refreshed(): run after each refresh (charts, sockets of the new parts); options.progressed(msg):
  // sees every message of the person's jobs, and returns "refresh" when the page's live parts must be
  // drawn again by the server (e.g. a stage table whose job moved on).
  function watchDashboard(table, options) {
    options = options || {};
    var rootId = table && table.id, timer = null;
    function root() { return (rootId && document.getElementById(rootId)) || table; }
    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(function () { refreshLive(options.refreshed); }, 250);
    }
    connect("/ws/jobs/", function (msg) {
      // The job's rows: in this table, and in any other table of the page marked data-job-rows.
      var selector = 'tr[data-job="' + msg.job + '"]', rows = [];
      if (root()) rows = Array.prototype.slice.call(root().querySelectorAll(selector));
      document.querySelectorAll("table[data-job-rows] " + selector).forEach(function (row) {
        if (rows.indexOf(row) < 0) rows.push(row);
      });
      rows.forEach(function (row) { applyState(row, msg.job, msg); });
      if (options.progressed && options.progressed(msg) === "refresh") schedule();
      if (rows.length) {
        if (msg.type === "status" && TERMINAL[msg.status]) schedule();
      } else if (msg.type === "status" && (!options.match || options.match(msg))) {
        schedule();
      }
    });
  }

  window.Talkforge = Object.assign(window.Talkforge || {}, {
    watchJob: watchJob, watchDashboard: watchDashboard, refreshLive: refreshLive,
    formatSeconds: formatSeconds, tickElapsed: tickElapsed,
  });
})();
