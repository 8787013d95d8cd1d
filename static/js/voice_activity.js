// Hands-free listening: voice activity detection on the microphone, in the browser. An AnalyserNode's
// level (RMS in dB full scale) is read every POLL_MS; a run of loud frames longer than START_MS is speech
// (onSpeechStart, with the time the run began), and END_MS of quiet after speech ends the turn (onTurn,
// with the turn's audio as a 16 kHz mono WAV, the short pre-roll before the start included so the first
// syllable is not lost, the time the last loud frame was heard, and whether onEarlyTurn already had it).
// EARLY_MS of quiet gives the turn so far to onEarlyTurn, so the answer can start while END_MS runs out;
// if the person speaks again before then, onResumed says so and the turn goes on.
(function () {
  "use strict";
  // A frame is voice above this level. Speech at arm's length from a laptop or phone microphone reads
  // about -35 to -15 dBFS once the browser's gain control has run; a quiet room reads below -55 dBFS.
  const SPEECH_DBFS = -42;
  // Loud frames must last this long to count as speech: a click, a knock or a cough is shorter. Kept
  // short because the barge-in (avatar silent within 300 ms of the person speaking) waits for it.
  const START_MS = 100;
  // Quiet this long after speech ends the turn: pauses between words and for breath are mostly 200-500 ms;
  // a longer hangover makes every reply feel slow. 500 ms is also OpenAI's Realtime API default for its
  // server VAD (turn_detection.silence_duration_ms, whose prefix_padding_ms of 300 is PRE_ROLL_MS here);
  // every millisecond of it is in the time to the avatar's answer (bench/chat_latency.py).
  const END_MS = 500;
  // Quiet this long hands the turn over early (onEarlyTurn): ASR and the LLM start while the rest of
  // END_MS is waited for, and are withdrawn if the person goes on (onResumed). A reply takes longer than
  // END_MS - EARLY_MS to make its first sound, so nothing of a withdrawn one is heard. LiveKit Agents call
  // this preemptive generation (docs.livekit.io/agents/build/audio/#preemptive-generation).
  const EARLY_MS = 250;
  // A "turn" shorter than this (loud part) is noise or a fragment, and is not sent.
  const MIN_SPEECH_MS = 300;
  // Audio kept from before the start was confirmed (the START_MS run and a little before it).
  const PRE_ROLL_MS = 300;
  // How often the level is read: a fraction of START_MS, and the analyser window (1024 samples, about
  // 21 ms at 48 kHz) covers it.
  const POLL_MS = 20;

  // The turn is sent at the rate Whisper reads (and the server stores a turn at): a third of a 48 kHz
  // recording to upload, and the server keeps the file as it is instead of converting it.
  const WAV_RATE = 16000;

  // ``chunks`` at ``rate`` as WAV_RATE samples: each output sample the mean of the input samples it
  // covers (a box filter against aliasing; speech keeps its words, which is what the transcript needs).
  function downsample(chunks, rate) {
    const length = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
    const input = new Float32Array(length);
    let at = 0;
    for (const chunk of chunks) {
      input.set(chunk, at);
      at += chunk.length;
    }
    if (rate <= WAV_RATE) return { samples: input, rate: rate };
    const step = rate / WAV_RATE;
    const output = new Float32Array(Math.floor(length / step));
    for (let i = 0; i < output.length; i += 1) {
      const from = Math.floor(i * step);
      const to = Math.min(length, Math.floor((i + 1) * step));
      let sum = 0;
      for (let j = from; j < to; j += 1) sum += input[j];
      output[i] = sum / Math.max(1, to - from);
    }
    return { samples: output, rate: WAV_RATE };
  }

  function encodeWav(chunks, recordedRate) {
    const { samples, rate: sampleRate } = downsample(chunks, recordedRate);
    const length = samples.length;
    const view = new DataView(new ArrayBuffer(44 + length * 2));
    const text = (offset, value) => [...value].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
    text(0, "RIFF");
    view.setUint32(4, 36 + length * 2, true);
    text(8, "WAVE");
    text(12, "fmt ");
    view.setUint32(16, 16, true);
    view.setUint16(20, 1, true); // PCM
    view.setUint16(22, 1, true); // mono
    view.setUint32(24, sampleRate, true);
    view.setUint32(28, sampleRate * 2, true);
    view.setUint16(32, 2, true);
    view.setUint16(34, 16, true);
    text(36, "data");
    view.setUint32(40, length * 2, true);
    for (let i = 0, offset = 44; i < length; i += 1, offset += 2) {
      const sample = Math.max(-1, Math.min(1, samples[i]));
      view.setInt16(offset, sample < 0 ? sample * 0x8000 : sample * 0x7fff, true);
    }
    return new Blob([view], { type: "audio/wav" });
  }

  // Starts listening on ``stream``; returns {stop(), state}. ``options.earlyMs`` replaces EARLY_MS (0:
  // the turn is handed over only at its end).
  function listen(stream, handlers, options) {
    const earlyMs = options && options.earlyMs !== undefined ? options.earlyMs : EARLY_MS;
    const context = new (window.AudioContext || window.webkitAudioContext)();
    if (context.state === "suspended") context.resume();
    const source = context.createMediaStreamSource(stream);
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    // The turn's samples. ScriptProcessorNode is deprecated but everywhere; its output stays silent.
    const capture = context.createScriptProcessor(4096, 1, 1);
    source.connect(capture);
    capture.connect(context.destination);
    const preRollSamples = Math.round((context.sampleRate * PRE_ROLL_MS) / 1000);
    let preRoll = [];
    let turn = null;
    capture.onaudioprocess = (event) => {
      const samples = new Float32Array(event.inputBuffer.getChannelData(0));
      if (turn) {
        turn.chunks.push(samples);
        return;
      }
      preRoll.push(samples);
      let kept = preRoll.reduce((sum, chunk) => sum + chunk.length, 0);
      while (preRoll.length > 1 && kept - preRoll[0].length >= preRollSamples) kept -= preRoll.shift().length;
    };

    const frame = new Float32Array(analyser.fftSize);
    const amplitude = Math.pow(10, SPEECH_DBFS / 20);
    const state = { level: -Infinity, speaking: false, turns: 0, early: 0, starts: [] };
    let loudSince = null; // when the current run of loud frames began (ms, performance.now())
    let lastLoud = null;
    let speechSince = null;
    let early = false; // onEarlyTurn has the turn as it stood at this pause
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(frame);
      let sum = 0;
      for (let i = 0; i < frame.length; i += 1) sum += frame[i] * frame[i];
      const now = performance.now();
      state.level = 10 * Math.log10(sum / frame.length + 1e-12);
      const loud = state.level > SPEECH_DBFS;
      if (loud) {
        if (loudSince === null) {
          // Where in the window the sound began: the first sample above the level's amplitude.
          let first = frame.findIndex((sample) => Math.abs(sample) > amplitude);
          if (first < 0) first = frame.length - 1;
          loudSince = now - ((frame.length - first) / context.sampleRate) * 1000;
        }
        lastLoud = now;
        if (early) {
          early = false;
          if (handlers.onResumed) handlers.onResumed();
        }
      }
      if (!state.speaking) {
        if (!loud) loudSince = null;
        else if (now - loudSince >= START_MS) {
          state.speaking = true;
          speechSince = loudSince;
          state.starts.push(loudSince);
          turn = { chunks: preRoll };
          preRoll = [];
          if (handlers.onSpeechStart) handlers.onSpeechStart(loudSince);
        }
        return;
      }
      const long = lastLoud - speechSince >= MIN_SPEECH_MS;
      const quiet = now - lastLoud;
      if (!early && long && earlyMs > 0 && handlers.onEarlyTurn && quiet >= earlyMs && quiet < END_MS) {
        early = true;
        state.early += 1;
        handlers.onEarlyTurn(encodeWav(turn.chunks, context.sampleRate), lastLoud);
      }
      if (now - lastLoud >= END_MS) {
        state.speaking = false;
        loudSince = null;
        const chunks = turn.chunks;
        const sentEarly = early;
        turn = null;
        early = false;
        if (!long) return;
        state.turns += 1;
        if (handlers.onTurn) {
          handlers.onTurn(sentEarly ? null : encodeWav(chunks, context.sampleRate), lastLoud, sentEarly);
        }
      }
    }, POLL_MS);

    return {
      state: state,
      stop() {
        clearInterval(timer);
        capture.onaudioprocess = null;
        stream.getTracks().forEach((track) => track.stop());
        context.close();
      },
    };
  }

  window.Talkforge = window.Talkforge || {};
  window.Talkforge.voiceActivity = {
    listen: listen, SPEECH_DBFS: SPEECH_DBFS, START_MS: START_MS, END_MS: END_MS, EARLY_MS: EARLY_MS,
    POLL_MS: POLL_MS,
  };
})();
