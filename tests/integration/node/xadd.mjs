// Adds one UploadEvent to the omnibind ingest stream, as a Node.js platform would: a minimal
// RESP client on Node's own `net` module (no npm package, so the test needs no network).
//
//   OMNIBIND_REDIS_URL=redis://:password@host:6379/0 node xadd.mjs omnibind:ingest '{"text": "..."}'
//
// Prints the new entry's id (the upload id is "stream-<id>" unless the event names one).
import net from "node:net";

const [stream, event] = process.argv.slice(2);
if (!stream || !event) {
  console.error("usage: node xadd.mjs STREAM EVENT_JSON");
  process.exit(2);
}
const url = new URL(process.env.OMNIBIND_REDIS_URL ?? "redis://127.0.0.1:6390/0");

const commands = [];
if (url.password) {
  const password = decodeURIComponent(url.password);
  commands.push(url.username ? ["AUTH", decodeURIComponent(url.username), password] : ["AUTH", password]);
}
const db = url.pathname.replace("/", "");
if (db && db !== "0") commands.push(["SELECT", db]);
commands.push(["XADD", stream, "*", "event", event]);

// RESP: every command is an array of bulk strings.
function encode(args) {
  const parts = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.from(String(arg), "utf8");
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from("\r\n"));
  }
  return Buffer.concat(parts);
}

// Replies to these commands are simple strings, errors, integers or bulk strings.
function parseReply(buffer) {
  const lineEnd = buffer.indexOf("\r\n");
  if (lineEnd < 0) return null;
  const type = String.fromCharCode(buffer[0]);
  const line = buffer.subarray(1, lineEnd).toString("utf8");
  if (type === "+" || type === ":") return { value: line, rest: buffer.subarray(lineEnd + 2) };
  if (type === "-") return { error: line, rest: buffer.subarray(lineEnd + 2) };
  if (type === "$") {
    const length = Number(line);
    if (length < 0) return { value: null, rest: buffer.subarray(lineEnd + 2) };
    const end = lineEnd + 2 + length;
    if (buffer.length < end + 2) return null;
    return { value: buffer.subarray(lineEnd + 2, end).toString("utf8"), rest: buffer.subarray(end + 2) };
  }
  throw new Error(`unexpected reply type ${type}`);
}

const socket = net.createConnection({ host: url.hostname, port: Number(url.port || 6379) });
let pending = Buffer.alloc(0);
const replies = [];
socket.setTimeout(10_000, () => socket.destroy(new Error("timed out waiting for Redis")));
socket.on("connect", () => socket.write(Buffer.concat(commands.map(encode))));
socket.on("data", (chunk) => {
  pending = Buffer.concat([pending, chunk]);
  for (let reply = parseReply(pending); reply; reply = parseReply(pending)) {
    pending = reply.rest;
    if (reply.error) {
      console.error(`redis error: ${reply.error}`);
      process.exit(1);
    }
    replies.push(reply.value);
  }
  if (replies.length === commands.length) {
    console.log(replies.at(-1));
    socket.end();
  }
});
socket.on("error", (error) => {
  console.error(error.message);
  process.exit(1);
});
