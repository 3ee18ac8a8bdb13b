// The browser reference client: what a browser voice app does to survive its transport failing.
//
// The same rules as clients/reference_webrtc.py, in the browser's own WebRTC stack:
// - an ephemeral token from the app's backend for every call (the API key never reaches the page);
// - a microphone track (getUserMedia) and the `oai-events` data channel; nothing is sent before `open`;
// - a watchdog: the server's audio track sends a packet every 20 ms for the whole call, so a getStats
//   `packetsReceived` that stops growing (and no event either) for `silenceAfter` seconds is `degraded`, and
//   still silent after `grace` more the call is dead — seconds, not the ~16 s Chrome takes to say `failed`;
//   a connection `failed`/`closed` or a closed data channel is dead at once;
// - a NEW call with a fresh token on every reconnect, the conversation restored into it (a system summary at
//   `root`, then the most recent messages replayed; assistant parts `output_text`), backoff between attempts;
// - rotation before the session cap (`expires_at` − min(leadMax, leadFraction × lifetime)), make before
//   break;
// - a network health monitor on the same getStats: packet loss over the last second, round-trip time and
//   jitter; past a threshold the path is `poor` (reported, not acted on: a bad network is not a dead one);
// - the conversation and the scenario's progress in `sessionStorage`, so a page reload mid-conversation
//   resumes: the same schedule, the remembered messages restored into the new call, a turn that was
//   waiting for its reply asked again.
// What the browser reports (ICE / connection / data-channel states, getStats samples) goes to the backend,
// which puts it into the simulator's history.

const params = new URLSearchParams(location.search);
const backend = (params.get("backend") || location.origin).replace(/\/$/, "");
const STORE_KEY = "rtsim.browser-client";
const RESTORE_PREFIX = "restore_";
const STATS_EVERY_MS = 200;
const STATS_REPORT_EVERY_MS = 1000;
// The network health monitor's thresholds, over each 1 s window of getStats deltas (loss: the seeds' 5%).
const POOR_LOSS = 0.05;
const POOR_RTT_S = 0.3;
const POOR_JITTER_S = 0.03;

class CallRefused extends Error {}
class CallAbandoned extends Error {}
class Timeout extends Error {}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function withTimeout(promise, ms, what) {
  let timer;
  const expiry = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Timeout(`${what} after ${ms} ms`)), ms);
  });
  return Promise.race([promise, expiry]).finally(() => clearTimeout(timer));
}

// ---- the conversation, kept across page reloads ------------------------------------------------------

class Store {
  constructor() {
    const raw = sessionStorage.getItem(STORE_KEY);
    this.resumed = raw !== null;
    this.data = raw
      ? JSON.parse(raw)
      : { startedAt: Date.now(), nextTurn: 0, pending: null, memory: [], calls: 0, reconnects: 0,
          rotations: 0, reloads: 0, done: false };
    if (this.resumed) this.data.reloads += 1;
    this.save();
  }
  save() {
    sessionStorage.setItem(STORE_KEY, JSON.stringify(this.data));
  }
  elapsed() {
    return (Date.now() - this.data.startedAt) / 1000;
  }
}

const store = new Store();

function report(event, fields = {}) {
  const line = { t: Math.round(store.elapsed() * 1000) / 1000, event, ...fields };
  const log = document.getElementById("log");
  if (log) log.textContent += JSON.stringify(line) + "\n";
  // keepalive: a report made while the page unloads still arrives.
  return fetch(`${backend}/report`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(line),
    keepalive: true,
  }).catch(() => {});
}

