// Server-sent events read with fetch (not EventSource, which hides why a connection was refused):
// each stream reconnects on its own with backoff, and the header's marker says when any stream is
// not live ("connection lost: reconnecting").

import { UNREACHABLE } from "./api.js";

const streams = new Set();
const WATCHDOG_MS = 45000; // the API sends a keep-alive comment every 15 s of silence
const RETRY_MS = [500, 5000];

function showMarker() {
  const marker = document.getElementById("live");
  const live = [...streams].filter((s) => s.marker);
  if (live.length === 0) {
    marker.hidden = true;
    marker.dataset.state = "off";
    return;
  }
  const lost = live.some((s) => s.state !== "live");
  marker.hidden = false;
  marker.dataset.state = lost ? "reconnecting" : "live";
  marker.textContent = lost ? "Connection lost: reconnecting…" : "Live";
}

function parse(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const at = line.indexOf(":");
    const field = at < 0 ? line : line.slice(0, at);
    let value = at < 0 ? "" : line.slice(at + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, data: JSON.parse(data.join("\n")) } : null;
}

// Follow `path`. onEvent(event, data) may return "stop" to end the stream; onOpen() runs on each
// (re)connection; onRefused({status, body}) on an error answer, and may return "stop".
// `reconnect: false` ends the stream when the server does (a one-off read).
export function follow(path, { onEvent, onOpen, onRefused, reconnect = true, marker = true }) {
  const stream = { state: "connecting", marker, closed: false, controller: null };
  let delay = RETRY_MS[0];
  streams.add(stream);
  showMarker();
  const set = (state) => {
    stream.state = state;
    showMarker();
  };
  const close = () => {
    stream.closed = true;
    streams.delete(stream);
    if (stream.controller) stream.controller.abort();
    showMarker();
  };

  async function once() {
    stream.controller = new AbortController();
    const answer = await fetch(path, {
      headers: { Accept: "text/event-stream" },
      signal: stream.controller.signal,
      cache: "no-store",
      credentials: "same-origin",
    });
    if (!answer.ok) {
      return { status: answer.status, body: await answer.json().catch(() => UNREACHABLE) };
    }
    set("live");
    delay = RETRY_MS[0];
    if (onOpen) onOpen();
    const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const watchdog = setTimeout(() => stream.controller.abort(), WATCHDOG_MS);
      let chunk;
      try {
        chunk = await reader.read();
      } finally {
        clearTimeout(watchdog);
      }
      if (chunk.done) return "ended";
      buffer += chunk.value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const message = parse(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (message && onEvent(message.event, message.data) === "stop") return "stopped";
      }
    }
  }

  (async () => {
    while (!stream.closed) {
      let outcome;
      try {
        outcome = await once();
      } catch {
        outcome = "lost";
      }
      if (stream.closed) return;
      if (outcome === "stopped" || (outcome === "ended" && !reconnect)) {
        close();
        return;
      }
      if (typeof outcome === "object" && onRefused && onRefused(outcome) === "stop") {
        close();
        return;
      }
      set("reconnecting");
      await new Promise((done) => setTimeout(done, delay * (0.8 + Math.random() * 0.4)));
      delay = Math.min(delay * 2, RETRY_MS[1]);
    }
  })();
  return { close };
}
