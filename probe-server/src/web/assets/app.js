// The browser test page (issue 17): the browser's own WebRTC stack connects to the candidates
// RTCD advertises, measures each layer, posts the raw figures and shows the server's verdict.
// Plain ES module, no build step, no external request, and no secure-context-only API: the
// page is served over plain HTTP on the probe port. The JSON posted to /report uses the field
// names of probe_proto::web::Measurements (probe-proto/src/web/mod.rs); keep them in step.

const params = new URLSearchParams(location.search);
// 50 msg/s for 5 s; `audio_s=1..5` shortens it (the test suite's failure scenarios).
const audioS = Math.min(5, Math.max(1, Math.round(Number(params.get("audio_s")) || 5)));
const AUDIO = { stream: 1, size: 160, count: 50 * audioS, gapMs: 20 };
const BURST = { stream: 2, size: 1200, perBurst: 30, bursts: 10, gapMs: 100 }; // 1 s of bursts
const GATHER_MS = 3000; // the throw-away gathering connection
const OFFER_GATHER_MS = 1000; // the server is ICE-lite and learns our address from STUN
const STRAGGLER_MS = 1000; // echoes still in flight after the last send
const STATS_MS = 2000;
const FIRST_SLOT_WAIT_MS = 90000; // a busy server: how long a run's first ask waits for a place
const SLOT_WAIT_MS = 40000; // a later leg: every session holding a place ends within 35 s
const SLOT_RETRY_MS = 3000; // asks again after 3–6 s

const token = params.get("t");
const deadlineMs = Math.min(30000, Math.max(1000, Math.round(Number(params.get("deadline_ms")) || 10000)));
// HTTP calls get at least 10 s: a loaded server is slow, not broken.
const apiMs = Math.max(deadlineMs, 10000);

const $ = (id) => document.getElementById(id);
const now = () => performance.now();
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
const round = (v) => Math.round(v * 1000) / 1000;
const secs = (ms) => (ms / 1000).toFixed(ms % 1000 ? 1 : 0) + " s";
const str = (v) => (typeof v === "string" ? v : "");
const int = (v) => (Number.isFinite(v) && v >= 0 ? Math.floor(v) : 0);
const errText = (e) => String((e && e.message) || e || "unknown error");
const NO_WEBRTC = "This browser has WebRTC turned off or does not support it, so calls cannot work in it; turn WebRTC on (or use another browser) and run again.";

/** Rejects when `p` has not settled within `ms`: every await of the page goes through this. */
function timeout(p, ms, what) {
  let id;
  const late = new Promise((_, rej) => {
    id = setTimeout(() => rej(new Error(`${what} took longer than ${secs(ms)}`)), ms);
  });
  return Promise.race([Promise.resolve(p).finally(() => clearTimeout(id)), late]);
}

/** Polls `check` (sync or async) until it is true (→ true) or `ms` passed (→ false). */
async function until(check, ms) {
  const end = now() + ms;
  for (;;) {
    try {
      if (await timeout(check(), 1000, "A check")) return true;
    } catch {
      // A failed check is a "not yet".
    }
    const left = end - now();
    if (left <= 0) return false;
    await sleep(Math.min(50, left));
  }
}

/** POSTs JSON; the server's `{"error": "…"}` sentence becomes the thrown message. */
async function api(path, body) {
  const url = token === null ? path : `${path}${path.includes("?") ? "&" : "?"}t=${encodeURIComponent(token)}`;
  const ctl = new AbortController();
  let resp;
  try {
    const init = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), cache: "no-store", signal: ctl.signal };
    resp = await timeout(fetch(url, init), apiMs, "The server's answer");
  } catch (e) {
    ctl.abort();
    throw new Error(`Could not reach the test server: ${errText(e)}. Check the link and the network, then run again.`);
  }
  let data = null;
  try {
    data = await timeout(resp.json(), apiMs, "Reading the server's answer");
  } catch {
    // Not JSON: said below.
  }
  if (!resp.ok) {
    const said = data && typeof data.error === "string" && data.error;
    const err = new Error(said || `The test server answered HTTP ${resp.status}; run again, or ask the administrator to check probe-server's log.`);
    // The caller tells "nothing to test here" (404: RTCD advertises no such candidates) from a failure.
    err.status = resp.status;
    throw err;
  }
  if (!data || typeof data !== "object") throw new Error("The test server's answer was not JSON; ask the administrator to check probe-server's log.");
  return data;
}