async function backendPost(path, body = {}) {
  const response = await fetch(`${backend}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new CallRefused(`${path}: HTTP ${response.status} ${await response.text()}`);
  return response.json();
}

// ---- one call -----------------------------------------------------------------------------------------

class Call {
  constructor(client, token) {
    this.client = client;
    this.token = token;
    this.pc = new RTCPeerConnection({ iceServers: [] });
    this.channel = this.pc.createDataChannel("oai-events");
    this.callId = null;
    this.received = [];
    this.waiters = new Set();
    this.abandoned = false;
    this.lastInbound = performance.now();
    this.packetsReceived = 0;
    this.lastStats = null;
    this.pc.addTrack(client.mic, client.micStream);
    this.pc.ontrack = (event) => {
      // Played, as an app does; the stats count packets either way.
      const audio = new Audio();
      audio.autoplay = true;
      audio.srcObject = event.streams[0] || new MediaStream([event.track]);
    };
    const transport = (what, state) => client.transport(this, what, state);
    this.pc.onconnectionstatechange = () => transport("connection", this.pc.connectionState);
    this.pc.oniceconnectionstatechange = () => transport("ice", this.pc.iceConnectionState);
    this.opened = new Promise((resolve) => {
      this.channel.onopen = () => {
        transport("datachannel", "open");
        resolve();
      };
    });
    this.channel.onclose = () => {
      transport("datachannel", "closed");
      this.wake();
    };
    this.channel.onmessage = (message) => {
      const event = JSON.parse(message.data);
      this.lastInbound = performance.now();
      this.received.push(event);
      client.onEvent(this, event);
      this.wake();
    };
  }

  async connect(apiBase, model, timeoutMs) {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await this.gathered(2000); // one offer, no trickle: send it with its host candidates
    // Cross-origin, with Authorization: the browser preflights this request (CORS).
    const response = await fetch(`${apiBase}/realtime/calls?model=${encodeURIComponent(model)}`, {
      method: "POST",
      body: this.pc.localDescription.sdp,
      headers: { Authorization: `Bearer ${this.token}`, "Content-Type": "application/sdp" },
    });
    const body = await response.text();
    if (response.status !== 201) throw new CallRefused(`calls: HTTP ${response.status} ${body}`);
    this.callId = (response.headers.get("Location") || "").split("/").pop() || null;
    await this.pc.setRemoteDescription({ type: "answer", sdp: body });
    await withTimeout(this.opened, timeoutMs, "data channel not open");
  }

  gathered(ms) {
    if (this.pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (this.pc.iceGatheringState === "complete") resolve();
      };
      this.pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, ms);
    });
  }

  send(event) {
    if (this.channel.readyState !== "open") throw new CallAbandoned(`data channel ${this.channel.readyState}`);
    this.channel.send(JSON.stringify(event));
  }

  // The first event from index `since` on that `match` accepts; CallAbandoned if the call dies first.
  waitFor(match, since, timeoutMs) {
    const accepts = typeof match === "string" ? (e) => e.type === match : match;
    return withTimeout(
      new Promise((resolve, reject) => {
        const waiter = () => {
          const found = this.received.slice(since).find(accepts);
          if (found) {
            this.waiters.delete(waiter);
            resolve(found);
          } else if (this.abandoned || this.channel.readyState === "closed") {
            this.waiters.delete(waiter);
            reject(new CallAbandoned("the call ended"));
          }
        };
        this.waiters.add(waiter);
        waiter();
      }),
      timeoutMs,
      `no ${typeof match === "string" ? match : "answer"}`,
    );
  }

  wake() {
    for (const waiter of [...this.waiters]) waiter();
  }

  // The path's health as the browser measures it; also what feeds the watchdog.
  async sample() {
    const stats = await this.pc.getStats();
    const sample = { call: this.callId };
    let selectedPair = null;
    stats.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) selectedPair = s.selectedCandidatePairId;
    });
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        Object.assign(sample, {
          packetsReceived: s.packetsReceived, packetsLost: s.packetsLost, jitter: s.jitter,
          bytesReceived: s.bytesReceived,
        });
      } else if (s.type === "remote-inbound-rtp" && s.kind === "audio") {
        Object.assign(sample, { remotePacketsLost: s.packetsLost, remoteFractionLost: s.fractionLost,
          remoteRoundTripTime: s.roundTripTime });
      } else if (s.type === "candidate-pair" && s.id === selectedPair) {
        sample.currentRoundTripTime = s.currentRoundTripTime; // from the STUN checks on the path in use
      } else if (s.type === "outbound-rtp" && s.kind === "audio") {
        sample.packetsSent = s.packetsSent;
      }
    });
    if (sample.currentRoundTripTime === undefined && this.lastStats) {
      // Not every report carries the pair's RTT (it is measured by the STUN checks, seconds apart): keep
      // the last one, or the health monitor would flap.
      sample.currentRoundTripTime = this.lastStats.currentRoundTripTime;
    }
    if ((sample.packetsReceived || 0) > this.packetsReceived) {
      this.packetsReceived = sample.packetsReceived;
      this.lastInbound = performance.now();
    }
    this.lastStats = sample;
    return sample;
  }

  silentFor() {
    return (performance.now() - this.lastInbound) / 1000;
  }

  close() {
    this.abandoned = true;
    this.wake();
    this.pc.close();
  }
}

// ---- the client ---------------------------------------------------------------------------------------

class Client {
  constructor(config, micStream) {
    this.config = config;
    this.settings = config.settings;
    this.micStream = micStream;
    this.mic = micStream.getAudioTracks()[0];
    this.mic.enabled = false; // the user is silent between spoken turns
    this.state = "idle";
    this.call = null;
    this.live = null; // a promise resolved when the client is live again
    this.setLive = () => {};
    this.responding = false;
    this.expiresAt = null;
    this.rotateAt = null;
    this.closed = false;
    this.fatal = null;
  }

  setState(state, reason) {
    this.state = state;
    document.getElementById("state").textContent = state;
    report("state", { to: state, reason });
  }

  transport(call, what, state) {
    report("transport", { call: call.callId, what, state, current: call === this.call });
  }

  async start(reason) {
    this.markNotLive();
    this.setState("connecting", reason);
    this.call = await this.openCall();
    this.goLive(store.resumed && store.data.calls > 1 ? "resumed after a page reload" : "connected");
    this.supervise();
    this.sampleStats();
  }

  markNotLive() {
    this.live = new Promise((resolve) => {
      this.setLive = resolve;
    });
  }

  goLive(reason) {
    this.responding = false;
    this.setState("live", reason);
    document.getElementById("call").textContent = this.call.callId;
    this.setLive();
  }

  async liveCall() {
    while (this.state !== "live" && this.state !== "degraded" && this.state !== "rotating") {
      if (this.fatal) throw new Error(this.fatal);
      await Promise.race([this.live, sleep(250)]);
    }
    return this.call;
  }

  // A user text turn and the reply's text; survives a reconnect in between (asked again on the new call).
  async ask(text) {
    for (;;) {
      const call = await this.liveCall();
      const mark = call.received.length;
      try {
        call.send({ type: "conversation.item.create",
          item: { type: "message", role: "user", content: [{ type: "input_text", text }] } });
        call.send({ type: "response.create" });
        return replyText(await call.waitFor("response.done", mark, 30000));
      } catch (error) {
        if (!(error instanceof CallAbandoned)) throw error;
        await sleep(50);
      }
    }
  }

  // A spoken turn: the microphone (Chromium's fake device, fed the test-audio kit's speech) is live for
  // the utterance; server VAD hears its start and its end, commits and answers.
  async speak(speechMs) {
    for (;;) {
      const call = await this.liveCall();
      const mark = call.received.length;
      this.mic.enabled = true;
      await sleep(speechMs);
      this.mic.enabled = false;
      try {
        return replyText(await call.waitFor("response.done", mark, 30000));
      } catch (error) {
        if (!(error instanceof CallAbandoned)) throw error;
        await sleep(50);
      }
    }
  }

  async supervise() {
    const s = this.settings;
    while (!this.closed) {
      await sleep(50);
      const call = this.call;
      if (!call || (this.state !== "live" && this.state !== "degraded")) continue;
      const dead = saidDead(call);
      if (dead) {
        await this.reconnect(dead);
        continue;
      }
      const silent = call.silentFor();
      if (this.state === "live" && silent > s.silence_after) {
        this.setState("degraded", `nothing received for ${silent.toFixed(1)} s`);
      } else if (this.state === "degraded") {
        if (silent < s.silence_after) this.setState("live", "traffic resumed");
        else if (silent > s.silence_after + s.grace) {
          await this.reconnect(`watchdog: nothing received for ${silent.toFixed(1)} s`);
          continue;
        }
      }
      if (this.state === "live" && this.rotateAt !== null && Date.now() / 1000 >= this.rotateAt) {
        await this.rotate();
      }
    }
  }

  async sampleStats() {
    let lastReport = 0;
    let windowStart = null; // the sample the current health window started from
    let quality = "good";
    while (!this.closed) {
      const call = this.call;
      if (call && !call.abandoned) {
        try {
          const sample = await call.sample();
          if (performance.now() - lastReport >= STATS_REPORT_EVERY_MS) {
            lastReport = performance.now();
            report("stats", sample);
            const health = windowStart && windowStart.call === sample.call ? assess(windowStart, sample) : null;
            windowStart = sample;
            if (health && health.quality !== quality) {
              quality = health.quality;
              report("health", health);
            }
          }
        } catch (error) {
          // a call closed between the check and getStats: the next tick samples the new one
        }
      }
      await sleep(STATS_EVERY_MS);
    }
  }

  async reconnect(reason) {
    this.markNotLive();
    this.setState("reconnecting", reason);
    store.data.reconnects += 1;
    store.save();
    const old = this.call;
    this.call = null;
    if (old) this.retire(old);
    try {
      this.call = await this.openCall();
    } catch (error) {
      this.fatal = String(error);
      this.setState("closed", `gave up: ${error}`);
      this.setLive();
      return;
    }
    this.goLive("reconnected");
  }

  async rotate() {
    if (this.responding && Date.now() / 1000 < this.expiresAt - 1) return; // let the model finish
    this.setState("rotating", "session cap ahead");
    const stillCurrent = [this.expiresAt, this.rotateAt];
    let fresh;
    try {
      fresh = await this.openCall(); // make before break: the old call stays up meanwhile
    } catch (error) {
      this.expiresAt = stillCurrent[0];
      this.rotateAt = Date.now() / 1000 + 1;
      this.setState("live", `rotation failed: ${error}`);
      return;
    }
    store.data.rotations += 1;
    store.save();
    const old = this.call;
    this.call = fresh;
    this.goLive("rotated");
    if (old) this.retire(old);
  }

  retire(call) {
    call.close();
    if (call.callId) backendPost("/hangup", { call_id: call.callId }).catch(() => {});
  }

  async openCall() {
    const s = this.settings;
    let lastError = null;
    for (let attempt = 0; attempt < s.max_attempts; attempt++) {
      let call = null;
      try {
        const token = await backendPost("/token");
        call = new Call(this, token.value);
        store.data.calls += 1;
        store.save();
        await call.connect(this.config.api_base, this.config.scenario.model, s.setup_timeout * 1000);
        const created = await call.waitFor("session.created", 0, s.setup_timeout * 1000);
        this.expiresAt = created.session.expires_at || null;
        if (this.expiresAt) {
          const lifetime = this.expiresAt - Date.now() / 1000;
          this.rotateAt = this.expiresAt - Math.min(s.rotate_lead_max, s.rotate_lead_fraction * lifetime);
        }
        await this.restore(call);
        report("connected", { session: created.session.id, call: call.callId });
        return call;
      } catch (error) {
        lastError = error;
        report("connect_failed", { reason: String(error), call: call ? call.callId : null });
        if (call) this.retire(call);
        await sleep(1000 * Math.min(s.backoff_cap, s.backoff_first * 2 ** attempt));
      }
    }
    throw new Error(`no call after ${s.max_attempts} attempts: ${lastError}`);
  }

  // Put the conversation back into a new session and wait until it has it all.
  async restore(call) {
    const entries = store.data.memory.filter((m) => m.text);
    if (!entries.length) return;
    const stem = RESTORE_PREFIX + Math.random().toString(16).slice(2, 10);
    const keep = this.settings.recent_turns;
    const recent = keep ? entries.slice(-keep) : [];
    const older = entries.slice(0, entries.length - recent.length);
    const summary = older.length
      ? "Summary of the conversation so far, continued on a new connection:\n" +
        older.map((m) => `${m.role === "user" ? "User" : "Assistant"}: ${m.text}`).join("\n")
      : "The conversation continues on a new connection; its most recent turns follow.";
    const items = [messageItem("system", summary, `${stem}_0`)];
    recent.forEach((m, k) => items.push(messageItem(m.role, m.text, `${stem}_${k + 1}`)));
    const mark = call.received.length;
    call.send({ type: "conversation.item.create", previous_item_id: "root", item: items[0] });
    for (const item of items.slice(1)) call.send({ type: "conversation.item.create", item });
    const last = items[items.length - 1].id;
    await call.waitFor((e) => e.type === "conversation.item.done" && e.item.id === last, mark,
      this.settings.setup_timeout * 1000);
    report("restored", { call: call.callId, summarized: older.length, replayed: recent.length });
  }

  onEvent(call, event) {
    if (call !== this.call) return; // a call being opened, or one left behind
    switch (event.type) {
      case "response.created":
        this.responding = true;
        break;
      case "response.done":
        this.responding = false;
        break;
      case "conversation.item.done":
        this.remember(event.item);
        break;
      case "conversation.item.input_audio_transcription.completed":
        this.updateItem(event.item_id, event.transcript || "");
        break;
      case "conversation.item.deleted":
        store.data.memory = store.data.memory.filter((m) => m.id !== event.item_id);
        store.save();
        break;
      case "error":
        report("error", { code: event.error?.code, message: event.error?.message });
        break;
    }
  }

  remember(item) {
    if (item.type !== "message" || !["user", "assistant"].includes(item.role)) return;
    if (item.id.startsWith(RESTORE_PREFIX)) return;
    const text = (item.content || []).map((p) => p.text || p.transcript || "").join(" ").trim();
    if (!this.updateItem(item.id, text)) {
      store.data.memory.push({ role: item.role, text, id: item.id });
      store.save();
    }
  }

  updateItem(id, text) {
    const found = store.data.memory.find((m) => m.id === id);
    if (found) {
      found.text = text || found.text;
      store.save();
    }
    return Boolean(found);
  }

  async close() {
    this.closed = true;
    this.setState("closed", "close()");
    if (this.call) {
      this.call.close();
      if (this.call.callId) await backendPost("/hangup", { call_id: this.call.callId }).catch(() => {});
    }
  }
}

// The path's health between two getStats samples of one call: loss over the window, RTT, jitter.
function assess(before, after) {
  const lost = (after.packetsLost || 0) - (before.packetsLost || 0);
  const received = (after.packetsReceived || 0) - (before.packetsReceived || 0);
  const loss = lost + received > 0 ? lost / (lost + received) : 0;
  const rtts = [after.currentRoundTripTime, after.remoteRoundTripTime].filter((v) => typeof v === "number");
  const rtt = rtts.length ? Math.max(...rtts) : null; // the pair's (STUN) and RTCP's: the worse of them
  const jitter = after.jitter ?? null;
  const reasons = [];
  if (loss > POOR_LOSS) reasons.push(`loss ${(100 * loss).toFixed(1)}%`);
  if (rtt !== null && rtt > POOR_RTT_S) reasons.push(`rtt ${Math.round(rtt * 1000)} ms`);
  if (jitter !== null && jitter > POOR_JITTER_S) reasons.push(`jitter ${Math.round(jitter * 1000)} ms`);
  return { quality: reasons.length ? "poor" : "good", loss, rtt, jitter, reasons, call: after.call };
}

function saidDead(call) {
  if (["failed", "closed"].includes(call.pc.connectionState)) return `connection ${call.pc.connectionState}`;
  if (["closing", "closed"].includes(call.channel.readyState)) return "data channel closed";
  return null;
}

function messageItem(role, text, id) {
  const type = role === "assistant" ? "output_text" : "input_text";
  return { id, type: "message", role, content: [{ type, text }] };
}

function replyText(done) {
  const parts = [];
  for (const item of done.response.output || []) {
    if (item.type !== "message") continue;
    for (const part of item.content || []) parts.push(part.transcript || part.text || "");
  }
  return parts.join(" ").trim();
}

// ---- the scenario's user --------------------------------------------------------------------------------

async function play(client, scenario) {
  const endAt = store.data.startedAt + scenario.end_at * 1000;
  for (let index = store.data.nextTurn; index < scenario.turns.length; index++) {
    const turn = scenario.turns[index];
    const pending = store.data.pending;
    // A turn asked before a reload whose reply never came is asked again, now (not lost).
    const again = pending !== null && pending.index === index;
    const due = store.data.startedAt + turn.at * 1000;
    if (!again && due > Date.now()) await sleep(due - Date.now());
    if (Date.now() >= endAt) break;
    store.data.pending = { index };
    store.save();
    report("turn_sent", { turn: index, mode: turn.mode, text: turn.say, again });
    const remaining = endAt - Date.now();
    try {
      const reply = await withTimeout(
        turn.mode === "audio" ? client.speak(turn.speech_ms) : client.ask(turn.say), remaining,
        "no reply before end_at");
      report("reply", { turn: index, status: "completed", text: reply });
    } catch (error) {
      report("turn_lost", { turn: index, reason: String(error) });
      break;
    }
    store.data.nextTurn = index + 1;
    store.data.pending = null;
    store.save();
  }
  if (endAt > Date.now()) await sleep(endAt - Date.now());
}

async function main() {
  const config = await (await fetch(`${backend}/config`)).json();
  if (store.data.done) {
    report("page_loaded", { resumed: true, done: true });
    return;
  }
  report("page_loaded", { resumed: store.resumed, reloads: store.data.reloads, memory: store.data.memory.length });
  const pending = store.data.pending;
  const memory = store.data.memory;
  if (pending !== null && memory.length && memory[memory.length - 1].role === "user" &&
      memory[memory.length - 1].text === config.scenario.turns[pending.index].say) {
    memory.pop(); // the cut-off turn is asked again below: restore the conversation without it
    store.save();
  }
  let code = 0;
  let client = null;
  try {
    const micStream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    client = new Client(config, micStream);
    const leaving = client;
    // The page is going away (a reload, a closed tab): hang the call up, or it lingers on the server
    // until consent expires. keepalive lets the request outlive the page.
    window.addEventListener("pagehide", () => {
      const callId = leaving.call && leaving.call.callId;
      if (!callId || leaving.closed) return;
      fetch(`${backend}/hangup`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ call_id: callId }),
        keepalive: true,
      });
    });
    await client.start(store.resumed ? "page reload" : "start");
    await play(client, config.scenario);
  } catch (error) {
    report("fatal", { reason: String(error) });
    code = 1;
  }
  if (client) {
    if (client.fatal) code = 1;
    await client.close();
  }
  store.data.done = true;
  store.save();
  await report("summary", { calls: store.data.calls, reconnects: store.data.reconnects,
    rotations: store.data.rotations, reloads: store.data.reloads });
  await report("exit", { code });
}

main();
