// Uploads a form with XMLHttpRequest so the page can show how much has been sent.
(function () {
  "use strict";
  window.Talkforge = window.Talkforge || {};
  window.Talkforge.uploadWithProgress = function (form) {
    var bar = document.getElementById("upload-progress");
    var state = document.getElementById("upload-state");
    var errors = document.getElementById("upload-errors");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      errors.textContent = "";
      bar.hidden = false; state.hidden = false;
      state.textContent = "Uploading…";
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action || location.href);
      xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      xhr.upload.onprogress = function (e) {
        if (!e.lengthComputable) return;
        var pct = Math.round(100 * e.loaded / e.total);
        bar.setAttribute("aria-valuenow", pct);
        bar.querySelector(".bar").style.width = pct + "%";
        bar.querySelector(".pct").textContent = pct + "%";
        if (pct === 100 && !checking) startChecking();
      };
      // Sent: the server converts and checks the video, with no percentage to report. The bar moves without
      // a number and the seconds count, so a wait of half a minute never looks like a hang.
      var checking = null;
      function startChecking() {
        var began = Date.now(), words = form.dataset.uploaded || "Uploaded. Converting to 25 fps and checking the video…";
        bar.classList.add("indeterminate");
        bar.setAttribute("aria-valuetext", "sent; checking the video");
        bar.querySelector(".pct").textContent = "";
        state.textContent = words;
        checking = setInterval(function () {
          state.textContent = words + " " + Math.round((Date.now() - began) / 1000) + " s";
        }, 1000);
      }
      function stopChecking() {
        clearInterval(checking); checking = null;
        bar.classList.remove("indeterminate");
        bar.removeAttribute("aria-valuetext");
      }
      xhr.onload = function () {
        var body = {};
        try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON: shown below */ }
        if (xhr.status === 201 && body.redirect) { location.href = body.redirect; return; }
        stopChecking();
        button.disabled = false; state.hidden = true;
        var list = body.errors || {"": ["The upload failed (" + xhr.status + "). Try again."]};
        Object.keys(list).forEach(function (field) {
          list[field].forEach(function (message) {
            var item = document.createElement("li");
            item.textContent = (field && field !== "__all__" ? field + ": " : "") + message;
            errors.appendChild(item);
          });
        });
      };
      xhr.onerror = function () {
        stopChecking();
        button.disabled = false;
        state.textContent = "The connection broke during the upload. Try again.";
      };
      xhr.send(new FormData(form));
    });
  };
})();
