// The talk box of a conversation page: send a typed or recorded turn, follow the reply on the
// conversation's websocket (stages, the text token by token, each spoken sentence), play the sentences
// in order without gaps (Web Audio, each one scheduled at the end of the one before), stop the reply.
(function () {
  "use strict";
  const panel = document.getElementById("talk");
  if (!panel) return;
  const history = document.getElementById("history");
  const stage = document.getElementById("talk-stage");
  const form = document.getElementById("talk-form");
  const input = document.getElementById("talk-text");
  const recordButton = document.getElementById("talk-record");
  const stopButton = document.getElementById("talk-stop");
  const errorLine = document.getElementById("talk-error");
  const csrf = panel.querySelector("input[name=csrfmiddlewaretoken]").value;
  const STAGES = { asr: "Recognising what you said…", llm: "Thinking…" };

  // What the page did, for people reading the console and for the browser test.
  const state = (window.TalkforgeChat = { events: [], scheduled: [], replies: [] });
  let live = null; // the reply being made: {item, text, index, pending: Map(index → AudioBuffer)}
  let audio = null;
  let playAt = 0;

  function audioContext() {
    if (!audio) audio = new (window.AudioContext || window.webkitAudioContext)();
    if (audio.state === "suspended") audio.resume();
    return audio;
  }

  function bubble(role, text) {
    const empty = history.querySelector("li.empty");
    if (empty) empty.remove();
    const item = document.createElement("li");
    item.className = "turn turn-" + role;
    const who = document.createElement("strong");
    who.textContent = role === "user" ? "You" : panel.dataset.name;
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    item.append(who, " ", body);
    history.append(item);
    return item;
  }

  // The reply's bubble: made by the POST's answer or by its first event, whichever comes first.
  function ensureLive() {
    if (live) return live;
    live = { item: bubble("assistant", ""), index: 0, pending: new Map() };
    live.text = live.item.querySelector(".text");
    stopButton.disabled = false;
    return live;
  }

  // Sentences arrive in order, but their audio is fetched concurrently: play each only after the ones
  // before it, at the instant the previous one ends.
  async function chunkReady(event) {
    const reply = live;
    const response = await fetch("/chat/media/chunk/" + event.chunk + "/audio/", { credentials: "same-origin" });
    const buffer = await audioContext().decodeAudioData(await response.arrayBuffer());
    reply.pending.set(event.index, buffer);
    while (reply.pending.has(reply.index)) {
      schedule(reply.pending.get(reply.index), reply.index);
      reply.pending.delete(reply.index);
      reply.index += 1;
    }
  }

  function schedule(buffer, index) {
    const context = audioContext();
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    const at = Math.max(context.currentTime + 0.05, playAt);
    source.start(at);
    playAt = at + buffer.duration;
    state.scheduled.push({ index: index, at: at, duration: buffer.duration });
  }

  function finish(event) {
    stopButton.disabled = true;
    stage.textContent = "";
    state.replies.push(event);
    if (!live) return;
    if (event.status === "failed") {
      const error = document.createElement("p");
      error.className = "error";
      error.textContent = event.error;
      live.item.append(error);
    }
    const timings = document.createElement("p");
    timings.className = "timings";
    timings.textContent = Object.entries(event.timings)
      .map(([name, seconds]) => name + " " + seconds.toFixed(2) + " s")
      .join(" · ");
    live.item.append(timings);
    live = null;
  }

  const handlers = {
    stage: (event) => {
      ensureLive();
      stage.textContent = STAGES[event.stage] || "";
    },
    transcript: (event) => {
      const mine = history.querySelectorAll("li.turn-user .text");
      if (mine.length) mine[mine.length - 1].textContent = event.text;
    },
    token: (event) => {
      ensureLive().text.textContent += event.text;
      stage.textContent = "Speaking…";
    },
    chunk: (event) => {
      ensureLive();
      if (event.voice_note && !live.item.querySelector(".note")) {
        const note = document.createElement("p");
        note.className = "note";
        note.textContent = "Spoken by " + event.voice_engine + ": " + event.voice_note;
        live.item.append(note);
      }
      chunkReady(event);
    },
    reply: finish,
  };

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + panel.dataset.socket);
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      state.events.push(event.type);
      const handle = handlers[event.type];
      if (handle) handle(event);
    };
    socket.onclose = () => setTimeout(connect, 2000);
    return new Promise((resolve) => (socket.onopen = resolve));
  }
  const connected = connect();

  async function send(body, shownText) {
    errorLine.textContent = "";
    audioContext(); // a click started this: the browser lets the page play sound from now on
    await connected;
    const headers = { "X-CSRFToken": csrf };
    if (!(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(body);
    }
    const response = await fetch(panel.dataset.messagesUrl, {
      method: "POST", headers: headers, body: body, credentials: "same-origin",
    });
    const answer = await response.json();
    if (!response.ok) {
      errorLine.textContent = answer.detail || Object.values(answer).flat().join(" ");
      return;
    }
    const mine = bubble("user", shownText);
    if (live) history.insertBefore(mine, live.item); // the reply's first event came before this answer
    ensureLive();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    send({ text: text }, text);
  });

  let recorder = null;
  recordButton.addEventListener("click", async () => {
    if (recorder) {
      recorder.stop();
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      errorLine.textContent = "The microphone cannot be used (" + error.message + "): type instead.";
      return;
    }
    const parts = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (event) => parts.push(event.data);
    recorder.onstop = () => {
      stream.getTracks().forEach((track) => track.stop());
      recorder = null;
      recordButton.textContent = "Record";
      const body = new FormData();
      body.append("audio", new Blob(parts, { type: parts[0] ? parts[0].type : "audio/webm" }), "turn.webm");
      send(body, "🎤 …");
    };
    recorder.start();
    recordButton.textContent = "Send the recording";
  });

  stopButton.addEventListener("click", async () => {
    stopButton.disabled = true;
    await fetch(panel.dataset.stopUrl, {
      method: "POST", headers: { "X-CSRFToken": csrf }, credentials: "same-origin",
    });
  });
})();
