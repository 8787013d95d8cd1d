// Recording a voice in the browser: the microphone's recording becomes the form's file, so the form sends
// it like an uploaded one (the server converts any audio format). Shows the time and a player to check it.
(function () {
  "use strict";
  window.Talkforge = window.Talkforge || {};

  window.Talkforge.voiceRecorder = function (form) {
    var input = form && form.querySelector("[name=recording]"), box = document.getElementById("voice-recorder");
    if (!input || !box || !window.MediaRecorder || !navigator.mediaDevices) return;
    var button = document.getElementById("record-voice"), time = document.getElementById("record-time");
    var player = box.querySelector("audio"), error = document.getElementById("record-error");
    var recorder = null, timer = null, started = 0;
    box.hidden = false;
    button.addEventListener("click", async function () {
      if (recorder) { recorder.stop(); return; }
      var stream;
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      } catch (e) {
        error.textContent = "The microphone cannot be used (" + e.message + "): upload a recording instead.";
        error.hidden = false;
        return;
      }
      error.hidden = true;
      var parts = [];
      recorder = new MediaRecorder(stream);
      recorder.ondataavailable = function (event) { if (event.data.size) parts.push(event.data); };
      recorder.onstop = function () {
        stream.getTracks().forEach(function (track) { track.stop(); });
        clearInterval(timer);
        recorder = null;
        button.textContent = "Record again";
        var type = parts[0] ? parts[0].type : "audio/webm";
        var file = new File(parts, "recording.webm", { type: type });
        var files = new DataTransfer();
        files.items.add(file);
        input.files = files.files;
        player.src = URL.createObjectURL(file);
        player.hidden = false;
      };
      recorder.start(250);
      started = Date.now();
      time.textContent = "0 s";
      timer = setInterval(function () { time.textContent = Math.round((Date.now() - started) / 1000) + " s"; }, 250);
      button.textContent = "Stop recording";
    });
  };
})();