/** One `a=candidate` / `candidate:` line → GatheredCandidate, from the SDP grammar (RFC 8839). */
function parseCandidate(line) {
  const f = line.replace(/^a=/, "").trim().split(/\s+/);
  if (f.length < 8 || !/^candidate:/i.test(f[0])) return null;
  const typ = f.indexOf("typ");
  const port = int(Number(f[5]));
  return { protocol: f[2].toLowerCase(), type: typ > 0 ? str(f[typ + 1]) : "", address: f[4], port: port <= 65535 ? port : 0 };
}

/** Gathering: which candidates can this browser produce at all (no servers, so host ones). */
async function gather() {
  const g = { complete: false, ms: null, candidates: [] };
  if (typeof RTCPeerConnection !== "function") throw new Error(NO_WEBRTC);
  const pc = new RTCPeerConnection({ iceServers: [] });
  const t0 = now();
  try {
    pc.createDataChannel("gather");
    const done = new Promise((res) => {
      pc.addEventListener("icecandidate", (e) => {
        const c = e.candidate && e.candidate.candidate ? parseCandidate(e.candidate.candidate) : null;
        if (c) g.candidates.push(c);
        if (!e.candidate) res();
      });
      pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && res());
    });
    await timeout(pc.createOffer().then((o) => pc.setLocalDescription(o)), GATHER_MS, "Creating an offer");
    try {
      await timeout(done, Math.max(1, GATHER_MS - (now() - t0)), "Gathering");
      g.complete = true;
      g.ms = round(now() - t0);
    } catch {
      // Not complete in time: `complete` stays false, what arrived is kept.
    }
  } finally {
    pc.close();
  }
  return g;
}

function describeGathering(g) {
  const n = (p) => g.candidates.filter((c) => c.protocol === p).length;
  const mdns = g.candidates.filter((c) => c.address.endsWith(".local")).length;
  const types = [...new Set(g.candidates.map((c) => c.type))].join(", ") || "none";
  return `${n("udp")} UDP, ${n("tcp")} TCP candidate(s)${mdns ? `, ${mdns} behind mDNS names` : ""}; types: ${types}${g.complete ? "" : " (gathering did not finish in time)"}`;
}

function blankLeg(leg) {
  return {
    leg, session: "", deadline_ms: deadlineMs,
    ice_connected_ms: null, dtls_connected_ms: null, dc_open_ms: null,
    ice_state: "", dtls_state: "", pc_state: "",
    pairs: [], selected: null, audio: null, burst: null, error: null,
  };
}

/** The DTLS transport's state where the browser exposes it (pc.sctp is missing in older ones). */
function sctpState(pc) {
  const t = pc.sctp && pc.sctp.transport;
  return t && typeof t.state === "string" ? t.state : "";
}

async function statsDtlsState(pc) {
  const stats = await pc.getStats();
  let s = "";
  stats.forEach((v) => {
    if (v.type === "transport" && !s) s = str(v.dtlsState);
  });
  return s;
}

/** Records, in `r`, when ICE, DTLS and the data channel came up (ms after setRemoteDescription). */
function track(pc, dc, r) {
  const t0 = now();
  const at = () => round(now() - t0);
  let watched = null;
  const ice = () => {
    const s = pc.iceConnectionState;
    if (r.ice_connected_ms === null && (s === "connected" || s === "completed")) r.ice_connected_ms = at();
  };
  const dtls = () => {
    // connectionState "connected" needs every DTLS transport connected (W3C webrtc-pc 4.4.3).
    if (r.dtls_connected_ms === null && (sctpState(pc) === "connected" || pc.connectionState === "connected")) r.dtls_connected_ms = at();
  };
  const watch = () => {
    const t = pc.sctp && pc.sctp.transport;
    if (t && t !== watched && typeof t.addEventListener === "function") {
      watched = t;
      t.addEventListener("statechange", dtls);
    }
  };
  pc.addEventListener("iceconnectionstatechange", ice);
  pc.addEventListener("connectionstatechange", () => (ice(), dtls()));
  dc.addEventListener("open", () => {
    if (r.dc_open_ms === null) r.dc_open_ms = at();
  });
  return {
    poll() {
      watch();
      ice();
      dtls();
    },
    /** Where the browser hides the DTLS state, getStats, else "the channel opened" bounds it. */
    async pollDtls() {
      this.poll();
      if (r.dtls_connected_ms === null && !sctpState(pc) && (await statsDtlsState(pc)) === "connected") r.dtls_connected_ms = at();
      if (r.dtls_connected_ms === null && r.dc_open_ms !== null) r.dtls_connected_ms = r.dc_open_ms;
    },
  };
}

