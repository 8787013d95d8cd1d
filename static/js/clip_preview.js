// The avatar upload: the chosen clip plays here before it is sent; "Keep from here" / "Keep up to here"
// fill the trim fields from the player, and the page says how long the kept part is against the limits.
// Nothing is cut here: the server keeps that part when it converts the video (avatars/media.py normalise).
(function () {
  "use strict";
  window.Talkforge = window.Talkforge || {};

  function clock(seconds) {
    var m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
    return m + " min " + (s < 10 ? "0" : "") + s + " s";
  }

  window.Talkforge.clipPreview = function (form, limits) {
    var input = form.querySelector("[name=video]"), box = document.getElementById("clip-preview");
    if (!input || !box) return;
    var video = box.querySelector("video"), length = document.getElementById("clip-length");
    var warning = document.getElementById("clip-warning");
    var start = form.querySelector("[name=trim_start]"), end = form.querySelector("[name=trim_end]");
    var url = null;
    function kept() {
      var from = parseFloat(start.value) || 0, to = parseFloat(end.value);
      if (isNaN(to) || to > video.duration) to = video.duration;
      return Math.max(0, to - from);
    }
    function show() {
      if (!isFinite(video.duration)) return;
      var seconds = kept();
      length.textContent = "Clip: " + clock(video.duration) + (seconds < video.duration ? "; keeping " + clock(seconds) : "");
      var problem = "";
      if (seconds < limits.minSeconds) problem = "The kept part is shorter than the " + Math.round(limits.minSeconds) + " s needed.";
      else if (seconds > limits.maxSeconds) problem = "The kept part is longer than " + Math.round(limits.maxSeconds / 60) + " minutes: keep a shorter part.";
      warning.textContent = problem;
      warning.hidden = !problem;
    }
    input.addEventListener("change", function () {
      if (url) URL.revokeObjectURL(url);
      var file = input.files && input.files[0];
      box.hidden = !file;
      if (!file) return;
      url = URL.createObjectURL(file);
      video.src = url;
    });
    video.addEventListener("loadedmetadata", show);
    document.getElementById("keep-from").addEventListener("click", function () { start.value = video.currentTime.toFixed(1); show(); });
    document.getElementById("keep-to").addEventListener("click", function () { end.value = video.currentTime.toFixed(1); show(); });
    start.addEventListener("input", show);
    end.addEventListener("input", show);
  };
})();
