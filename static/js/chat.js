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
//
// A reply rendered by a live session arrives instead as pieces of one stream (binary frames, see
// live_player.js) and plays through Media Source Extensions; its clips and audio are then not played again.
// Without MSE, or when the server says the reply is spoken only ({"type": "live", "state":
// "spoken_only"}), the clip/audio playback above is used.
//
// Hands-free (voice_activity.js): the end of the person's speech sends the turn; speech while the avatar
// talks is a barge-in: the avatar goes silent at once, the server is told ({"action": "barge_in"}), and
// the new turn is recorded. The first frame (or sound) of each reply tells the server how long it took
// from the end of the person's speech ({"action": "played"}).
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
  const handsFreeButton = document.getElementById("talk-hands-free");
  const errorLine = document.getElementById("talk-error");
  const csrf = panel.querySelector("input[name=csrfmiddlewaretoken]").value;
  const STAGES = { asr: "Recognising what you said…", llm: "Thinking…" };
  const LIVE_STATES = {
    starting: "Waking the avatar up…", waiting: "Waiting for a free renderer", spoken_only: "Spoken only",
  };  // prettier-ignore
  const view = document.getElementById("avatar-view");
  const screens = view ? Array.from(view.querySelectorAll("video.clip")) : [];
  const viewNote = document.getElementById("avatar-note");
  const livePlayer =
    view && window.Talkforge && window.Talkforge.LivePlayer && window.Talkforge.LivePlayer.supported()
      ? new window.Talkforge.LivePlayer(document.getElementById("avatar-live"), { onPlayed: livePlayed })
      : null;

  // What the page did, for people reading the console and for the browser tests: "scheduled" holds the
  // sentences played as audio, "clips" those played as video, "sent" what the page said on the socket,
  // "bargeIns" each barge-in with the time from the start of speech to the avatar silent, "withdrawn" the
  // replies to hands-free turns sent at a pause after which the person went on speaking.
  const state = (window.TalkforgeChat = {
    events: [], scheduled: [], clips: [], replies: [], sent: [], bargeIns: [], turns: [], withdrawn: [],
    live: livePlayer,
  });  // prettier-ignore
  const withdrawn = (id) => state.withdrawn.includes(id); // what still comes of such a reply is dropped
  let socket = null;
  let turnEndedAt = null; // performance.now() at the end of the person's speech or the send of a typed turn
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

  function say(message) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify(message));
    state.sent.push(Object.assign({ at: performance.now() }, message));
  }

  // A reply's first frame (or first sound) was played: how long after the person's turn ended.
  function played(reply, index) {
    if (!reply || reply.played || reply.id === undefined || reply.turnEndedAt === null) return;
    reply.played = true;
    const seconds = (performance.now() - reply.turnEndedAt) / 1000;
    liveTiming(reply, "first_frame_played", seconds);
    say({ action: "played", message: reply.id, index: index, speech_end_to_played: seconds });
  }

  function livePlayed(id, index) {
    if (live && live.id === id) played(live, index);
  }

  function label(item, text, kind) {
    let badge = item.querySelector(".badge");
    if (!text) {
      if (badge) badge.remove();
      return;
    }
    if (!badge) {
      badge = document.createElement("span");
      item.querySelector(".who").after(badge);
    }
    badge.className = "badge badge-" + kind;
    badge.textContent = text;
  }

  function bubble(role, text) {
    const empty = history.querySelector("li.empty");
    if (empty) empty.remove();
    const item = document.createElement("li");
    item.className = "turn turn-" + role;
    const box = document.createElement("div");
    box.className = "bubble";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : panel.dataset.name;
    const body = document.createElement("p");
    body.className = "text";
    body.textContent = text;
    box.append(who, body);
    item.append(box);
    history.append(item);
    item.scrollIntoView({ block: "nearest" });
    return item;
  }

  // The reply's bubble: made by the POST's answer or by its first event, whichever comes first.
  function ensureLive() {
    if (live) return live;
    live = {
      item: bubble("assistant", ""), video: null, videoFrom: Infinity, next: 0, items: new Map(),
      spoken: new Map(), timings: {}, id: undefined, streamed: false, played: false, turnEndedAt: turnEndedAt,
    };  // prettier-ignore
    live.text = live.item.querySelector(".text");
    live.box = live.item.querySelector(".bubble");
    label(live.item, "answering", "running");
    stopButton.disabled = false;
    return live;
  }

  function playsAsAudio(reply, index) {
    if (reply.streamed || reply.silenced) return false; // the stream carries the voice; or it was cut off
    return reply.video === false || index >= reply.videoFrom || Boolean(reply.noStream);
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
    if (reply.streamed || reply.silenced || reply.items.has(event.index)) return;
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
      played(reply, index);
      screens.forEach((s) => s.classList.toggle("on", s === screen)); // swap only once it has a frame
      preload(reply);
    };
    screen.onended = () => {
      record.ended = performance.now() / 1000;
      record.duration = screen.duration;
      showing = null;
      // The still shows until the next clip has a frame (its onplaying swaps it back on).
      if (!reply.items.has(reply.next)) screen.classList.remove("on");
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

  let sounding = []; // the sentences scheduled as audio, stopped by a barge-in

  function schedule(buffer, index) {
    const context = audioContext();
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    const at = Math.max(context.currentTime + 0.05, playAt);
    source.start(at);
    playAt = at + buffer.duration;
    sounding.push(source);
    state.scheduled.push({ index: index, at: at, duration: buffer.duration });
    if (live) setTimeout(() => played(live, index), Math.max(0, (at - context.currentTime) * 1000));
  }

  function audible() {
    return Boolean(
      (livePlayer && livePlayer.audible()) || showing || (audio && playAt > audio.currentTime) || live
    );
  }

  // The barge-in: everything the avatar says stops now; the server stops making the reply.
  function silence() {
    let at = performance.now();
    if (livePlayer) at = livePlayer.silence();
    for (const screen of screens) {
      screen.muted = true;
      screen.pause();
      screen.classList.remove("on");
    }
    showing = null;
    sounding.forEach((source) => source.stop());
    sounding = [];
    if (audio) playAt = audio.currentTime;
    if (live) {
      live.items = new Map(); // nothing more of it is played
      live.video = false;
      live.videoFrom = -1;
      live.spoken = new Map();
      live.silenced = true;
    }
    return at;
  }

  let lastBargeIn = null;

  function bargeIn(speechStartedAt) {
    if (!audible()) return;
    lastBargeIn = performance.now();
    const reply = live;
    const wasPlaying = Boolean(livePlayer && livePlayer.audible()) || Boolean(showing);
    const silentAt = silence();
    const record = { speech_started: speechStartedAt, silent: silentAt, ms: silentAt - speechStartedAt,
                     message: reply ? reply.id : null, was_playing: wasPlaying };  // prettier-ignore
    state.bargeIns.push(record);
    if (reply && reply.id !== undefined) say({ action: "barge_in", message: reply.id });
    else if (reply) reply.bargeIn = true; // said once the reply's id is known
    if (reply) {
      label(reply.item, "interrupted", "canceled");
      reply.item.querySelector(".badge").title =
        "Silent " + Math.round(record.ms) + " ms after you started speaking";
    }
    stage.textContent = "Listening…";
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
  }

  function liveTiming(reply, name, seconds) {
    if (seconds === undefined || reply.timings[name] !== undefined) return;
    reply.timings[name] = seconds;
    if (!reply.timingLine) {
      reply.timingLine = document.createElement("p");
      reply.timingLine.className = "timings live";
      reply.box.append(reply.timingLine);
    }
    fillTimings(reply.timingLine, reply.timings);
  }

  // The words people read for each stage (chat.models.Message.TIMING_LABELS, given by the page).
  const TIMING_LABELS = JSON.parse(document.getElementById("timing-labels").textContent);

  function fillTimings(line, timings) {
    line.replaceChildren();
    const keys = Object.keys(TIMING_LABELS).filter((key) => timings[key] !== undefined);
    for (const key of Object.keys(timings)) if (!keys.includes(key)) keys.push(key);
    for (const key of keys) {
      const part = document.createElement("span");
      part.dataset.key = key;
      part.textContent = (TIMING_LABELS[key] || key) + " " + Number(timings[key]).toFixed(2) + " s";
      line.append(part);
    }
  }

  function finish(event) {
    state.replies.push(event);
    if (livePlayer) livePlayer.finish(event.message);
    if (live && live.id !== undefined && event.message !== live.id) return; // an interrupted one's end
    stopButton.disabled = true;
    if (!listener) stage.textContent = "";
    if (!live) return;
    const labels = { failed: ["failed", "failed"], canceled: ["stopped", "canceled"] };
    if (!live.silenced) label(live.item, ...(labels[event.status] || ["", ""]));
    if (event.status === "failed") {
      const error = document.createElement("p");
      error.className = "error";
      error.textContent = event.error;
      live.box.append(error);
    }
    const timings = Object.assign({}, event.timings);
    if (live.timings.first_frame_played !== undefined) timings.first_frame_played = live.timings.first_frame_played;
    if (live.timingLine) live.timingLine.remove();
    const line = document.createElement("p");
    line.className = "timings";
    fillTimings(line, timings);
    live.box.append(line);
    live = null;
  }

  function liveState(event) {
    const reply = ensureLive();
    reply.live = event.state;
    if (event.state === "spoken_only" || (event.state === "ready" && !livePlayer)) {
      reply.video = false; // heard as audio: the server sends no stream, or this browser cannot play it
      for (const spoken of reply.spoken.values()) chunkReady(reply, spoken);
    }
    const text = LIVE_STATES[event.state];
    stage.textContent = text ? text + (event.reason ? ": " + event.reason : "") : stage.textContent;
  }

  function segment(buffer) {
    if (!livePlayer) {
      // No Media Source Extensions here: the reply's spoken sentences play as audio instead.
      const reply = ensureLive();
      if (!reply.noStream) {
        reply.noStream = true;
        for (const spoken of reply.spoken.values()) chunkReady(reply, spoken);
      }
      return;
    }
    const header = window.Talkforge.LivePlayer.parseFrame(buffer).header;
    if (withdrawn(header.message)) return;
    if (live && live.silenced && (live.id === undefined || live.id === header.message)) return;
    const reply = ensureLive();
    if (reply.id === undefined) reply.id = header.message;
    if (reply.id !== header.message) return; // an older reply's late piece
    reply.streamed = true;
    livePlayer.frame(buffer);
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
    live: liveState,
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
    socket = new WebSocket(scheme + location.host + panel.dataset.socket);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (message) => {
      if (message.data instanceof ArrayBuffer) {
        segment(message.data);
        return;
      }
      const event = JSON.parse(message.data);
      if (withdrawn(event.reply !== undefined ? event.reply : event.message)) return;
      state.events.push(event.type);
      const handle = handlers[event.type];
      if (handle) handle(event);
    };
    socket.onclose = () => setTimeout(connect, 2000);
    return new Promise((resolve) => (socket.onopen = resolve));
  }
  const connected = connect();

  // ``early``: a hands-free turn sent at a pause ({withdrawn}); once withdrawn it is not tried again.
  async function send(body, shownText, endedAt, early) {
    errorLine.textContent = "";
    turnEndedAt = endedAt === undefined ? performance.now() : endedAt;
    audioContext(); // a click started this: the browser lets the page play sound from now on
    await connected;
    const headers = { "X-CSRFToken": csrf };
    if (!(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(body);
    }
    let response, answer;
    for (let attempt = 0; ; attempt += 1) {
      response = await fetch(panel.dataset.messagesUrl, {
        method: "POST", headers: headers, body: body, credentials: "same-origin",
      });
      answer = await response.json();
      // Right after a barge-in the server may still be winding the interrupted reply down (it refuses a
      // turn while one is being answered): try again for a few seconds.
      const interrupted = lastBargeIn !== null && performance.now() - lastBargeIn < 8000;
      if (response.status !== 400 || !interrupted || attempt >= 10) break;
      await new Promise((resolve) => setTimeout(resolve, 400));
      if (early && early.withdrawn) return null; // the person went on: the whole turn comes instead
    }
    state.turns.push({ status: response.status, id: answer.id, at: performance.now() });
    if (!response.ok) {
      errorLine.textContent = answer.detail || Object.values(answer).flat().join(" ");
      return null;
    }
    if (live && live.silenced) live = null; // the interrupted reply's bubble stays as it is
    const mine = bubble("user", shownText);
    if (live) history.insertBefore(mine, live.item); // the reply's first event came before this answer
    const reply = ensureLive();
    reply.id = answer.id;
    reply.turnEndedAt = turnEndedAt;
    reply.turnItem = mine;
    if (reply.bargeIn) say({ action: "barge_in", message: reply.id });
    return reply;
  }

  // The person went on speaking after a pause at which their turn was sent (``early.reply``, the promise
  // of its reply): the server takes the turn and its reply back and stops the reply; both bubbles go, and
  // whatever still comes of that reply is dropped. The whole utterance is the next turn.
  async function withdraw(early) {
    early.withdrawn = true;
    const reply = await early.reply;
    if (!reply) return;
    state.withdrawn.push(reply.id);
    lastBargeIn = performance.now(); // the server may take a moment to wind that reply down
    say({ action: "withdraw", message: reply.id });
    if (live === reply) {
      silence();
      live = null;
    }
    reply.item.remove();
    if (reply.turnItem) reply.turnItem.remove();
    stage.textContent = "Listening…";
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
    bargeIn(performance.now()); // recording over the avatar: it stops talking
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
      const endedAt = performance.now();
      stream.getTracks().forEach((track) => track.stop());
      recorder = null;
      recordButton.textContent = "Record";
      recordButton.setAttribute("aria-pressed", "false");
      const body = new FormData();
      body.append("audio", new Blob(parts, { type: parts[0] ? parts[0].type : "audio/webm" }), "turn.webm");
      send(body, "🎤 …", endedAt);
    };
    recorder.start();
    recordButton.textContent = "Send the recording";
    recordButton.setAttribute("aria-pressed", "true");
  });

  // Hands-free: the microphone stays open; the end of speech sends the turn, speech over the avatar stops
  // it. Echo cancellation keeps the avatar's own voice from the speakers out of the microphone.
  let listener = null;
  let earlyTurn = null; // a turn sent at a pause ({reply: promise, withdrawn}), until the turn is over

  function sendSpoken(wav, endedAt, early) {
    const body = new FormData();
    body.append("audio", wav, "turn.wav");
    return send(body, "🎤 …", endedAt, early);
  }

  async function handsFree(on) {
    if (!on) {
      if (listener) listener.stop();
      listener = null;
      state.listener = null;
      handsFreeButton.setAttribute("aria-pressed", "false");
      handsFreeButton.textContent = "Hands-free: off";
      recordButton.disabled = false;
      stage.textContent = "";
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (error) {
      errorLine.textContent = "The microphone cannot be used (" + error.message + "): type instead.";
      return;
    }
    audioContext();
    const earlyMs = Number(panel.dataset.earlyTurnMs); // CHAT_EARLY_TURN_MS; 0: no early handover
    listener = window.Talkforge.voiceActivity.listen(stream, {
      onSpeechStart: (at) => {
        stage.textContent = "Listening…";
        bargeIn(at);
      },
      // At the first pause the turn is sent (its answer starts while the VAD waits to be sure), and taken
      // back if the person goes on; at the end of the turn nothing more is sent if it went early.
      onEarlyTurn: (wav, endedAt) => {
        earlyTurn = { withdrawn: false };
        earlyTurn.reply = sendSpoken(wav, endedAt, earlyTurn);
      },
      onResumed: () => {
        if (earlyTurn) withdraw(earlyTurn);
        earlyTurn = null;
      },
      onTurn: (wav, endedAt, sentEarly) => {
        earlyTurn = null;
        if (!sentEarly) sendSpoken(wav, endedAt);
      },
    }, { earlyMs: Number.isFinite(earlyMs) ? earlyMs : undefined });
    state.listener = listener.state;
    handsFreeButton.setAttribute("aria-pressed", "true");
    handsFreeButton.textContent = "Hands-free: on";
    recordButton.disabled = true;
    stage.textContent = "Listening…";
    await connected;
    say({ action: "warm_up" });
  }
  if (handsFreeButton) {
    if (!window.Talkforge || !window.Talkforge.voiceActivity || !navigator.mediaDevices) {
      handsFreeButton.disabled = true;
      handsFreeButton.title = "This browser cannot listen to the microphone.";
    }
    handsFreeButton.addEventListener("click", () => handsFree(!listener));
  }

  // A past reply's player: its sentences one after the other, as one reply.
  for (const player of history.querySelectorAll(".reply-player[data-clips]")) {
    const clips = player.dataset.clips.trim().split(/\s+/);
    let at = 0;
    player.addEventListener("ended", () => {
      if (at + 1 >= clips.length) {
        at = 0;
        player.src = clips[0]; // ready to play again from the start
        return;
      }
      at += 1;
      player.src = clips[at];
      player.play();
    });
  }

  stopButton.addEventListener("click", async () => {
    stopButton.disabled = true;
    await fetch(panel.dataset.stopUrl, {
      method: "POST", headers: { "X-CSRFToken": csrf }, credentials: "same-origin",
    });
  });
})();