/** Stamps echoes: the server sends each message back unchanged, so seq finds its sample. */
function listenEchoes(dc) {
  const sent = new Map([[AUDIO.stream, new Map()], [BURST.stream, new Map()]]);
  dc.addEventListener("message", (e) => {
    const t = now();
    if (!(e.data instanceof ArrayBuffer) || e.data.byteLength < 5) return;
    const v = new DataView(e.data);
    const byStream = sent.get(v.getUint8(0));
    const s = byStream && byStream.get(v.getUint32(1));
    if (s && s.rtt_ms === null) s.rtt_ms = round(t - s.raw);
  });
  return sent;
}

function sendOne(dc, sent, kind, seq, out) {
  if (dc.readyState !== "open") return false;
  const buf = new Uint8Array(kind.size);
  buf[0] = kind.stream;
  new DataView(buf.buffer).setUint32(1, seq);
  const s = { seq, sent_ms: 0, rtt_ms: null, raw: now() };
  try {
    dc.send(buf);
  } catch {
    return false;
  }
  s.sent_ms = round(s.raw);
  out.push(s);
  sent.get(kind.stream).set(seq, s);
  return true;
}

/** Audio cadence: one message every 20 ms on an absolute schedule (timers drift, the plan does not). */
async function audioStream(dc, sent) {
  const out = [];
  const start = now();
  for (let i = 0; i < AUDIO.count; i++) {
    const wait = start + i * AUDIO.gapMs - now();
    if (wait > 0) await sleep(wait);
    if (!sendOne(dc, sent, AUDIO, i, out)) break;
  }
  return out;
}

/** Video-like: back-to-back 1,200-byte messages, a burst every 100 ms. */
async function burstStream(dc, sent) {
  const out = [];
  const start = now();
  for (let b = 0, seq = 0; b < BURST.bursts; b++) {
    const wait = start + b * BURST.gapMs - now();
    if (wait > 0) await sleep(wait);
    for (let i = 0; i < BURST.perBurst; i++, seq++) {
      if (!sendOne(dc, sent, BURST, seq, out)) return out;
    }
  }
  return out;
}

const samplesOf = (kind, out) => ({ size: kind.size, samples: out.map(({ seq, sent_ms, rtt_ms }) => ({ seq, sent_ms, rtt_ms })) });

function pairOf(s, byId) {
  const l = byId.get(s.localCandidateId) || {};
  const rm = byId.get(s.remoteCandidateId) || {};
  const port = int(rm.port !== undefined ? rm.port : rm.portNumber);
  const rtt = s.currentRoundTripTime;
  return {
    state: str(s.state), nominated: s.nominated === true,
    requests_sent: int(s.requestsSent), responses_received: int(s.responsesReceived),
    local_type: str(l.candidateType), local_protocol: str(l.protocol),
    remote_address: str(rm.address !== undefined ? rm.address : rm.ipAddress),
    remote_port: port <= 65535 ? port : 0, remote_protocol: str(rm.protocol),
    rtt_ms: Number.isFinite(rtt) ? round(rtt * 1000) : null,
  };
}

