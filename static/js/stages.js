// Preprocessing's stage table, live: the job's stage marks earlier rows done and its own row running (or
// failed, or canceled, when the job ends there); success marks every row done.
(function () {
  "use strict";
  window.Talkforge = window.Talkforge || {};
  var ENDED = {failed: "failed", canceled: "canceled"};

  function mark(table, stage, status) {
    var rows = Array.prototype.slice.call(table.querySelectorAll("tr[data-stage]"));
    var current = rows.findIndex(function (row) { return row.dataset.stage === stage; });
    if (status !== "succeeded" && current < 0) return;
    rows.forEach(function (row, index) {
      var state = "pending";
      if (status === "succeeded" || index < current) state = "done";
      else if (index === current) state = ENDED[status] || "running";
      var cell = row.querySelector('[data-field="state"]');
      cell.textContent = state;
      cell.className = "status status-" + state;
    });
  }

  window.Talkforge.stages = function (table) {
    if (!table || !table.dataset.liveJob) return;
    var stage = null, status = "running";
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + "/ws/jobs/" + table.dataset.liveJob + "/");
    ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.stage) stage = msg.stage;
      if (msg.status) status = msg.status;
      if (msg.type === "snapshot" || msg.type === "progress" || msg.type === "status") mark(table, stage, status);
    };
  };
})();
