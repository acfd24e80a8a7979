// kokoro-stream browser player: one WebSocket (protocol v1, msgpack), one AudioContext and one
// AudioWorkletNode ring buffer for the whole page. See docs/protocol.md.
//
// Test hook: window.ttsState (reset for each new stream) and window.ttsReady.

const { encode, decode } = window.MessagePack; // UMD bundle from /static/vendor/msgpack.min.js

const params = new URLSearchParams(location.search);
// ?server=ws://host:port/v1/stream points the page at another server (e.g. when the page is
// served by something else); by default the socket lives on the page's own origin.
const WS_URL =
  params.get("server") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream`;
const HTTP_BASE = WS_URL.replace(/^ws/, "http").replace(/\/v1\/stream.*$/, "");
const SAMPLE_RATE = 24000; // what we ask the server for (its default)
// Pre-roll before playback starts (and after an underrun). ?preroll=MS overrides it.
const PREROLL_MS = Number(params.get("preroll")) || 200;
// Optional: wait at least this long after the first frame before starting (absorbs a slow
// second segment at the cost of latency). Off by default; the adaptive start below does this
// only when the server turns out to be slow.
const START_DELAY_MS = Number(params.get("hold")) || 0;
// Adaptive start: the server starts the second segment when the first is done, and the second
// is at most 1.5x as long (the server's segment growth), so it should be ready about 1.5x the
// first one's generation time after the first audio; 0.25 more keeps the third segment in time
// when it is slower than the growth says (a number spelled out). Playback starts late enough
// that a pre-roll's worth of the first segment is still left then.
const NEXT_GEN_RATIO = 1.75;
// ?rate=48000 forces another AudioContext rate (exercises the worklet's resampler).
const CONTEXT_RATE = Number(params.get("rate")) || SAMPLE_RATE;
const PLAYED_EVERY_MS = 200;
const TEXT_PIECE_CHARS = 8000; // UTF-8 is at most 4 bytes a character: well under 64 KiB // protocol asks for a `played` report every 100-250 ms
const PLOT_SECONDS = 20;

const $ = (id) => document.getElementById(id);
const ui = {
  text: $("text"),
  voice: $("voice"),
  blend: $("blend"),
  speed: $("speed"),
  speedValue: $("speed-value"),
  speak: $("speak"),
  stop: $("stop"),
  live: $("live"),
  ttfa: $("ttfa"),
  serverTtfa: $("server-ttfa"),
  buffered: $("buffered"),
  frame: $("frame"),
  underruns: $("underruns"),
  state: $("state"),
  transcript: $("transcript"),
  message: $("message"),
  plot: $("plot"),
  apiKey: $("api-key"),
};

// ---------------------------------------------------------------------------------------------
// Test hook: the automated browser test reads this object.

function freshState(stream = null) {
  return {
    state: "idle",
    stream,
    ttfaMs: null,
    seqs: [],
    framesReceived: 0,
    samplesReceived: 0,
    samplesPlayed: 0,
    underruns: 0,
    started: false,
    doneReason: null,
    doneSamples: null,
    doneRtf: null, // the stream's real-time factor, from `done`
    frameMs: null,
    bufferedMs: 0,
    startHoldMs: null, // the adaptive start's wait after the first audio
    wordsTimed: 0, // word timings received
    wordsHighlighted: [], // char offsets of each word highlighted as it was heard, in order
  };
}
// Mutated in place so that a reference taken earlier stays live; `seqs` is a new array per stream.
window.ttsState = freshState();
window.ttsReady = false;
const S = window.ttsState;

function setState(state) {
  S.state = state;
  ui.state.textContent = state;
  ui.state.dataset.state = state;
}

function showMessage(text, isError = false) {
  ui.message.textContent = text || "";
  ui.message.classList.toggle("error", isError);
}

// ---------------------------------------------------------------------------------------------
// Audio: one AudioContext + one worklet node, created on first use (a user gesture lets it run).

let audioCtx = null;
let player = null; // AudioWorkletNode "ring-player"
let audioReady = null;

function ensureAudio() {
  if (!audioReady) {
    audioReady = (async () => {
      try {
        audioCtx = new AudioContext({ sampleRate: CONTEXT_RATE, latencyHint: "interactive" });
      } catch {
        audioCtx = new AudioContext(); // the worklet resamples from 24 kHz to this rate
      }
      await audioCtx.audioWorklet.addModule(new URL("./worklet.js", import.meta.url));
      player = new AudioWorkletNode(audioCtx, "ring-player", {
        numberOfInputs: 0,
        numberOfOutputs: 1,
        outputChannelCount: [1],
      });
      player.port.onmessage = (event) => onWorkletStatus(event.data);
      player.connect(audioCtx.destination);
    })();
    audioReady.catch(() => (audioReady = null)); // let a later click try again
  }
  // Not awaited: without a user gesture resume() stays pending; audio just buffers meanwhile.
  audioReady.then(() => audioCtx.state !== "running" && audioCtx.resume()).catch(() => {});
  return audioReady;
}

// ---------------------------------------------------------------------------------------------
// WebSocket: one per page session, reopened on demand (the server closes idle connections).

let ws = null;
let wsReady = null; // resolves with the `ready` message
let serverInfo = null;

function connect() {
  if (ws && wsReady) return wsReady;
  // Browsers cannot set headers on a WebSocket: an API key travels as a second subprotocol
  // (the server echoes back only tts.v1).
  const key = ui.apiKey.value.trim();
  const socket = new WebSocket(WS_URL, key ? ["tts.v1", `bearer.${key}`] : "tts.v1");
  socket.binaryType = "arraybuffer";
  ws = socket;
  let fatal = null; // the server's reason when it closes the connection on us
  wsReady = new Promise((resolve, reject) => {
    socket.onmessage = (event) => {
      let msg;
      try {
        msg = decode(new Uint8Array(event.data));
      } catch (err) {
        console.warn("undecodable message", err);
        return;
      }
      if (msg.type === "error" && msg.fatal) fatal = msg.message;
      if (msg.type === "ready") {
        serverInfo = msg;
        if (!window.ttsReady) fillVoices(msg.voices.map((name) => ({ name })), null);
        resolve(msg);
        return;
      }
      onServerMessage(msg);
    };
    socket.onclose = (event) => {
      if (ws === socket) {
        ws = null;
        wsReady = null;
      }
      reject(new Error(fatal || `connection closed (${event.code})`));
      if (cur && cur.open) failStream(`connection closed (code ${event.code})`);
    };
  });
  wsReady.catch(() => {}); // handled by whoever awaits it
  return wsReady;
}

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(encode(msg));
}

// ---------------------------------------------------------------------------------------------
// Streams. `cur` is the stream this page plays; messages of older streams are ignored.

let streamCounter = 0;
let cur = null;
let playedTimer = null;

function currentVoice() {
  return ui.blend.value.trim() || ui.voice.value || undefined;
}

async function startStream({ live = false } = {}) {
  if (cur && cur.open && !cur.cancelSent) {
    send({ type: "cancel", stream: cur.id }); // one stream at a time
    cur.cancelSent = true;
  }
  stopPlayedReports();
  const id = `s${++streamCounter}`;
  const stream = {
    id,
    token: streamCounter,
    open: false, // the server has the stream (start sent, no done yet)
    cancelSent: false,
    aborted: false, // stopped before `start` went out
    live,
    text: "", // everything sent on the stream: segments' char offsets index into it
    segments: [], // {seg, start, end, charStart, charEnd} in stream samples
    words: [], // {start, end, charStart, charEnd}: word timings, in stream samples
    segSamples: 0,
    t0: null, // when the first text went out (client TTFA starts here)
  };
  cur = stream;
  Object.assign(S, freshState(id));
  setState("connecting");
  history.length = 0;
  ui.ttfa.textContent = ui.serverTtfa.textContent = "–";
  renderTranscript(true);
  showMessage("");
  try {
    await ensureAudio();
    await connect();
  } catch (err) {
    if (cur === stream) failStream(`cannot start: ${err.message}`);
    return null;
  }
  if (cur !== stream || stream.aborted) return null; // superseded or stopped while connecting
  player.port.postMessage({
    type: "reset",
    token: stream.token,
    srcRate: SAMPLE_RATE,
    prerollMs: PREROLL_MS,
    startDelayMs: START_DELAY_MS,
  });
  const start = {
    type: "start",
    stream: id,
    speed: Number(ui.speed.value),
    encoding: "pcm_s16le",
    timestamps: "word", // each segment's word timings arrive just before its audio
  };
  const voice = currentVoice();
  if (voice) start.voice = voice;
  send(start);
  stream.open = true;
  playedTimer = setInterval(sendPlayed, PLAYED_EVERY_MS);
  return stream;
}

function sendText(stream, text) {
  if (!text || !stream.open || stream.cancelSent) return;
  if (stream.t0 === null) stream.t0 = performance.now();
  stream.text += text;
  send({ type: "text", stream: stream.id, text });
  renderTranscript(true);
}

function sendPlayed() {
  if (!cur || !cur.open || cur.cancelSent) return;
  send({
    type: "played",
    stream: cur.id,
    samples: S.samplesPlayed,
    buffered_ms: Math.round(S.bufferedMs),
    underruns: S.underruns,
  });
}

function stopPlayedReports() {
  clearInterval(playedTimer);
  playedTimer = null;
}

async function speak() {
  setLive(false);
  const text = ui.text.value;
  if (!text.trim()) return;
  const stream = await startStream();
  if (!stream) return;
  // Normally one message; very long texts go in pieces so that no frame passes the server's
  // 64 KiB message limit (the server joins pieces, even mid-word).
  for (let i = 0; i < text.length; ) {
    let j = Math.min(text.length, i + TEXT_PIECE_CHARS);
    if (j < text.length && /[\uDC00-\uDFFF]/.test(text[j])) j--; // don't split a surrogate pair
    sendText(stream, text.slice(i, j));
    i = j;
  }
  send({ type: "end", stream: stream.id });
}

function stop() {
  setLive(false, { sendEnd: false });
  if (!cur) return;
  if (player) player.port.postMessage({ type: "stop" }); // fade out now, don't wait for the server
  if (cur.open && !cur.cancelSent) {
    send({ type: "cancel", stream: cur.id }); // the server answers with done "cancelled"
    cur.cancelSent = true;
    stopPlayedReports();
  } else if (S.state === "playing" || S.state === "connecting") {
    cur.aborted = true; // still connecting, or the server had finished: only cut playback
    setState("cancelled");
  }
}

function failStream(text) {
  showMessage(text, true);
  if (cur) cur.open = false;
  stopPlayedReports();
  if (player) player.port.postMessage({ type: "end" }); // play out whatever did arrive
  setState("error");
}

// ---------------------------------------------------------------------------------------------
// Server messages.

function onServerMessage(msg) {
  if (msg.type === "error") return onError(msg);
  if (!cur || msg.stream !== cur.id) return; // an older stream's leftovers
  switch (msg.type) {
    case "audio":
      return onAudio(msg);
    case "words":
      for (const [, start, end, charStart, charEnd] of msg.items) {
        cur.words.push({ start, end, charStart, charEnd });
      }
      S.wordsTimed = cur.words.length;
      return;
    case "segment":
      cur.segments.push({
        seg: msg.seg,
        start: cur.segSamples,
        end: cur.segSamples + msg.samples,
        charStart: msg.char_start,
        charEnd: msg.char_end,
      });
      cur.segSamples += msg.samples;
      if (msg.seg === 0 && player) {
        const audioMs = (msg.samples / SAMPLE_RATE) * 1000;
        const holdMs = Math.max(0, NEXT_GEN_RATIO * msg.gen_ms - audioMs + PREROLL_MS);
        S.startHoldMs = Math.round(holdMs);
        player.port.postMessage({ type: "plan", holdMs });
      }
      renderTranscript(true);
      return;
    case "flow":
      cur.flowFrameMs = msg.frame_ms;
      S.frameMs = msg.frame_ms;
      return;
    case "done":
      return onDone(msg);
  }
}

function onAudio(msg) {
  const data = msg.data; // Uint8Array view into the message buffer, at any byte offset
  let pcm;
  if (msg.encoding === "f32le") {
    pcm = new Float32Array(data.slice().buffer); // slice() copies to an aligned, own buffer
  } else {
    const ints = new Int16Array(data.slice().buffer);
    pcm = new Float32Array(ints.length);
    for (let i = 0; i < ints.length; i++) pcm[i] = ints[i] / 32768;
  }
  S.seqs.push(msg.seq);
  S.framesReceived++;
  S.samplesReceived += pcm.length;
  if (!cur.flowFrameMs) S.frameMs = (pcm.length / (msg.sample_rate || SAMPLE_RATE)) * 1000;
  if (S.ttfaMs === null && cur.t0 !== null) {
    S.ttfaMs = Math.round(performance.now() - cur.t0);
    ui.ttfa.textContent = `${S.ttfaMs}`;
  }
  if (S.state === "connecting") setState("playing");
  if (!cur.cancelSent && player) player.port.postMessage({ type: "audio", samples: pcm }, [pcm.buffer]);
}

function onDone(msg) {
  S.doneReason = msg.reason;
  S.doneSamples = msg.samples ?? null;
  S.doneRtf = msg.rtf ?? null;
  cur.open = false;
  stopPlayedReports();
  if (msg.ttfa_ms != null) ui.serverTtfa.textContent = `${Math.round(msg.ttfa_ms)}`;
  if (msg.reason === "cancelled") {
    setState("cancelled");
  } else {
    // Complete (or failed): play out what is buffered; "done" once the worklet has drained.
    player.port.postMessage({ type: "end" });
    if (msg.reason === "error") {
      showMessage("the server could not finish this stream", true);
      setState("error");
    }
  }
  if (msg.reason === "timeout") {
    // The server ends a stream that goes without text for `limits.stream_idle_s`; what was
    // typed has been spoken.
    const idle = serverInfo && serverInfo.limits ? serverInfo.limits.stream_idle_s : null;
    showMessage(`live typing stopped after ${idle ? `${idle} s` : "a while"} without a word; tick it to go on`, false);
  }
  if (cur.live) setLive(false, { sendEnd: false });
}

function onError(msg) {
  const text = `${msg.code}: ${msg.message}`;
  const mine = cur && msg.stream === cur.id;
  if (msg.code === "text_too_long") return showMessage(text, true); // the stream goes on
  if (mine && cur.cancelSent && msg.code === "unknown_stream") return; // crossed with done
  if (mine && cur.open) return failStream(text);
  if (mine) return; // echoes of a stream that already failed (e.g. its `text` after a bad voice)
  if (msg.code === "not_ready") {
    const ms = msg.retry_after_ms;
    return failStream(`the model is still loading${ms ? `; try again in ${Math.ceil(ms / 1000)} s` : ""}`);
  }
  if (msg.code === "idle_timeout") return; // reconnects on the next Speak
  if (msg.fatal && cur && cur.open) return failStream(text);
  showMessage(text, true);
}

// ---------------------------------------------------------------------------------------------
// Worklet reports (~every 100 ms): playback position drives `played`, the transcript and plot.

function onWorkletStatus(st) {
  if (!cur || st.token !== cur.token) return; // a report from before the last reset
  S.samplesPlayed = st.played;
  S.bufferedMs = (st.buffered / SAMPLE_RATE) * 1000;
  S.underruns = st.underruns;
  S.started = st.started;
  const finished = S.doneReason === "complete" || S.doneReason === "timeout";
  if (st.drained && finished && (S.state === "playing" || S.state === "connecting")) {
    setState("done");
  }
  history.push({ t: performance.now(), buffered: S.bufferedMs, frame: S.frameMs ?? 0 });
  while (history.length && history[0].t < performance.now() - PLOT_SECONDS * 1000) history.shift();
}

// ---------------------------------------------------------------------------------------------
// Live typing: each completed word (ended by a space or punctuation) goes out as a `text`
// message the moment it is typed, the way a language model streams tokens.

const BOUNDARY = /[\s.,;:!?]/;
const WORDS = /[^\s.,;:!?]*[\s.,;:!?]+/g; // a word plus the spaces/punctuation that closed it
let liveSent = ""; // the prefix of the text area already sent

async function setLive(on, { sendEnd = true } = {}) {
  if (ui.live.checked !== on) ui.live.checked = on;
  ui.speak.disabled = on;
  if (on) {
    ui.text.value = "";
    ui.text.placeholder = "Type here: each word is spoken as soon as you finish it…";
    ui.text.focus();
    liveSent = "";
    const stream = await startStream({ live: true });
    if (stream && ui.live.checked) pumpLive();
  } else if (cur && cur.live) {
    if (sendEnd && cur.open && !cur.cancelSent) {
      pumpLive(true); // the last word needs no trailing space once the stream ends
      send({ type: "end", stream: cur.id });
    }
    cur.live = false;
  }
}

function pumpLive(final = false) {
  if (!cur || !cur.live || !cur.open) return; // words typed while connecting go out after
  const value = ui.text.value;
  // Text already sent cannot be unsaid: after an edit behind the cursor, carry on from the
  // longest common prefix.
  let common = 0;
  while (common < liveSent.length && common < value.length && value[common] === liveSent[common]) common++;
  liveSent = liveSent.slice(0, common);
  const pending = value.slice(common);
  let cut = pending.length;
  if (!final) {
    while (cut > 0 && !BOUNDARY.test(pending[cut - 1])) cut--;
  }
  const complete = pending.slice(0, cut);
  if (!complete) return;
  const words = complete.match(WORDS) || [];
  const rest = complete.slice(words.join("").length); // only non-empty when final
  for (const word of words) sendText(cur, word);
  if (rest) sendText(cur, rest);
  liveSent += complete;
}

// ---------------------------------------------------------------------------------------------
// Rendering: status numbers, transcript highlight and the plot, ten times a second.

const history = []; // {t, buffered, frame} for the plot
let transcriptKey = "";

function render() {
  ui.buffered.textContent = `${Math.round(S.bufferedMs)}`;
  ui.frame.textContent = S.frameMs == null ? "–" : `${Math.round(S.frameMs)}`;
  ui.underruns.textContent = `${S.underruns}`;
  renderTranscript();
  drawPlot();
}

function heardSegment() {
  if (!cur || !S.started) return -1;
  const played = S.samplesPlayed;
  return cur.segments.findIndex((s) => played >= s.start && played < s.end);
}

// The word being heard: the last one started, until a little after its end (the pauses
// between words stay on the word before them rather than flicker).
const WORD_HOLD_SAMPLES = SAMPLE_RATE * 0.15;

function heardWord() {
  if (!cur || !S.started || S.state === "done") return -1;
  const played = S.samplesPlayed;
  let found = -1;
  for (let i = 0; i < cur.words.length && cur.words[i].start <= played; i++) found = i;
  if (found >= 0 && played >= cur.words[found].end + WORD_HOLD_SAMPLES) return -1;
  return found;
}

// The transcript shows the stream's text: heard segments dimmed, the one heard now
// highlighted (and in it the word heard now), synthesized ones plain and the rest (not yet
// synthesized) faint.
function renderTranscript(force = false) {
  const box = ui.transcript;
  if (!cur) return;
  const heard = heardSegment();
  const wordIndex = heardWord();
  const word = wordIndex >= 0 ? cur.words[wordIndex] : null;
  if (word && S.wordsHighlighted.at(-1) !== word.charStart) S.wordsHighlighted.push(word.charStart);
  const key = `${cur.id}|${cur.text.length}|${cur.segments.length}|${heard}|${wordIndex}|${S.state}`;
  if (!force && key === transcriptKey) return;
  transcriptKey = key;
  box.replaceChildren();
  const text = cur.text;
  let at = 0;
  const add = (cls, from, to) => {
    if (to <= from) return;
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text.slice(from, to);
    box.appendChild(span);
  };
  const finished = S.state === "done";
  cur.segments.forEach((s, i) => {
    add("pending", at, s.charStart); // text between segments (e.g. spaces) that no segment owns
    const cls = i === heard ? "heard-now" : finished || (heard >= 0 && i < heard) ? "heard" : "synth";
    if (i === heard && word && word.charStart >= s.charStart && word.charEnd <= s.charEnd) {
      add(cls, s.charStart, word.charStart);
      add(`${cls} word-now`, word.charStart, word.charEnd);
      add(cls, word.charEnd, s.charEnd);
    } else {
      add(cls, s.charStart, s.charEnd);
    }
    at = Math.max(at, s.charEnd);
  });
  add("pending", at, text.length);
  if (!text) box.textContent = "\u00a0";
}

function drawPlot() {
  const canvas = ui.plot;
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const pad = { l: 44, r: 8, t: 8, b: 18 };
  const pw = w - pad.l - pad.r;
  const ph = h - pad.t - pad.b;
  let top = 500;
  for (const p of history) top = Math.max(top, p.buffered, p.frame);
  top = Math.ceil((top * 1.1) / 250) * 250;
  const now = performance.now();
  const x = (t) => pad.l + pw * (1 - (now - t) / (PLOT_SECONDS * 1000));
  const y = (v) => pad.t + ph * (1 - v / top);

  // Grid and labels.
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#8a94a6";
  g.strokeStyle = "#e6e9ef";
  g.lineWidth = 1;
  const stepMs = top > 2000 ? 1000 : top > 1000 ? 500 : 250;
  for (let v = 0; v <= top; v += stepMs) {
    g.beginPath();
    g.moveTo(pad.l, y(v) + 0.5);
    g.lineTo(w - pad.r, y(v) + 0.5);
    g.stroke();
    g.fillText(`${v}`, 4, y(v) + 4);
  }
  for (let s = 0; s <= PLOT_SECONDS; s += 5) {
    g.fillText(`-${PLOT_SECONDS - s}s`, pad.l + (pw * s) / PLOT_SECONDS - 10, h - 4);
  }

  const line = (key, color, fill) => {
    if (history.length < 2) return;
    g.beginPath();
    history.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p[key])) : g.moveTo(x(p.t), y(p[key]))));
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.stroke();
    if (fill) {
      g.lineTo(x(history[history.length - 1].t), y(0));
      g.lineTo(x(history[0].t), y(0));
      g.closePath();
      g.fillStyle = fill;
      g.fill();
    }
  };
  g.save();
  g.beginPath();
  g.rect(pad.l, pad.t, pw, ph);
  g.clip();
  line("buffered", "#2f6fed", "rgba(47, 111, 237, 0.12)");
  line("frame", "#e8833a", null);
  g.restore();
}

// ---------------------------------------------------------------------------------------------
// Voices and wiring.

function fillVoices(voices, defaultVoice) {
  ui.voice.replaceChildren();
  const byLang = new Map();
  for (const v of voices) {
    const lang = v.language || "voices";
    if (!byLang.has(lang)) byLang.set(lang, []);
    byLang.get(lang).push(v);
  }
  for (const [lang, list] of byLang) {
    const group = document.createElement("optgroup");
    group.label = lang;
    for (const v of list) {
      const option = document.createElement("option");
      option.value = v.name;
      option.textContent = v.gender ? `${v.name} (${v.gender})` : v.name;
      group.appendChild(option);
    }
    ui.voice.appendChild(group);
  }
  if (defaultVoice) ui.voice.value = defaultVoice;
  ui.speak.disabled = ui.live.checked;
  window.ttsReady = true;
}

async function loadVoices() {
  try {
    const key = ui.apiKey.value.trim();
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    const response = await fetch(`${HTTP_BASE}/v1/voices`, { headers });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    fillVoices(body.voices, body.default);
  } catch (err) {
    // Another origin without CORS, or the model still loading: the socket's `ready` lists
    // the voice names too.
    console.info("voices from /v1/voices unavailable, using the socket's ready message:", err.message);
    connect().catch((e) => showMessage(`cannot reach the server: ${e.message}`, true));
  }
}

ui.speed.addEventListener("input", () => (ui.speedValue.textContent = `${Number(ui.speed.value).toFixed(2)}×`));
ui.speak.addEventListener("click", () => speak());
ui.stop.addEventListener("click", () => stop());
ui.live.addEventListener("change", () => setLive(ui.live.checked));
ui.apiKey.addEventListener("change", () => {
  if (ws) ws.close(); // the next connection presents the new key
  ws = null;
  wsReady = null;
  showMessage("");
  loadVoices();
});
ui.text.addEventListener("input", () => pumpLive());
ui.text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !ui.live.checked) speak();
});

ui.speak.disabled = true; // until the voices are known
ui.speedValue.textContent = `${Number(ui.speed.value).toFixed(2)}×`;
setState("idle");
setInterval(render, 100);
loadVoices();
