// Preprocessing's stage table follows its job without a rule of its own: when the job's stage or status
// differs from the one the server drew the table for (data-stage, data-status), the page's live parts are
// drawn again by the server (avatars/views.py _preprocessing_stages holds the one rule). The person's jobs
// stream sends progress after the database has the new stage (jobs/runner.py Reporter.flush), so the
// refreshed page shows it.
(function () {
  "use strict";
  window.Talkforge = window.Talkforge || {};
  window.Talkforge.stagesMovedOn = function (msg) {
    var table = document.getElementById("stages");
    if (!table || !table.dataset.liveJob || String(msg.job) !== table.dataset.liveJob) return false;
    return Boolean((msg.stage && msg.stage !== table.dataset.stage) ||
                   (msg.status && msg.status !== table.dataset.status));
  };
})();
