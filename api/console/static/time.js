// Times as people read them ("12 s ago"), with the exact time (UTC, as the CLI prints it) on hover.
import { h } from "./dom.js";

export function ago(iso, now = Date.now()) {
  const s = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function exact(iso) {
  return new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// A <time> element that keeps its "… ago" text current.
export function when(iso) {
  if (!iso) return "-";
  return h("time", { datetime: iso, title: exact(iso), "data-ago": "" }, ago(iso));
}

setInterval(() => {
  const now = Date.now();
  for (const el of document.querySelectorAll("time[data-ago]")) {
    el.textContent = ago(el.dateTime, now);
  }
}, 1000);
