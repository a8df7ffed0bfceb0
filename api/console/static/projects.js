// The projects page: every project the signed-in owner may see (admin: all), desired state and
// observed state side by side as `tether status` shows them, live from GET /v1/watch.

import { call, session, signedOut } from "./api.js";
import { fill, h } from "./dom.js";
import { problem } from "./problem.js";
import { follow } from "./stream.js";
import { when } from "./time.js";
import * as words from "./words.js";

const COLUMNS = [
  ["name", "Name"],
  ["owner", "Owner"],
  ["desired", "Desired"],
  ["phase", "Phase"],
  ["ready", "Ready"],
  ["deployment", "Deployment"],
  ["endpoint", "Endpoint"],
  ["age", "Age"],
  ["message", "Message"],
];

function cells(view) {
  const p = view.project;
  const s = view.status;
  const url = words.endpointUrl(s);
  return {
    name: h("a", { href: `/projects/${p.name}` }, p.name),
    owner: p.owner,
    desired: words.desired(p),
    phase: words.phase(s),
    ready: words.ready(s),
    deployment: words.deployment(p, s),
    endpoint: url ? h("a", { href: url, rel: "noreferrer", target: "_blank" }, s.endpoint) : words.NONE,
    age: when(p.created_at),
    message: words.statusMessage(p, s),
  };
}

export function projectsPage(main, navigate) {
  document.title = "Projects · tether";
  const views = new Map();
  let seen = null; // names sent since the stream (re)connected, until it says `synced`
  let synced = false;
  const admin = Boolean(session() && session().admin);
  const columns = COLUMNS.filter(([key]) => key !== "owner" || admin);
  const body = h("tbody");
  const table = h(
    "table",
    { class: "projects", "aria-describedby": "projects-summary" },
    h("thead", {}, h("tr", {}, columns.map(([, label]) => h("th", { scope: "col" }, label)))),
    body,
  );
  const summary = h("p", { id: "projects-summary", class: "summary" }, "Loading…");
  const refused = h("div", { role: "alert" });
  const createProblem = h("div", { role: "alert" });
  const nameInput = h("input", {
    id: "new-project",
    name: "name",
    required: true,
    pattern: "[a-z][a-z0-9\\-]{0,62}",
    autocomplete: "off",
    "aria-describedby": "new-project-help",
  });
  const create = h(
    "form",
    { class: "inline", "aria-label": "Create a project" },
    h("label", { for: "new-project" }, "New project"),
    nameInput,
    h("button", { type: "submit" }, "Create"),
    h("p", { id: "new-project-help", class: "help" }, "A lowercase letter, then up to 62 of a–z, 0–9 or “-”. Deploy to it from its page."),
    createProblem,
  );
  create.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(createProblem);
    try {
      const result = await call("POST", "/v1/projects", { body: { name: nameInput.value.trim() } });
      navigate(`/projects/${result.project.name}`);
    } catch (error) {
      fill(createProblem, problem(error));
    }
  });
  fill(main, h("h1", {}, "Projects"), summary, refused, h("div", { class: "scroll" }, table), create);

  function render() {
    const sorted = [...views.values()].sort((a, b) => a.project.name.localeCompare(b.project.name));
    fill(
      body,
      sorted.map((view) => {
        const shown = cells(view);
        return h(
          "tr",
          { "data-project": view.project.name },
          columns.map(([key, label], i) =>
            h(i === 0 ? "th" : "td", { "data-col": key, "data-label": label, scope: i === 0 ? "row" : null }, shown[key]),
          ),
        );
      }),
    );
    if (!synced) return;
    const ready = sorted.filter((v) => words.ready(v.status) === "yes").length;
    summary.textContent = sorted.length
      ? `${sorted.length} project${sorted.length === 1 ? "" : "s"}, ${ready} ready`
      : "no projects yet: create one with `tether deploy NAME --image IMAGE`, or below";
  }

  const stream = follow("/v1/watch", {
    onOpen() {
      seen = new Set();
      fill(refused);
    },
    onEvent(event, data) {
      if (event === "view") {
        views.set(data.project.name, data);
        if (seen) seen.add(data.project.name);
      } else if (event === "deleted") {
        views.delete(data.project);
      } else if (event === "synced") {
        // After a reconnection, what was not sent again is gone.
        if (seen) for (const name of [...views.keys()]) if (!seen.has(name)) views.delete(name);
        seen = null;
        synced = true;
      }
      render();
    },
    onRefused({ status, body }) {
      if (status === 401) {
        signedOut(body);
        return "stop";
      }
      fill(refused, problem(body));
      return undefined;
    },
  });
  return () => stream.close();
}
