// The console's entry: who is signed in, which page is open, and moving between pages.

import { ApiError, call, onSignedOut, signedOut, useSession } from "./api.js";
import { fill, h } from "./dom.js";
import { projectPage } from "./project.js";
import { projectsPage } from "./projects.js";

const main = document.getElementById("main");
let leave = null; // ends the open page's streams

function header(session) {
  document.getElementById("who").hidden = !session;
  document.getElementById("nav").hidden = !session;
  if (session) {
    const role = session.admin ? " (admin: every owner's projects)" : "";
    fill(document.getElementById("owner"), `Signed in as ${session.owner}${role}`);
  }
}

function open(path, { focus = true } = {}) {
  if (leave) leave();
  leave = null;
  const match = path.match(/^\/projects\/([^/]+)\/?$/);
  if (match) leave = projectPage(main, decodeURIComponent(match[1]), navigate);
  else if (path === "/") leave = projectsPage(main, navigate);
  else {
    document.title = "Not found · tether";
    fill(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "/" }, "All projects")));
  }
  if (focus) main.focus({ preventScroll: true });
}

function navigate(path) {
  history.pushState(null, "", path);
  open(path);
}

// Links inside the console move between its pages without a reload.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href^='/']");
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey || link.target) return;
  if (document.getElementById("who").hidden) return; // signed out: nothing to move to
  event.preventDefault();
  navigate(link.getAttribute("href"));
});
window.addEventListener("popstate", () => open(location.pathname));

function signInForm(reason) {
  if (leave) leave();
  leave = null;
  header(null);
  document.title = "Sign in · tether";
  const problem = h("div", { id: "sign-in-problem", role: "alert" });
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "token-help",
  });
  const form = h(
    "form",
    { class: "card sign-in", method: "post", action: "/console/session", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in to tether"),
    reason ? h("p", { class: "notice" }, reason) : null,
    h("label", { for: "token" }, "API token"),
    input,
    h(
      "p",
      { id: "token-help", class: "help" },
      "An admin creates one with ",
      h("code", {}, "tether token create --owner NAME"),
      ". It is sent once, and kept by the server with your session, never by this page.",
    ),
    h("button", { type: "submit" }, "Sign in"),
    problem,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    fill(problem);
    try {
      const session = await call("POST", "/console/session", { token });
      input.value = "";
      start(session);
    } catch (error) {
      fill(problem, h("p", {}, error.message), error.hint ? h("p", { class: "hint" }, error.hint) : null);
    }
  });
  fill(main, form);
  input.focus();
}

function start(session) {
  useSession(session);
  header(session);
  open(location.pathname);
}

onSignedOut((error) => signInForm(error && error.error === "session_ended" ? error.message : null));

document.getElementById("sign-out").addEventListener("click", async () => {
  try {
    await call("DELETE", "/console/session");
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
  }
  signedOut(null);
});

(async () => {
  try {
    start(await call("GET", "/console/session"));
  } catch (error) {
    if (error.status !== 401) signInForm(error.message);
    // a 401 has shown the sign-in form already
  }
})();
