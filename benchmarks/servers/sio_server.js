// Node.js socket.io node for the fan-out benchmark, with @socket.io/redis-adapter.
// node sio_server.js --port 0 --redis redis://127.0.0.1:6379/0
// Events: "join" (join the room, reply "joined"), "publish" {room, data} (emit "msg" to
// the room). Prints {"event":"listening","port":P} when ready.
const http = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function main() {
  const port = Number(arg("--port", "0"));
  const url = arg("--redis", "redis://127.0.0.1:6379/0");
  const pubClient = createClient({ url });
  const subClient = pubClient.duplicate();
  await Promise.all([pubClient.connect(), subClient.connect()]);
  const server = http.createServer();
  const io = new Server(server, { adapter: createAdapter(pubClient, subClient) });
  io.on("connection", (socket) => {
    socket.on("join", (room) => {
      socket.join(room);
      socket.emit("joined", room);
    });
    socket.on("publish", (message) => {
      io.to(message.room).emit("msg", message.data);
    });
  });
  server.listen(port, "127.0.0.1", 4096, () => {
    process.stdout.write(JSON.stringify({ event: "listening", port: server.address().port }) + "\n");
  });
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
