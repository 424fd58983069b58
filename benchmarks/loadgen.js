// The independent load generator: Node.js `ws` clients, the same for every contender.
//
//   node benchmarks/loadgen.js      (NODE_PATH=benchmarks/.node/node_modules)
//
// Written from the contenders' wire protocols, not from wsconsole's code, so the figures
// do not depend on the product's own client. Driven by JSON lines: the first stdin line
// is the spec, then one command per line, each answered by one JSON line on stdout.
//
// Spec: {role: "sub"|"pub"|"conn", kind: "harness"|"sio"|"plain",
//        targets: [{host, port, path, local?}], concurrency?, hist: {lowest,
//        precision, buckets}}
// The first reply is {event: "ready", connected, failed, error, connect_s, open_per_s}.
//
// Roles and commands:
// - sub: every target joins the room "bench"; each message carries its publish step `s`
//   and send time `t` (wall clock, ms). `report {step}` returns what arrived of that step
//   so far: received, a latency histogram in wsconsole's LatencyHistogram layout (seconds,
//   log buckets, so the percentiles are the product's own nearest-rank method) and per
//   client how many arrived and their worst latency (`hist` is the clients that kept up,
//   `lagged_hist` those told `lagging`); `count` the total received and how many are
//   open; `pause {first, count}` stops reading the sockets of those clients (deliberately
//   slow subscribers), `resume {first, count}` reads them again.
//   A join refused with `broker_unavailable` is sent again after 250 ms (docs/protocol.md).
//   Harness `lagging` notices are counted (the node closes such a client with 1013 next,
//   docs/protocol.md "Backpressure"; the benchmark does not reconnect it).
// - pub: `publish {rate, seconds, step}` paces publishes over the connections (1 ms
//   ticks), returns sent, seconds, acks and refusals by error code (harness only).
// - conn: connections only (handshake rate, idle memory); `count` says how many are open.
// - all: `cpu` (this process's CPU seconds), `quit`.
"use strict";

const WebSocket = require("ws");
const readline = require("readline");
const { performance } = require("perf_hooks");

const PAD = "x".repeat(64);
const now = () => performance.timeOrigin + performance.now(); // wall clock, ms, sub-ms

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

// wsconsole.core.metrics.LatencyHistogram's bucket layout, given by the spec (seconds).
class Histogram {
  constructor(layout) {
    this.lowest = layout.lowest;
    this.highest = layout.highest;
    this.logBase = Math.log1p(layout.precision);
    this.last = layout.buckets - 1;
    this.counts = new Map();
    this.count = 0;
    this.total = 0;
    this.min = Infinity;
    this.max = -Infinity;
  }
  record(seconds) {
    let index;
    if (seconds <= this.lowest) index = 0;
    else if (seconds >= this.highest) index = this.last;
    else index = Math.min(this.last, 1 + Math.floor(Math.log(seconds / this.lowest) / this.logBase));
    this.counts.set(index, (this.counts.get(index) || 0) + 1);
    this.count += 1;
    this.total += seconds;
    if (seconds < this.min) this.min = seconds;
    if (seconds > this.max) this.max = seconds;
  }
  json() {
    return {
      counts: Object.fromEntries(this.counts),
      count: this.count,
      total: this.total,
      min: this.count ? this.min : null,
      max: this.count ? this.max : null,
    };
  }
}

// What one step's messages did on this process's clients: a latency histogram per client,
// merged at the report, so the clients the node found lagging can be told apart.
class StepStats {
  constructor(layout, clients) {
    this.received = 0;
    this.layout = layout;
    this.hists = new Array(clients).fill(null);
    this.perClient = new Array(clients).fill(0);
    this.worst = new Array(clients).fill(0);
  }
  hist(index) {
    let hist = this.hists[index];
    if (hist === null) {
      hist = new Histogram(this.layout);
      this.hists[index] = hist;
    }
    return hist;
  }
  merged(keep) {
    const out = new Histogram(this.layout);
    this.hists.forEach((hist, index) => {
      if (hist === null || !keep(index)) return;
      for (const [bucket, n] of hist.counts) out.counts.set(bucket, (out.counts.get(bucket) || 0) + n);
      out.count += hist.count;
      out.total += hist.total;
      out.min = Math.min(out.min, hist.min);
      out.max = Math.max(out.max, hist.max);
    });
    return out.json();
  }
}

const MESSAGE = Buffer.from('{"type":"message"');
const ACK = Buffer.from('{"type":"ack"');
const JOINED = Buffer.from('{"type":"joined"');
const LAGGING = Buffer.from('{"type":"lagging"');
const ERROR = Buffer.from('{"type":"error"');

