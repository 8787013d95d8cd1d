// The new-video form: the checkpoint list shows only the chosen avatar's checkpoints, and the two sources
// (an audio file, or a text and its voice) show only the chosen one's fields. Without JavaScript every
// field stays; the server checks both rules anyway.
(function () {
  "use strict";
  window.Talkforge = window.Talkforge || {};

  function row(field) { return field ? field.closest("p") || field : null; }

  window.Talkforge.videoForm = function (form) {
    if (!form) return;
    var avatar = form.querySelector("[name=avatar]"), checkpoint = form.querySelector("[name=checkpoint]");
    function filterCheckpoints() {
      if (!avatar || !checkpoint) return;
      Array.prototype.forEach.call(checkpoint.options, function (option) {
        var mine = !option.dataset.avatar || option.dataset.avatar === avatar.value;
        option.hidden = option.disabled = !mine;
        if (!mine && option.selected) checkpoint.value = "";
      });
    }
    var sources = form.querySelectorAll("[name=source]");
    var fields = {audio: [form.querySelector("[name=audio]")],
                  text: [form.querySelector("[name=text]"), form.querySelector("[name=voice]")]};
    function showSource() {
      var chosen = form.querySelector("[name=source]:checked");
      Object.keys(fields).forEach(function (source) {
        fields[source].forEach(function (field) {
          var element = row(field);
          if (element) element.hidden = !!chosen && chosen.value !== source;
        });
      });
    }
    if (avatar) avatar.addEventListener("change", filterCheckpoints);
    Array.prototype.forEach.call(sources, function (radio) { radio.addEventListener("change", showSource); });
    filterCheckpoints();
    showSource();
  };
})();
