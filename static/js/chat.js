// The talk box of a conversation page: send a typed or recorded turn, follow the reply on the
// conversation's websocket (stages, the text token by token, each spoken sentence and its rendered clip),
// play the sentences in order without gaps, stop the reply.
//
// Playback rule: each sentence is played once, in order. When the reply is rendered ("video" event on),
// the avatar view plays each sentence's clip (the clip carries the voice); a sentence is played as
// audio only when the reply is spoken only (or from the sentence whose render failed, which the "video"
// event announces). So the voice is never heard twice. Clips play in two stacked <video> elements: the
// visible one plays while the hidden one preloads the next clip, and they swap when a clip ends. Audio
// plays through Web Audio, each sentence scheduled at the instant the one before it ends.
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
  const view = document.getElementById("avatar-view");
  const screens = view ? Array.from(view.querySelectorAll("video")) : [];
  const viewNote = document.getElementById("avatar-note");

  // What the page did, for people reading the console and for the browser test: "scheduled" holds the
  // sentences played as audio, "clips" those played as video.
  const state = (window.TalkforgeChat = { events: [], scheduled: [], clips: [], replies: [] });
  // The reply being made: its bubble, whether it is rendered (video: true/false, null before it is
  // known, videoFrom: the first sentence played as audio after a failed render), what each sentence
  // resolved to (items: index → {kind: "audio", buffer} or {kind: "video", url}), and the next to play.
  let live = null;
  let audio = null;
  let playAt = 0;
  let showing = null; // the <video> on screen, while it plays a clip

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
    live = {
      item: bubble("assistant", ""), video: null, videoFrom: Infinity, next: 0, items: new Map(),
      spoken: new Map(), timings: {},
    };
    live.text = live.item.querySelector(".text");
    stopButton.disabled = false;
    return live;
  }

  function playsAsAudio(reply, index) {
    return reply.video === false || index >= reply.videoFrom;
  }

  // A spoken sentence: fetched and decoded at once when it is to be heard as audio (the fetches run
  // concurrently; playback keeps the order).
  async function chunkReady(reply, event) {
    reply.spoken.set(event.index, event);
    if (!playsAsAudio(reply, event.index) || reply.items.has(event.index)) return;
    reply.items.set(event.index, { kind: "audio", buffer: null });
    const response = await fetch("/chat/media/chunk/" + event.chunk + "/audio/", { credentials: "same-origin" });
    const buffer = await audioContext().decodeAudioData(await response.arrayBuffer());
    reply.items.get(event.index).buffer = buffer;
    pump(reply);
  }

  function clipReady(reply, event) {
    if (reply.items.has(event.index)) return;
    reply.items.set(event.index, { kind: "video", url: event.url });
    // The next clip loads while this one plays (once it is on screen: the other element shows the last
    // frame until then).
    if (showing && showing.classList.contains("on")) preload(reply);
    pump(reply);
  }

  // Play what is next, in order: audio sentences back to back as soon as they are decoded; a clip only
  // once whatever plays before it has ended (it starts from the preloaded element, then the next clip
  // preloads into the other one).
  function pump(reply) {
    while (reply.items.has(reply.next)) {
      const item = reply.items.get(reply.next);
      if (showing) return; // a clip is playing: its "ended" pumps again
      if (item.kind === "audio") {
        if (!item.buffer) return; // still decoding
        schedule(item.buffer, reply.next);
        reply.next += 1;
        continue;
      }
      const wait = audio ? playAt - audio.currentTime : 0;
      if (wait > 0.02) {
        setTimeout(() => pump(reply), wait * 1000);
        return;
      }
      play(reply, item, reply.next);
      reply.next += 1;
      return;
    }
  }

  function preload(reply) {
    const item = reply.items.get(reply.next);
    if (!item || item.kind !== "video") return;
    const screen = screens.find((s) => s !== showing);
    if (screen.dataset.src !== item.url) {
      screen.onplaying = screen.onended = screen.onerror = null; // the clip it played is over
      screen.dataset.src = item.url;
      screen.src = item.url;
      screen.load();
    }
  }

  function play(reply, item, index) {
    const screen =
      screens.find((s) => s.dataset.src === item.url) || screens.find((s) => !s.classList.contains("on"));
    if (screen.dataset.src !== item.url) {
      screen.dataset.src = item.url;
      screen.src = item.url;
    }
    const record = { index: index, started: null, ended: null, duration: null, error: null };
    state.clips.push(record);
    showing = screen;
    screen.onplaying = () => {
      if (record.started === null) record.started = performance.now() / 1000;
      screens.forEach((s) => s.classList.toggle("on", s === screen)); // swap only once it has a frame
      preload(reply);
    };
    screen.onended = () => {
      record.ended = performance.now() / 1000;
      record.duration = screen.duration;
      showing = null;
      pump(reply);
    };
    screen.onerror = () => {
      record.error = screen.error ? screen.error.code : "error";
      showing = null;
      pump(reply);
    };
    screen.currentTime = 0;
    const started = screen.play();
    if (started) started.catch((error) => (record.error = String(error)));
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

  function videoState(reply, event) {
    if (event.on) {
      reply.video = true;
      if (viewNote) viewNote.textContent = "";
    } else {
      if (reply.video === null) reply.video = false;
      else reply.videoFrom = Math.min(reply.videoFrom, event.from);
      if (event.note) {
        const note = document.createElement("p");
        note.className = "note";
        note.textContent = event.note;
        reply.item.append(note);
        if (viewNote) viewNote.textContent = event.note;
      }
      // Sentences already spoken that will not get a clip now play as audio.
      for (const spoken of reply.spoken.values()) chunkReady(reply, spoken);
    }
    if (view) view.hidden = reply.video === false;
  }

  function liveTiming(reply, name, seconds) {
    if (seconds === undefined || reply.timings[name] !== undefined) return;
    reply.timings[name] = seconds;
    if (!reply.timingLine) {
      reply.timingLine = document.createElement("p");
      reply.timingLine.className = "timings live";
      reply.item.append(reply.timingLine);
    }
    reply.timingLine.textContent = Object.entries(reply.timings)
      .map(([key, value]) => key + " " + value.toFixed(2) + " s")
      .join(" · ");
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
    if (live.timingLine) live.timingLine.remove();
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
    video: (event) => videoState(ensureLive(), event),
    chunk: (event) => {
      const reply = ensureLive();
      if (event.voice_note && !reply.item.querySelector(".voice-note")) {
        const note = document.createElement("p");
        note.className = "note voice-note";
        note.textContent = "Spoken by the standard voice: " + event.voice_note;
        reply.item.append(note);
      }
      if (event.index === 0) liveTiming(reply, "tts_first_audio", event.ready);
      chunkReady(reply, event);
    },
    chunk_video: (event) => {
      const reply = ensureLive();
      if (event.index === 0) liveTiming(reply, "first_video_chunk", event.at);
      clipReady(reply, event);
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
