// AudioWorkletProcessor "ring-player": one long-lived ring buffer for the whole page.
//
// The page posts Float32 PCM at the stream's rate (24 kHz); this processor plays it at the
// context's rate (linear resampling when they differ), waits for a pre-roll before starting,
// plays silence through underruns without ever stopping, fades in/out to avoid clicks, and
// reports {played, buffered, underruns, started, drained} back every ~100 ms.
//
// Adaptive start: the first start also waits for the page's "plan" (sent when the first
// segment is complete and its generation time is known), which may hold playback a little
// longer after the first audio, so that a slow server's second segment arrives in time.
//
// Messages in (port):
//   {type: "reset", token, srcRate, prerollMs, startDelayMs}  new stream: fade out what is left,
//                                                 zero counters, wait for a plan
//   {type: "plan", holdMs}                       start no earlier than holdMs after first audio
//   {type: "audio", samples: Float32Array}       append PCM of the current stream
//   {type: "end"}                                no more audio for this stream: play out the rest
//   {type: "stop"}                               fade out quickly and drop the buffer
// Messages out: {type: "status", token, played, buffered, underruns, started, drained}
//   played/buffered are in source-rate samples (what the `played` protocol message counts).

const CAPACITY_SECONDS = 30;
const FADE_SECONDS = 0.005;
const REPORT_SECONDS = 0.1;
// Without a plan, start anyway once this much is buffered (a plan normally comes with the first
// segment's last frame).
const PLAN_WAIT_SECONDS = 1.0;