function starts(buf, prefix) {
  return buf.length >= prefix.length && buf.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

function numberAfter(buf, key, from) {
  const at = buf.indexOf(key, from);
  if (at < 0) return NaN;
  let end = at + key.length;
  while (end < buf.length) {
    const c = buf[end];
    if ((c >= 48 && c <= 57) || c === 46 || c === 45 || c === 101 || c === 43) end++;
    else break;
  }
  return Number(buf.toString("latin1", at + key.length, end));
}

class Client {
  constructor(index, target, spec, sink) {
    this.index = index;
    this.target = target;
    this.kind = spec.kind;
    this.role = spec.role;
    this.sink = sink;
    this.ws = null;
    this.open = false;
    this.seq = 0;
    this.epoch = null;
    this.lagging = 0;
    this.joinRetries = 0;
  }

  connect(timeoutMs) {
    const t = this.target;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://${t.host}:${t.port}${t.path}`, {
        perMessageDeflate: false,
        localAddress: t.local || undefined,
        handshakeTimeout: timeoutMs,
      });
      this.ws = ws;
      let settled = false;
      const done = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(this);
      };
      const timer = setTimeout(() => done(new Error("timeout")), timeoutMs);
      this.ready = done;
      ws.on("open", () => {
        this.open = true;
        if (this.kind === "harness" && this.role !== "pub") this.join(null);
        else if (this.kind === "plain" || (this.kind === "harness" && this.role === "pub")) {
          done();
        }
      });
      ws.on("message", (data) => this.onMessage(data));
      ws.on("unexpected-response", (req, res) => done(new Error(`HTTP ${res.statusCode}`)));
      ws.on("error", (err) => done(err));
      ws.on("close", (code) => {
        this.open = false;
        done(new Error(`closed ${code}`));
        this.sink.closed(this, code);
      });
    });
  }

  join(since) {
    const fields = { type: "join", room: "bench" };
    if (since !== null) {
      fields.since = since;
      if (this.epoch !== null) fields.epoch = this.epoch;
    }
    this.ws.send(JSON.stringify(fields));
  }

  onMessage(data) {
    const kind = this.kind;
    if (kind === "harness") {
      if (starts(data, MESSAGE)) {
        const seq = numberAfter(data, '"seq":', 0);
        if (seq > this.seq) this.seq = seq;
        this.sink.message(this, data);
      } else if (starts(data, ACK)) {
        this.sink.ack(this);
      } else if (starts(data, JOINED)) {
        const env = JSON.parse(data);
        if (env.epoch !== undefined) this.epoch = env.epoch;
        if (env.reset || this.seq === 0) this.seq = env.seq;
        this.ready();
      } else if (starts(data, LAGGING)) {
        this.lagging += 1;
        this.sink.lagging(this);
      } else if (starts(data, ERROR)) {
        const env = JSON.parse(data);
        this.sink.refused(this, env.code);
        if (env.code === "broker_unavailable" && env.room !== undefined) {
          // docs/protocol.md: the join could not be served; join again later
          this.joinRetries += 1;
          setTimeout(() => { if (this.open) this.join(this.seq > 0 ? this.seq : null); }, 250);
        }
      }
    } else if (kind === "sio") {
      const head = data.toString("latin1", 0, Math.min(8, data.length));
      if (head.startsWith('42["msg"')) this.sink.message(this, data);
      else if (head === "2") this.ws.send("3");
      else if (head.startsWith("0{")) this.ws.send("40");
      else if (head.startsWith("40")) {
        if (this.role === "pub") this.ready();
        else this.ws.send('42["join","bench"]');
      } else if (head.startsWith('42["join')) this.ready();
    } else {
      if (data[0] === 0x7b) this.sink.message(this, data);
      else if (data.toString() === "welcome") this.ready();
    }
  }

  send(text) {
    if (this.open) this.ws.send(text);
  }
}

function publishFrame(kind, ident, step) {
  const body = `{"t":${now().toFixed(3)},"s":${step},"p":"${PAD}"}`;
  if (kind === "harness") {
    return `{"type":"publish","room":"bench","id":"${ident}","data":${body}}`;
  }
  if (kind === "sio") return `42["publish",{"room":"bench","data":${body}}]`;
  return body;
}

