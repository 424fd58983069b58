// A Socket.IO chat whose nodes share rooms through Redis (wsconsole stack example).
//
// Events: "join" (room) puts the socket in a room; "chat" ({room, id, ts, ...}) is sent to
// every socket of that room on every node, with "node" added. GET /healthz answers 200.
//
// Environment (wsconsole sets the first three): PORT, REDIS_URL, NODE_ID;
//   ADAPTER = "pubsub" (default: @socket.io/redis-adapter, Redis PUB/SUB, nothing kept)
//           | "streams" (@socket.io/redis-streams-adapter: packets and sessions in Redis)
//   RECOVERY = "1": connection state recovery on (a reconnecting client gets what it
//              missed, if its session was saved: it needs the streams adapter)
// SIGTERM: close every client (recoverable sessions are saved) and exit.

const http = require("http");
const { Server } = require("socket.io");
const { createClient } = require("redis");

const port = Number(process.env.PORT);
const node = process.env.NODE_ID || "node";
const streams = (process.env.ADAPTER || "pubsub") === "streams";
const recovery = process.env.RECOVERY === "1";

async function main() {
  const server = http.createServer((req, res) => {
    res.writeHead(req.url === "/healthz" ? 200 : 404).end();
  });
  const options = {};
  if (recovery) {
    options.connectionStateRecovery = { maxDisconnectionDuration: 2 * 60 * 1000 };
  }
  const pub = createClient({ url: process.env.REDIS_URL });
  await pub.connect();
  if (streams) {
    const { createAdapter } = require("@socket.io/redis-streams-adapter");
    options.adapter = createAdapter(pub);
  } else {
    const { createAdapter } = require("@socket.io/redis-adapter");
    const sub = pub.duplicate();
    await sub.connect();
    options.adapter = createAdapter(pub, sub);
  }
  const io = new Server(server, options);
  io.on("connection", (socket) => {
    socket.on("join", (room, ack) => {
      socket.join(room);
      if (typeof ack === "function") ack("joined");
    });
    socket.on("chat", (message) => {
      if (message && typeof message.room === "string") {
        io.to(message.room).emit("chat", { ...message, node });
      }
    });
  });
  server.listen(port, "127.0.0.1", () => {
    console.log(`${node} listening on 127.0.0.1:${port} (adapter ${streams ? "streams" : "pubsub"}, recovery ${recovery ? "on" : "off"})`);
  });
  process.on("SIGTERM", () => {
    console.log(`${node} stopping: closing every client`);
    io.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 3000).unref();
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