class RingPlayer extends AudioWorkletProcessor {
  constructor() {
    super();
    this.srcRate = 24000;
    this.ring = new Float32Array(CAPACITY_SECONDS * this.srcRate);
    this.readIdx = 0; // next source sample to play
    this.count = 0; // source samples buffered
    this.frac = 0; // resampler phase between ring[readIdx] and ring[readIdx + 1]
    this.token = 0;
    this.prerollSamples = Math.round(0.12 * this.srcRate);
    this.holdFrames = 0; // minimum wait after the first frame before the first start
    this.awaitPlan = false; // first start waits for the page's plan (or PLAN_WAIT_SECONDS)
    this.tail = null; // faded-out remainder of a stopped stream, at the context rate
    this.tailPos = 0;
    this.resetCounters();
    this.sinceReport = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  resetCounters() {
    this.played = 0;
    this.underruns = 0;
    this.started = false; // playback of this stream has begun (pre-roll reached once)
    this.playing = false; // currently outputting (false while pre-rolling or re-buffering)
    this.dry = false; // inside a dry spell (counts one underrun)
    this.ended = false; // all audio of the stream has arrived
    this.drained = false; // ended and everything played
    this.gain = 0; // fade-in ramp, 0..1
    this.dropped = 0;
    this.firstAudioAt = null; // currentFrame when the stream's first audio arrived
  }

  onMessage(msg) {
    switch (msg.type) {
      case "audio":
        this.push(msg.samples);
        break;
      case "end":
        this.ended = true;
        break;
      case "plan":
        this.holdFrames = Math.max(this.holdFrames, Math.round((msg.holdMs / 1000) * sampleRate));
        this.awaitPlan = false;
        break;
      case "stop":
        this.fadeOutAndClear();
        this.ended = true;
        this.report();
        break;
      case "reset":
        this.fadeOutAndClear();
        this.resetCounters();
        this.token = msg.token;
        if (msg.srcRate && msg.srcRate !== this.srcRate) {
          this.srcRate = msg.srcRate;
          this.ring = new Float32Array(CAPACITY_SECONDS * this.srcRate);
        }
        this.prerollSamples = Math.round(((msg.prerollMs ?? 120) / 1000) * this.srcRate);
        this.holdFrames = Math.round(((msg.startDelayMs ?? 0) / 1000) * sampleRate);
        this.awaitPlan = true;
        this.report();
        break;
    }
  }

  push(samples) {
    if (this.firstAudioAt === null) this.firstAudioAt = currentFrame;
    const cap = this.ring.length;
    let n = samples.length;
    if (this.count + n > cap) {
      // Cannot happen with the server's ~2 s lead; drop the excess rather than overwrite.
      this.dropped += this.count + n - cap;
      n = cap - this.count;
    }
    let w = (this.readIdx + this.count) % cap;
    const first = Math.min(n, cap - w);
    this.ring.set(samples.subarray(0, first), w);
    if (n > first) this.ring.set(samples.subarray(first, n), 0);
    this.count += n;
    this.drained = false;
  }

  // Next output sample from the ring (linear interpolation), or null when it is empty.
  nextSample(ratio) {
    if (this.count === 0) return null;
    const cap = this.ring.length;
    const s0 = this.ring[this.readIdx];
    const s1 = this.count > 1 ? this.ring[(this.readIdx + 1) % cap] : s0;
    const out = s0 + (s1 - s0) * this.frac;
    this.frac += ratio;
    while (this.frac >= 1 && this.count > 0) {
      this.frac -= 1;
      this.readIdx = (this.readIdx + 1) % cap;
      this.count--;
      this.played++;
    }
    if (this.count === 0) this.frac = 0;
    return out;
  }

  // Turn the next few ms of buffered audio into a fading tail and drop the rest: stopping or
  // switching streams then never cuts a waveform mid-swing.
  fadeOutAndClear() {
    if (this.playing && this.count > 0) {
      const ratio = this.srcRate / sampleRate;
      const len = Math.max(1, Math.round(FADE_SECONDS * sampleRate));
      const tail = new Float32Array(len);
      for (let i = 0; i < len; i++) {
        const s = this.nextSample(ratio);
        if (s === null) break;
        tail[i] = s * this.gain * (1 - i / len);
      }
      this.tail = tail;
      this.tailPos = 0;
    }
    this.count = 0;
    this.frac = 0;
    this.playing = false;
    this.gain = 0;
  }

  process(inputs, outputs) {
    const out = outputs[0];
    const ch0 = out[0];
    const frames = ch0.length;
    const ratio = this.srcRate / sampleRate;
    const fadeStep = 1 / Math.max(1, FADE_SECONDS * sampleRate);
    const fadeSrc = FADE_SECONDS * this.srcRate;

    // Start (or resume after an underrun) once the pre-roll is buffered, or at once when the
    // stream has ended and whatever is left is all there will be. The first start also waits
    // for the plan and its hold.
    const planPending = this.awaitPlan && this.count < PLAN_WAIT_SECONDS * this.srcRate;
    const held =
      !this.started && (planPending || currentFrame - this.firstAudioAt < this.holdFrames);
    if (!this.playing && this.count > 0 && ((this.count >= this.prerollSamples && !held) || this.ended)) {
      this.playing = true;
      this.started = true;
      this.dry = false;
      this.gain = 0;
      this.report();
    }

    // An ended stream whose buffer is already empty (no audio at all, or it ran dry just
    // before the end was known) is drained too.
    if (this.ended && !this.playing && this.count === 0 && !this.drained) {
      this.drained = true;
      this.report();
    }

    for (let i = 0; i < frames; i++) {
      let v = 0;
      if (this.tail) {
        v += this.tail[this.tailPos++];
        if (this.tailPos >= this.tail.length) this.tail = null;
      }
      if (this.playing) {
        // Fade out ahead of running dry (the buffer tells us how much is left).
        const edge = this.count < fadeSrc ? this.count / fadeSrc : 1;
        const s = this.nextSample(ratio);
        if (s === null) {
          this.onDry();
        } else {
          this.gain = Math.min(1, this.gain + fadeStep);
          v += s * Math.min(this.gain, edge);
        }
      }
      ch0[i] = v;
    }
    for (let c = 1; c < out.length; c++) out[c].set(ch0);

    this.sinceReport += frames;
    if (this.sinceReport >= REPORT_SECONDS * sampleRate) this.report();
    return true; // keep the node alive for the whole page lifetime
  }

  onDry() {
    this.playing = false;
    this.gain = 0;
    if (this.ended) {
      this.drained = true;
    } else if (!this.dry) {
      // Count one underrun per dry spell, only after playback had started.
      this.dry = true;
      this.underruns++;
    }
    this.report();
  }

  report() {
    this.sinceReport = 0;
    this.port.postMessage({
      type: "status",
      token: this.token,
      played: this.played,
      buffered: this.count,
      underruns: this.underruns,
      started: this.started,
      drained: this.drained,
      dropped: this.dropped,
    });
  }
}

registerProcessor("ring-player", RingPlayer);