class Sink {
  constructor(spec, clients) {
    this.layout = spec.hist;
    this.clients = clients;
    this.steps = new Map();
    this.total = 0;
    this.acked = 0;
    this.refusals = {};
    this.lagged = 0;
    this.closes = {};
  }
  step(id) {
    let stats = this.steps.get(id);
    if (stats === undefined) {
      stats = new StepStats(this.layout, this.clients.length);
      this.steps.set(id, stats);
    }
    return stats;
  }
  message(client, data) {
    this.total += 1;
    const step = numberAfter(data, '"s":', 0);
    const sent = numberAfter(data, '"t":', 0);
    if (Number.isNaN(step) || Number.isNaN(sent)) return;
    const stats = this.step(step);
    stats.received += 1;
    stats.perClient[client.index] += 1;
    const seconds = Math.max(0, (now() - sent) / 1000);
    stats.hist(client.index).record(seconds);
    if (seconds > stats.worst[client.index]) stats.worst[client.index] = seconds;
  }
  ack() {
    this.acked += 1;
  }
  refused(client, code) {
    this.refusals[code] = (this.refusals[code] || 0) + 1;
  }
  lagging() {
    this.lagged += 1;
  }
  closed(client, code) {
    this.closes[code] = (this.closes[code] || 0) + 1;
  }
  report(id) {
    const stats = this.steps.get(id) || new StepStats(this.layout, this.clients.length);
    this.steps.delete(id);
    const lagged = (index) => this.clients[index].lagging > 0;
    return {
      received: stats.received,
      hist: stats.merged((index) => !lagged(index)),
      lagged_hist: stats.merged(lagged),
      per_client: stats.perClient,
      worst_s: stats.worst,
      lagging: this.clients.map((c) => c.lagging),
      open: this.clients.filter((c) => c.open).length,
      closes: this.closes,
    };
  }
}

async function connectAll(spec, sink) {
  const clients = spec.targets.map((t, i) => new Client(i, t, spec, sink));
  sink.clients = clients;
  const errors = [];
  let next = 0;
  const concurrency = spec.concurrency || 256;
  const timeoutMs = (spec.timeout || 60) * 1000;
  async function worker() {
    while (next < clients.length) {
      const client = clients[next++];
      try {
        await client.connect(timeoutMs);
      } catch (err) {
        errors.push(String(err && err.message ? err.message : err));
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, clients.length) }, worker));
  return errors;
}

async function publish(clients, kind, rate, seconds, step) {
  const total = Math.floor(rate * seconds);
  const began = now();
  const prefix = Math.random().toString(16).slice(2, 10);
  let sent = 0;
  let turn = 0;
  while (sent < total) {
    const due = Math.min(total, Math.floor(((now() - began) / 1000) * rate) + 1);
    while (sent < due) {
      clients[turn].send(publishFrame(kind, `${prefix}-${step}-${sent}`, step));
      turn = (turn + 1) % clients.length;
      sent += 1;
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  return { sent, seconds: (now() - began) / 1000 };
}

async function main() {
  const lines = readline.createInterface({ input: process.stdin });
  const iterator = lines[Symbol.asyncIterator]();
  const first = await iterator.next();
  const spec = JSON.parse(first.value);
  const sink = new Sink(spec, []);
  const t0 = now();
  const errors = await connectAll(spec, sink);
  const clients = sink.clients;
  const connectS = (now() - t0) / 1000;
  emit({
    event: "ready",
    connected: clients.filter((c) => c.open).length,
    failed: errors.length,
    error: errors[0] || null,
    connect_s: connectS,
    open_per_s: connectS > 0 ? (clients.length - errors.length) / connectS : null,
    join_retries: clients.reduce((n, c) => n + c.joinRetries, 0),
  });
  for (;;) {
    const line = await iterator.next();
    if (line.done) break;
    const cmd = JSON.parse(line.value);
    if (cmd.cmd === "quit") break;
    if (cmd.cmd === "report") emit(sink.report(cmd.step));
    else if (cmd.cmd === "count") {
      emit({ received: sink.total, open: clients.filter((c) => c.open).length });
    } else if (cmd.cmd === "pause" || cmd.cmd === "resume") {
      const picked = clients.slice(cmd.first, cmd.first + cmd.count).filter((c) => c.ws);
      for (const client of picked) client.ws[cmd.cmd]();
      emit({ [cmd.cmd === "pause" ? "paused" : "resumed"]: picked.length });
    } else if (cmd.cmd === "cpu") emit({ cpu_s: cpuSeconds() });
    else if (cmd.cmd === "publish") {
      const acked0 = sink.acked;
      const refused0 = { ...sink.refusals };
      const open = clients.filter((c) => c.open);
      const result = await publish(open, spec.kind, cmd.rate, cmd.seconds, cmd.step);
      await new Promise((resolve) => setTimeout(resolve, 200)); // the last acks
      const refused = {};
      for (const [code, n] of Object.entries(sink.refusals)) {
        const delta = n - (refused0[code] || 0);
        if (delta) refused[code] = delta;
      }
      emit({ ...result, acked: sink.acked - acked0, refused });
    } else emit({ error: `unknown command ${cmd.cmd}` });
  }
  for (const client of clients) if (client.ws) client.ws.terminate();
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