/** Final states and every candidate pair, from getStats, before the connection is closed. */
async function collect(pc, r) {
  r.ice_state = str(pc.iceConnectionState);
  r.pc_state = str(pc.connectionState);
  r.dtls_state = sctpState(pc);
  const stats = await timeout(pc.getStats(), STATS_MS, "getStats");
  const byId = new Map();
  let selId = "";
  let statsDtls = "";
  stats.forEach((s) => {
    byId.set(s.id, s);
    if (s.type === "transport") {
      selId = selId || str(s.selectedCandidatePairId);
      statsDtls = statsDtls || str(s.dtlsState);
    }
  });
  let selected = null;
  stats.forEach((s) => {
    if (s.type !== "candidate-pair") return;
    const p = pairOf(s, byId);
    r.pairs.push(p);
    // Firefox has no transport entry and flags the pair itself.
    if (s.id === selId || (!selId && s.selected === true)) selected = p;
  });
  r.selected = selected;
  if (!r.dtls_state) r.dtls_state = statsDtls || (r.dc_open_ms !== null ? "connected" : "");
}

/** Offer → POST /session → answer → ICE → DTLS → data channel → streams. Fills `r`. */
/** Legs the server refused because RTCD advertises no candidates of their kind (404): a
 * configuration without ICE-TCP works, so such a leg is no failure that calls for the dialed leg. */
const unadvertised = new WeakSet();

/**
 * POSTs a leg's offer, waiting for a place while the server is busy (429: its session caps,
 * in all or for this address — an office shares one). A connected leg's session ends when
 * the page closes it, one that never connected by 35 s, so a place comes free within that;
 * the run's first ask waits longer (other runs may hold the places). A first ask still
 * refused at its end stops the run: nothing was tested, and the server said why.
 */
async function askSession(leg, slot, sdp, say) {
  // Only the run's first ask may wait the long wait: the budget counts it once.
  const first = slot.first;
  slot.first = false;
  const end = now() + (first ? FIRST_SLOT_WAIT_MS : SLOT_WAIT_MS);
  for (;;) {
    try {
      return await api(`session?leg=${leg}`, { type: "offer", sdp });
    } catch (e) {
      const wait = SLOT_RETRY_MS * (1 + Math.random());
      // 503: the server cannot run any session (RTCD not running beside live mode, its peer
      // stopped): asking again, or for another leg, cannot help; its sentence ends the run.
      if (e && e.status === 503) e.stopRun = errText(e);
      if (!(e && e.status === 429)) throw e;
      if (now() + wait >= end) {
        if (first) e.stopRun = `The server stayed busy with other tests for ${secs(FIRST_SLOT_WAIT_MS)}; run the test again in a few minutes.`;
        throw e;
      }
      console.info(`${leg}: busy: ${errText(e)}`); // the server's sentence, for whoever reads the console
      const left = Math.round((end - now()) / 1000) * 1000;
      say(`the server is busy with other tests; keep this page open, it asks again for up to ${secs(left)}…`);
      await sleep(wait);
    }
  }
}

async function connectLeg(pc, r, slot, say) {
  const dc = pc.createDataChannel("probe", { ordered: false, maxRetransmits: 0 });
  dc.binaryType = "arraybuffer";
  const sent = listenEchoes(dc);
  await timeout(pc.createOffer().then((o) => pc.setLocalDescription(o)), deadlineMs, "Creating the offer").catch((e) => {
    throw new Error(`This browser could not create a WebRTC offer: ${errText(e)}`);
  });
  await until(() => pc.iceGatheringState === "complete", OFFER_GATHER_MS);
  say("asking the server for a session…");
  let reply;
  try {
    reply = await askSession(r.leg, slot, pc.localDescription.sdp, say);
    if (!reply.answer || typeof reply.answer.sdp !== "string") throw new Error("The test server's answer carried no SDP; ask the administrator to check probe-server's log.");
  } catch (e) {
    r.error = `Signalling failed: ${errText(e)}`;
    if (e && e.stopRun) r.stopRun = e.stopRun;
    if (e && e.status === 404) {
      unadvertised.add(r);
      r.skipped = errText(e);
    }
    return;
  }
  r.session = str(reply.session);
  const t = track(pc, dc, r);
  await timeout(pc.setRemoteDescription({ type: "answer", sdp: reply.answer.sdp }), deadlineMs, "Applying the server's answer").catch((e) => {
    throw new Error(`This browser refused the server's answer: ${errText(e)}`);
  });
  say("waiting for ICE…");
  const iceOver = () => pc.iceConnectionState === "failed" || pc.iceConnectionState === "closed";
  if (!(await until(() => (t.poll(), r.ice_connected_ms !== null || iceOver()), deadlineMs)) || r.ice_connected_ms === null) return;
  say("waiting for DTLS…");
  if (!(await until(async () => (await t.pollDtls(), r.dtls_connected_ms !== null || pc.connectionState === "failed"), deadlineMs)) || r.dtls_connected_ms === null) return;
  say("waiting for the data channel…");
  if (!(await until(() => dc.readyState !== "connecting", deadlineMs)) || dc.readyState !== "open") return;
  say(`sending audio-like traffic (${audioS} s)…`);
  const audio = await audioStream(dc, sent);
  say("sending video-like bursts (1 s)…");
  const burst = await burstStream(dc, sent);
  await sleep(STRAGGLER_MS);
  // The echo listener filled rtt_ms in place; an echo later than this counts as lost.
  r.audio = samplesOf(AUDIO, audio);
  r.burst = samplesOf(BURST, burst);
}

