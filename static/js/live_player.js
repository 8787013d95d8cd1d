// The avatar's live stream: pieces of fragmented MP4 that arrive over the conversation's websocket as
// binary frames (4-byte big-endian header length, a JSON header {type: "segment", message, index, seq,
// last}, then the piece's bytes; chat/consumers.py writes them). Each sentence begins with its own init
// segment (seq 0); the pieces are appended in order (sentence by sentence, piece by piece) to one
// SourceBuffer in "sequence" mode, so the sentences of a reply play back to back on one timeline. Playback
// starts once the first piece is in. A new reply gets a fresh MediaSource.
//
// While nothing plays (before the first piece, between sentences while the next one renders, after the
// reply) the element is hidden and the avatar's still beneath it shows, so the box is never blank or
// frozen on a half-spoken frame. silence() is the barge-in: muted and paused at once, the queued pieces
// dropped, and the rest of that reply ignored when it still arrives.
(function () {
  "use strict";
  const MIME = 'video/mp4; codecs="avc1.42E01E, mp4a.40.2"';

  function parseFrame(buffer) {
    const length = new DataView(buffer).getUint32(0, false);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
    return { header: header, data: new Uint8Array(buffer, 4 + length) };
  }

  function LivePlayer(video, options) {
    this.video = video;
    this.onPlayed = (options && options.onPlayed) || function () {};
    this.onShow = (options && options.onShow) || function () {};
    this.reply = null;
    this.dropped = new Set(); // replies silenced by a barge-in: their late pieces are ignored
    // For people reading the console and for the tests: what arrived, when playback started.
    this.log = { pieces: 0, appended: 0, replies: [], errors: [] };
    const player = this;
    video.addEventListener("playing", () => player.show(true));
    video.addEventListener("waiting", () => player.show(false)); // between sentences: the still shows
    video.addEventListener("ended", () => player.show(false));
    video.addEventListener("pause", () => player.show(false));
    video.addEventListener("timeupdate", () => {
      if (!video.paused && video.readyState >= 3) player.show(true);
    });
  }

  LivePlayer.supported = function () {
    return Boolean(window.MediaSource && MediaSource.isTypeSupported(MIME));
  };
  LivePlayer.parseFrame = parseFrame;
  LivePlayer.MIME = MIME;

  LivePlayer.prototype.show = function (on) {
    this.video.classList.toggle("on", on);
    this.onShow(on);
  };

  // A binary websocket frame.
  LivePlayer.prototype.frame = function (buffer) {
    const piece = parseFrame(buffer);
    if (piece.header.type === "segment") this.segment(piece.header, piece.data);
    return piece.header;
  };

  LivePlayer.prototype.segment = function (header, data) {
    this.log.pieces += 1;
    if (this.dropped.has(header.message)) return;
    if (!this.reply || this.reply.id !== header.message) this.open(header.message);
    const reply = this.reply;
    reply.pending.set(header.index + ":" + header.seq, { header: header, data: data });
    this.order(reply);
    this.appendNext(reply);
  };

  // Pieces move from pending to the append queue in order. At a sentence boundary, a later sentence's init
  // segment means the one expected never comes (its render failed): go on with the later one.
  LivePlayer.prototype.order = function (reply) {
    for (;;) {
      const key = reply.nextIndex + ":" + reply.nextSeq;
      if (reply.nextIndex !== null && reply.pending.has(key)) {
        const piece = reply.pending.get(key);
        reply.pending.delete(key);
        reply.queue.push(piece);
        if (piece.header.last) {
          reply.nextIndex += 1;
          reply.nextSeq = 0;
        } else {
          reply.nextSeq += 1;
        }
        continue;
      }
      if (reply.nextSeq !== 0) return;
      let later = null;
      for (const piece of reply.pending.values()) {
        const index = piece.header.index;
        if (piece.header.seq === 0 && (reply.nextIndex === null || index > reply.nextIndex)) {
          if (later === null || index < later) later = index;
        }
      }
      if (later === null) return;
      reply.nextIndex = later;
    }
  };

  LivePlayer.prototype.open = function (id) {
    const player = this;
    const source = new MediaSource();
    const reply = {
      id: id, source: source, buffer: null, queue: [], pending: new Map(), nextIndex: null, nextSeq: 0,
      started: false, played: false, ended: false, firstIndex: null, firstPieceAt: null, playingAt: null,
    };
    this.reply = reply;
    this.log.replies.push(reply);
    source.addEventListener("sourceopen", () => {
      if (player.reply !== reply) return;
      try {
        reply.buffer = source.addSourceBuffer(MIME);
        reply.buffer.mode = "sequence";
      } catch (error) {
        player.log.errors.push(String(error));
        return;
      }
      reply.buffer.addEventListener("updateend", () => player.appended(reply));
      reply.buffer.addEventListener("error", () => player.log.errors.push("SourceBuffer error"));
      player.appendNext(reply);
    });
    this.video.muted = false;
    this.video.src = URL.createObjectURL(source);
  };

  LivePlayer.prototype.appendNext = function (reply) {
    if (reply !== this.reply || !reply.buffer || reply.buffer.updating) return;
    if (!reply.queue.length) {
      if (reply.ended && reply.source.readyState === "open" && !reply.pending.size) reply.source.endOfStream();
      return;
    }
    const piece = reply.queue.shift();
    if (reply.firstIndex === null) reply.firstIndex = piece.header.index;
    try {
      reply.buffer.appendBuffer(piece.data);
    } catch (error) {
      this.log.errors.push(String(error));
    }
  };

  LivePlayer.prototype.appended = function (reply) {
    if (reply !== this.reply) return;
    this.log.appended += 1;
    if (!reply.started) {
      reply.started = true;
      reply.firstPieceAt = Date.now();
      const player = this;
      const video = this.video;
      const started = video.play();
      if (started) started.catch((error) => player.log.errors.push(String(error)));
      // The first frame actually presented (requestVideoFrameCallback where the browser has it).
      const presented = () => {
        if (reply.played || player.reply !== reply) return;
        reply.played = true;
        reply.playingAt = Date.now();
        player.onPlayed(reply.id, reply.firstIndex);
      };
      if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(presented);
      else video.addEventListener("playing", presented, { once: true });
    }
    this.appendNext(reply);
  };

  // The reply is complete (its "reply" event came): once the queue is in, the stream ends and the still
  // shows after its last frame.
  LivePlayer.prototype.finish = function (id) {
    const reply = this.reply;
    if (!reply || reply.id !== id) return;
    reply.ended = true;
    this.appendNext(reply);
  };

  LivePlayer.prototype.streaming = function (id) {
    return Boolean(this.reply && this.reply.id === id);
  };

  LivePlayer.prototype.audible = function () {
    return Boolean(this.reply && this.reply.started && !this.video.paused && !this.video.ended);
  };

  // The barge-in: silent at once, nothing more of this reply is played. Returns performance.now() at the
  // moment the element is muted and paused.
  LivePlayer.prototype.silence = function () {
    this.video.muted = true;
    this.video.pause();
    const at = performance.now();
    const reply = this.reply;
    if (reply) {
      this.dropped.add(reply.id);
      reply.queue.length = 0;
      reply.pending.clear();
      try {
        if (reply.source.readyState === "open" && reply.buffer) reply.buffer.abort();
      } catch (error) {
        this.log.errors.push(String(error));
      }
    }
    this.reply = null;
    this.show(false);
    return at;
  };

  window.Talkforge = window.Talkforge || {};
  window.Talkforge.LivePlayer = LivePlayer;
})();
