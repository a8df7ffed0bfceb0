// An answer the API refused, shown as it gave it: its message, and what to do (the hint).

import { h } from "./dom.js";

export function problem(error) {
  const message = (error && error.message) || "the API refused the request";
  return h(
    "div",
    { class: "problem", "data-error": (error && error.error) || "error" },
    h("p", { class: "message" }, message),
    error && error.hint ? h("p", { class: "hint" }, "Hint: ", error.hint) : null,
  );
}