async function runLeg(leg, slot, say) {
  const r = blankLeg(leg);
  let pc;
  try {
    if (typeof RTCPeerConnection !== "function") throw new Error(NO_WEBRTC);
    pc = new RTCPeerConnection({ iceServers: [] });
  } catch (e) {
    r.error = typeof RTCPeerConnection === "function" ? `This browser could not start WebRTC: ${errText(e)}` : NO_WEBRTC;
    return r;
  }
  try {
    await connectLeg(pc, r, slot, say);
  } catch (e) {
    r.error = r.error || errText(e);
  }
  try {
    await collect(pc, r);
  } catch (e) {
    r.error = r.error || `Reading the connection's statistics failed: ${errText(e)}`;
  }
  pc.close();
  return r;
}

const echoed = (s) => (s ? s.samples.filter((x) => x.rtt_ms !== null).length : 0);
/** Messages sent and echoed over both streams. */
const tally = (r) => ({ sent: (r.audio ? r.audio.samples.length : 0) + (r.burst ? r.burst.samples.length : 0), back: echoed(r.audio) + echoed(r.burst) });

function median(xs) {
  if (!xs.length) return null;
  const v = [...xs].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function describeLeg(r) {
  const ms = (v) => `${Math.round(v)} ms`;
  if (r.error && r.ice_connected_ms === null) return { ok: false, text: r.error };
  if (r.ice_connected_ms === null) {
    const sum = (k) => r.pairs.reduce((n, p) => n + p[k], 0);
    const why = !r.pairs.length ? "the browser formed no candidate pair" : sum("requests_sent") ? `${sum("responses_received")} of ${sum("requests_sent")} connectivity checks answered` : "no connectivity check went out";
    return { ok: false, text: `failed: ICE did not connect within ${secs(r.deadline_ms)} (${why})` };
  }
  if (r.dtls_connected_ms === null) return { ok: false, text: `failed: ICE connected in ${ms(r.ice_connected_ms)}, but DTLS did not connect within ${secs(r.deadline_ms)}` };
  if (r.dc_open_ms === null) return { ok: false, text: `failed: DTLS connected in ${ms(r.dtls_connected_ms)}, but the data channel did not open` };
  const { sent, back } = tally(r);
  const note = wasHidden ? "; the tab was in the background, so timings may be off" : "";
  return { ok: true, text: `connected (data channel open in ${ms(r.dc_open_ms)}); ${back} of ${sent} messages echoed${r.error ? `; ${r.error}` : ""}${note}` };
}

// ---- the page ----

const PHASES = ["gathering", "udp", "tcp", "dialed", "report"];
let current = null; // the run the page shows: { finished }
let lastDownload = null;
let wasHidden = false; // browsers slow the timers of a background tab: the cadence suffers
document.addEventListener("visibilitychange", () => (wasHidden = wasHidden || document.hidden));

function setPhase(run, phase, state, text) {
  // A run abandoned by the watchdog may still be going: it must not touch the page.
  if (run !== current || run.finished) return;
  const li = document.querySelector(`#phases li[data-phase="${phase}"]`);
  li.className = state;
  li.querySelector(".state").textContent = text;
  if (state === "running") window.__progress = phase === "gathering" || phase === "report" ? phase : `leg ${phase}`;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** The selected pair as "udp: this browser (prflx, udp) → 192.0.2.1:8443 (udp)". */
function pathOf(r) {
  const p = r.selected;
  if (!p) return `${r.leg}: no candidate pair was selected (${r.pairs.length} tried)`;
  const host = p.remote_address.includes(":") ? `[${p.remote_address}]` : p.remote_address;
  return `${r.leg}: this browser (${p.local_type || "?"}, ${p.local_protocol || "?"}) → ${host}:${p.remote_port} (${p.remote_protocol || "?"})`;
}

function renderLegs(legs) {
  const body = $("legs").tBodies[0];
  body.replaceChildren();
  const ms = (v) => (v === null ? "–" : String(Math.round(v)));
  for (const r of legs) {
    const tr = el("tr");
    tr.append(el("th", "", r.leg));
    tr.firstChild.scope = "row";
    const { sent, back } = tally(r);
    const rtts = r.audio ? r.audio.samples.filter((s) => s.rtt_ms !== null).map((s) => s.rtt_ms) : [];
    const med = median(rtts);
    for (const v of [ms(r.ice_connected_ms), ms(r.dtls_connected_ms), ms(r.dc_open_ms), sent ? `${back}/${sent}` : "–", med === null ? "–" : `${med.toFixed(1)} ms`]) tr.append(el("td", "", v));
    body.append(tr);
  }
  $("paths").replaceChildren(...legs.map((r) => el("li", "", pathOf(r))));
}

function renderReply(reply) {
  const rep = reply.report || {};
  const verdictLine = str(reply.text).split("\n").filter((l) => l.startsWith("Verdict:")).pop();
  const v = $("verdict");
  v.className = `verdict ${rep.ok ? "pass" : "fail"}`;
  v.textContent = verdictLine || (rep.ok ? "Verdict: PASS" : "Verdict: FAIL");
  const list = $("findings");
  list.replaceChildren();
  for (const f of Array.isArray(rep.findings) ? rep.findings : []) {
    const li = el("li", `sev-${str(f.severity)}`);
    const head = el("p", "finding-head");
    head.append(el("span", "sev", `${str(f.severity) || "note"}:`), " ", el("strong", "", str(f.summary)), " ", el("code", "", str(f.id)));
    li.append(head);
    if (f.fix) li.append(el("p", "fix", `Fix: ${f.fix}`));
    list.append(li);
  }
  if (!list.children.length) list.append(el("li", "", "No findings: nothing to fix."));
  $("stored").hidden = !reply.not_stored;
  $("stored").textContent = reply.not_stored ? `Not kept in the results store: ${reply.not_stored}` : "";
  $("text").textContent = str(reply.text);
  $("text-wrap").hidden = !reply.text;
}

function renderError(message) {
  const v = $("verdict");
  v.className = "verdict fail";
  v.textContent = `The test could not finish: ${message}`;
  $("findings").replaceChildren();
  $("stored").hidden = true;
  $("text").textContent = "";
  $("text-wrap").hidden = true;
}

function download() {
  if (!lastDownload) return;
  const blob = new Blob([JSON.stringify(lastDownload.data, null, 2) + "\n"], { type: "application/json" });
  const a = el("a");
  a.href = URL.createObjectURL(blob);
  a.download = lastDownload.name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function resetUi(run) {
  for (const p of PHASES) setPhase(run, p, "", "waiting");
  $("result").hidden = true;
  $("run").disabled = true;
  lastDownload = null;
}

async function measure(run, site) {
  setPhase(run, "gathering", "running", "running…");
  let gathering = { complete: false, ms: null, candidates: [] };
  try {
    gathering = await gather();
    setPhase(run, "gathering", "done", describeGathering(gathering));
  } catch (e) {
    setPhase(run, "gathering", "failed", `failed: ${errText(e)}`);
  }
  const legs = [];
  const slot = { first: true }; // the run's first ask for a session (see askSession)
  for (const leg of ["udp", "tcp", "dialed"]) {
    // The dialed leg is the reference that tells "UDP blocked" from "wrong advertised address":
    // only needed when an advertised leg failed.
    if (leg === "dialed" && legs.every((r) => r.ice_connected_ms !== null || unadvertised.has(r))) {
      setPhase(run, leg, "skipped", "not needed: every connection RTCD advertises reached ICE");
      continue;
    }
    setPhase(run, leg, "running", "starting…");
    const r = await runLeg(leg, slot, (text) => setPhase(run, leg, "running", text));
    if (r.stopRun) {
      setPhase(run, leg, "failed", "not run: the server could not run a test (see below)");
      // The legs after it will not run either: not left "waiting".
      const later = ["udp", "tcp", "dialed"].slice(["udp", "tcp", "dialed"].indexOf(leg) + 1);
      for (const l of later) setPhase(run, l, "skipped", "not run");
      throw new Error(r.stopRun);
    }
    const d = describeLeg(r);
    // Nothing to test here (the server's sentence says why): shown as skipped, not failed.
    if (r.skipped) setPhase(run, leg, "skipped", `not tested: ${r.skipped}`);
    else setPhase(run, leg, d.ok ? "done" : "failed", d.text);
    delete r.skipped;
    legs.push(r);
  }
  return { site: site || null, user_agent: navigator.userAgent, gathering, legs };
}

/** The longest a run can take if every await hits its deadline (each one has its own). */
function budgetMs() {
  const leg = 5 * deadlineMs + 2 * apiMs + OFFER_GATHER_MS + 3 * 1100 + 7000 + STRAGGLER_MS + STATS_MS;
  return 2 * GATHER_MS + 3 * leg + 2 * apiMs + 5000 + FIRST_SLOT_WAIT_MS + 2 * SLOT_WAIT_MS;
}

function finish(run, result, measurements, site) {
  if (run !== current || run.finished) return;
  clearTimeout(run.watchdog);
  if (result.error) {
    setPhase(run, "report", "failed", result.error);
    renderError(result.error);
  } else {
    const ok = Boolean(result.report && result.report.ok);
    setPhase(run, "report", ok ? "done" : "failed", `${ok ? "PASS" : "FAIL"}: see the result below`);
    renderReply(result);
  }
  run.finished = true;
  renderLegs(measurements ? measurements.legs : []);
  $("legs-wrap").hidden = !measurements;
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const name = (site || "browser").replace(/[^\w.-]+/g, "_");
  lastDownload = result.error
    ? measurements && { data: measurements, name: `calls-test-${name}-measurements-${stamp}.json` }
    : { data: result.report, name: `calls-test-${name}-${stamp}.json` };
  $("download").hidden = !lastDownload;
  $("download").textContent = result.error ? "Download measurements (JSON)" : "Download JSON";
  $("result").hidden = false;
  $("run").disabled = false;
  $("run").textContent = "Run again";
  window.__progress = result.error ? "error" : "done";
  window.__result = result;
  if (run.byUser) $("result-h").focus();
}

/** One whole run; sets window.__result exactly once, at its end. */
async function runAll(byUser) {
  const run = { finished: false, byUser, watchdog: 0 };
  current = run;
  window.__result = undefined;
  wasHidden = document.hidden;
  resetUi(run);
  const site = $("site").value.trim();
  let m = null;
  const budget = budgetMs();
  run.watchdog = setTimeout(() => finish(run, { error: `The test did not finish within ${secs(budget)}; run again, and if it repeats, report it with this browser's name and version.` }, m, site), budget);
  try {
    m = await measure(run, site);
    if (run !== current || run.finished) return;
    setPhase(run, "report", "running", "asking the server for the verdict…");
    finish(run, await api("report", m), m, site);
  } catch (e) {
    finish(run, { error: errText(e) }, m, site);
  }
}

function start() {
  $("site").value = params.get("site") || "";
  $("controls").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!$("run").disabled) runAll(true);
  });
  $("download").addEventListener("click", download);
  if (params.get("autorun") === "0") {
    window.__progress = "idle";
    $("run").textContent = "Run the test";
    return;
  }
  runAll(false);
}

start();
