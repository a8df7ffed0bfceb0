// One project's page: desired and observed state, conditions, endpoint, deployments (rollback),
// events and logs, live; and the desired-state writes (Start, Stop, Restart, Destroy, Deploy).
//
// Each button is a write. Its answer says what is desired now; the page then shows "converging"
// until the operator reports the generation written, then the result (tether.cli.watch's
// verdicts). A write that changed nothing (a start of a project already desired running) says so
// and is no error; a refusal shows the API's message and hint.

import { call, project, signedOut } from "./api.js";
import { fill, h } from "./dom.js";
import { problem } from "./problem.js";
import { follow } from "./stream.js";
import { when } from "./time.js";
import * as words from "./words.js";

const EVENTS_SHOWN = 200;
const LOG_LINES = 500;

function section(id, title, ...children) {
  return h("section", { class: "card", id, "aria-labelledby": `${id}-title` }, h("h2", { id: `${id}-title` }, title), ...children);
}

function field(term, key) {
  const dd = h("dd", { "data-field": key });
  return [h("dt", {}, term), dd];
}

function parseEnv(text, what) {
  const env = {};
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    const at = line.indexOf("=");
    if (at <= 0) throw new Error(`line ${i + 1} of ${what}: expected KEY=VALUE`);
    env[line.slice(0, at).trim()] = line.slice(at + 1);
  });
  return env;
}

export function projectPage(main, name, navigate) {
  document.title = `${name} · tether`;
  const base = project(name);
  let view = null;
  let pending = null; // the last write that changed something: {generation, message, deletion}
  let gone = false;
  let deployments = [];
  const events = new Map();
  let lastEventId = 0;

  // --- the page's parts --------------------------------------------------------------------
  const verdict = h("p", { id: "verdict", class: "verdict", "data-verdict": "loading" }, "Loading…");
  const outcome = h("div", { id: "outcome", role: "status", "aria-live": "polite" });
  const refusal = h("div", { id: "refusal", role: "alert" });
  const button = (label, onclick, extra = {}) => h("button", { type: "button", onclick, ...extra }, label);
  const confirm = h(
    "dialog",
    { id: "confirm-destroy", "aria-labelledby": "confirm-title" },
    h("h2", { id: "confirm-title" }, `Destroy ${name}?`),
    h("p", {}, "Its containers are removed, then the project is gone. Its deployments and events go with it."),
    h(
      "form",
      { method: "dialog", class: "buttons" },
      h("button", { value: "cancel", autofocus: true }, "Cancel"),
      h("button", { value: "destroy", class: "danger" }, `Destroy ${name}`),
    ),
  );
  confirm.addEventListener("close", () => {
    if (confirm.returnValue === "destroy") write("Destroy", "DELETE", base);
  });
  const buttons = [
    button("Start", () => write("Start", "POST", `${base}/start`)),
    button("Stop", () => write("Stop", "POST", `${base}/stop`)),
    button("Restart", () => write("Restart", "POST", `${base}/restart`)),
    button("Destroy…", () => {
      confirm.returnValue = "";
      confirm.showModal();
    }, { class: "danger" }),
  ];
  const actions = h("div", { class: "buttons", role: "group", "aria-label": "Desired state" }, buttons);

  const overview = h(
    "dl",
    { class: "overview" },
    field("Desired", "desired"),
    field("Observed", "observed"),
    field("Ready", "ready"),
    field("Running deployment", "running"),
    field("Target deployment", "target"),
    field("Endpoint", "endpoint"),
    field("Container", "container"),
    field("Crashes", "crashes"),
    field("Attempts", "attempts"),
    field("Last error", "last-error"),
    field("Message", "message"),
  );
  const conditionsBody = h("tbody");
  const conditions = h(
    "table",
    { id: "conditions" },
    h("thead", {}, h("tr", {}, ["Condition", "Status", "Reason", "Since", "Message"].map((c) => h("th", { scope: "col" }, c)))),
    conditionsBody,
  );
  const deploymentsBody = h("tbody");
  const deploymentsTable = h(
    "table",
    { id: "deployments" },
    h(
      "thead",
      {},
      h("tr", {}, ["Version", "Image", "Port", "Health", "Env", "Created by", "Created", ""].map((c) => h("th", { scope: "col" }, c))),
    ),
    deploymentsBody,
  );
  const eventsList = h("ol", { id: "events", class: "events", reversed: true });
  const logs = h("pre", { id: "logs", class: "logs", tabindex: "0", "aria-label": "Container output, last 500 lines" });
  const logsProblem = h("div", { role: "alert" });
  const followBox = h("input", { type: "checkbox", id: "follow-logs" });

  // The deploy form
  const input = (id, label, attrs = {}, help = null) => [
    h("label", { for: id }, label),
    h(attrs.rows ? "textarea" : "input", { id, name: id, autocomplete: "off", spellcheck: "false", ...attrs, "aria-describedby": help ? `${id}-help` : null }),
    help ? h("p", { id: `${id}-help`, class: "help" }, help) : null,
  ];
  const deployProblem = h("div", { role: "alert" });
  const deployForm = h(
    "form",
    { id: "deploy", class: "grid-form", "aria-labelledby": "deploy-title" },
    h("h3", { id: "deploy-title" }, "New deployment"),
    input("deploy-image", "Image", { required: true, placeholder: "tether-test/workload:latest" }),
    input("deploy-port", "Container port", { type: "number", min: 1, max: 65535, inputmode: "numeric" }, "Published on the project's endpoint."),
    input("deploy-health", "Health path", { placeholder: "/healthz" }, "An HTTP GET of this path on the endpoint decides Ready (needs a port)."),
    input("deploy-env", "Environment", { rows: 3, placeholder: "KEY=VALUE, one a line" }),
    input("deploy-secrets", "Secret environment", { rows: 2, class: "secret", placeholder: "KEY=VALUE, one a line" }, "Passed to the container, shown nowhere: ••••."),
    h("label", { class: "check" }, h("input", { type: "checkbox", id: "deploy-start", checked: true }), " Want it running"),
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Deploy")),
    deployProblem,
  );
  deployForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(deployProblem);
    const value = (id) => deployForm.querySelector(`#${id}`).value.trim();
    let spec;
    try {
      const env = parseEnv(deployForm.querySelector("#deploy-env").value, "Environment");
      const secrets = parseEnv(deployForm.querySelector("#deploy-secrets").value, "Secret environment");
      spec = { image: value("deploy-image"), env: { ...env, ...secrets }, secret_env: Object.keys(secrets) };
      if (value("deploy-port")) spec.port = Number(value("deploy-port"));
      if (value("deploy-health")) spec.health = { type: "http", path: value("deploy-health") };
    } catch (error) {
      fill(deployProblem, problem({ message: error.message, hint: "write one KEY=VALUE a line" }));
      return;
    }
    const start = deployForm.querySelector("#deploy-start").checked;
    const result = await write("Deploy", "POST", `${base}/deployments?start=${start}`, spec, deployProblem);
    if (result) {
      deployForm.querySelector("#deploy-secrets").value = "";
      loadDeployments();
    }
  });

  fill(
    main,
    h("h1", {}, h("a", { href: "/", class: "up" }, "Projects"), " / ", name),
    verdict,
    h("div", { class: "action-bar" }, actions, outcome, refusal),
    h(
      "div",
      { class: "columns" },
      h("div", {}, section("state", "State", overview), section("conditions-card", "Conditions", h("div", { class: "scroll" }, conditions))),
      section("events-card", "Events", eventsList),
    ),
    section("deployments-card", "Deployments", h("div", { class: "scroll" }, deploymentsTable), deployForm),
    section(
      "logs-card",
      "Logs",
      h("p", { class: "check" }, followBox, h("label", { for: "follow-logs" }, " Follow (keep reading, across restarts and new deployments)")),
      logsProblem,
      logs,
    ),
    confirm,
  );

  // --- writes ------------------------------------------------------------------------------
  async function write(label, method, path, body, problemArea = refusal) {
    fill(refusal);
    fill(problemArea);
    fill(outcome, h("p", { "data-outcome": "sending" }, `${label}: sending…`));
    for (const b of buttons) b.disabled = true;
    try {
      const result = await call(method, path, { body });
      pending = result.changed
        ? { generation: result.project.generation, message: result.message, deletion: method === "DELETE" }
        : null;
      if (!result.changed) fill(outcome, h("p", { "data-outcome": "unchanged" }, result.message));
      if (view) view = { ...view, project: result.project };
      render();
      return result;
    } catch (error) {
      fill(outcome);
      fill(problemArea, problem(error));
      return null;
    } finally {
      for (const b of buttons) b.disabled = gone;
    }
  }

  // --- drawing -----------------------------------------------------------------------------
  function render() {
    if (!view) return;
    const p = view.project;
    const s = view.status;
    const judged = gone ? { verdict: "deleted", message: `${name} is gone` } : words.judge(view);
    verdict.dataset.verdict = judged.verdict;
    fill(verdict, h("strong", { class: `badge ${judged.verdict}` }, words.VERDICT_WORDS[judged.verdict]), " ", h("span", {}, judged.message));
    if (pending && (gone || (p.generation >= pending.generation && judged.verdict !== "converging"))) {
      fill(outcome, h("p", { "data-outcome": judged.verdict }, `${pending.message}: ${judged.message}`));
      pending = null;
    } else if (pending) {
      fill(outcome, h("p", { "data-outcome": "converging" }, `${pending.message}: converging (${judged.message})`));
    }
    const set = (key, ...value) => fill(overview.querySelector(`[data-field="${key}"]`), ...value);
    set("desired", `${words.desired(p)}, deployment ${words.deployment(p, null)}, generation ${p.generation}`);
    if (!s) set("observed", "nothing yet: waiting for the operator");
    else {
      const behind = s.observed_generation < p.generation ? ` (behind: desired is generation ${p.generation})` : "";
      set("observed", `generation ${s.observed_generation}${behind}, phase ${s.phase}`);
    }
    set("ready", words.ready(s));
    set("running", s && s.running_version !== null ? `v${s.running_version}` : words.NONE);
    set("target", p.target_version !== null ? `v${p.target_version}` : words.NONE);
    const url = words.endpointUrl(s);
    set("endpoint", url ? h("a", { href: url, rel: "noreferrer", target: "_blank" }, s.endpoint) : `host port ${p.host_port} (not published)`);
    set("container", s && s.container_id ? h("code", {}, s.container_id.slice(0, 12)) : words.NONE);
    set("crashes", s ? words.crashes(s) : "0", s && s.last_crash_at ? [", ", when(s.last_crash_at)] : null);
    set("attempts", s ? String(s.attempts) : "0", s && s.attempts && s.next_attempt_at ? [", next attempt ", when(s.next_attempt_at)] : null);
    set("last-error", (s && s.last_error) || words.NONE);
    set("message", words.statusMessage(p, s) || words.NONE);
    fill(
      conditionsBody,
      ((s && s.conditions) || []).map((c) =>
        h(
          "tr",
          { "data-condition": c.type },
          h("th", { scope: "row" }, c.type),
          h("td", { "data-label": "Status" }, c.status),
          h("td", { "data-label": "Reason" }, c.reason),
          h("td", { "data-label": "Since" }, when(c.last_transition_time)),
          h("td", { "data-label": "Message" }, c.message),
        ),
      ),
    );
    if (!deployments.some((d) => d.version === p.target_version) && p.target_version !== null) loadDeployments();
    renderDeployments();
  }

  function renderDeployments() {
    const target = view ? view.project.target_version : null;
    const running = view && view.status ? view.status.running_version : null;
    if (!deployments.length) {
      fill(deploymentsBody, h("tr", {}, h("td", { colspan: 8 }, `${name} has no deployments yet: deploy one with the form below (or \`tether deploy ${name} --image IMAGE\`).`)));
      return;
    }
    fill(
      deploymentsBody,
      [...deployments].reverse().map((d) => {
        const marks = [d.version === target ? "target" : null, d.version === running ? "running" : null].filter(Boolean);
        const rollback =
          d.version !== target && !gone
            ? h("button", { type: "button", onclick: () => write(`Roll back to v${d.version}`, "POST", `${base}/rollback`, { to_version: d.version }) }, d.version < (target || 0) ? `Roll back to v${d.version}` : `Target v${d.version}`)
            : null;
        return h(
          "tr",
          { "data-version": d.version },
          h("th", { scope: "row" }, `v${d.version}`, marks.length ? h("span", { class: "marks" }, ` (${marks.join(", ")})`) : null),
          h("td", { "data-label": "Image" }, h("code", {}, d.image)),
          h("td", { "data-label": "Port" }, d.port ?? words.NONE),
          h("td", { "data-label": "Health" }, d.health ? (d.health.type === "http" ? `http ${d.health.path}` : "tcp") : words.NONE),
          h("td", { "data-label": "Env" }, Object.keys(d.env).length ? Object.keys(d.env).sort().map((k) => h("code", { class: "env" }, `${k}=${d.env[k]}`)) : words.NONE),
          h("td", { "data-label": "Created by" }, d.created_by),
          h("td", { "data-label": "Created" }, when(d.created_at)),
          h("td", {}, rollback),
        );
      }),
    );
  }

  function addEvents(list) {
    for (const e of list) {
      events.set(e.id, e);
      lastEventId = Math.max(lastEventId, e.id);
    }
    const shown = [...events.values()].sort((a, b) => b.id - a.id).slice(0, EVENTS_SHOWN);
    fill(
      eventsList,
      shown.map((e) =>
        h(
          "li",
          { "data-kind": e.kind, "data-reason": e.reason },
          h("p", { class: "meta" }, when(e.created_at), " · ", h("strong", {}, e.reason), ` · ${e.kind} · by ${e.actor}`, e.generation !== null ? ` · generation ${e.generation}` : ""),
          h("p", {}, e.message),
        ),
      ),
    );
  }

  async function loadEvents(after) {
    try {
      for (let page = 0; page < 20; page++) {
        const got = await call("GET", `${base}/events?after=${after}&limit=1000`);
        addEvents(got);
        if (got.length < 1000) return;
        after = got[got.length - 1].id;
      }
    } catch {
      // the live stream carries on; the next view fills the gap
    }
  }

  async function loadDeployments() {
    try {
      deployments = await call("GET", `${base}/deployments`);
      renderDeployments();
    } catch {
      // shown again on the next view
    }
  }

  // --- logs ----------------------------------------------------------------------------------
  let logStream = null;
  let lines = [];
  let drawQueued = false;
  function drawLogs() {
    drawQueued = false;
    const atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    fill(logs, lines.map((l) => h("span", { class: `line ${l.stream || "meta"}` }, l.text, "\n")));
    if (atEnd || followBox.checked) logs.scrollTop = logs.scrollHeight;
  }
  function queueDraw() {
    if (!drawQueued) {
      drawQueued = true;
      requestAnimationFrame(drawLogs);
    }
  }
  function readLogs() {
    if (logStream) logStream.close();
    const following = followBox.checked;
    fill(logsProblem);
    logStream = follow(`${base}/logs?tail=${LOG_LINES}${following ? "&follow=true" : ""}`, {
      reconnect: following,
      marker: following,
      onOpen() {
        lines = [];
        queueDraw();
      },
      onEvent(event, data) {
        if (event === "log") lines.push({ stream: data.stream, text: data.text });
        else if (event === "container") lines.push({ text: `── ${data.name} (v${data.version}, ${data.state}) ──` });
        else if (event === "error") fill(logsProblem, problem(data));
        if (lines.length > LOG_LINES) lines = lines.slice(-LOG_LINES);
        queueDraw();
      },
      onRefused({ status, body }) {
        if (status === 401) signedOut(body);
        fill(logsProblem, problem(body));
        return status === 503 && body.error !== "logs_unavailable" ? undefined : "stop";
      },
    });
  }
  followBox.addEventListener("change", readLogs);

  // --- the live view -------------------------------------------------------------------------
  function notFound(body) {
    document.title = `Not found · tether`;
    fill(
      main,
      h("h1", { "data-page": "not-found" }, "Not found"),
      problem(body),
      h("p", {}, h("a", { href: "/" }, "All projects")),
    );
  }

  const stream = follow(`${base}/watch`, {
    onEvent(event, data) {
      if (event === "view") {
        const fresh = data.events.filter((e) => !events.has(e.id));
        if (lastEventId && fresh.length === data.events.length && fresh.length) loadEvents(lastEventId);
        view = data;
        addEvents(data.events);
        render();
      } else if (event === "deleted") {
        gone = true;
        for (const b of buttons) b.disabled = true;
        render();
        if (logStream) logStream.close();
        return "stop";
      }
      return undefined;
    },
    onRefused({ status, body }) {
      if (status === 401) {
        signedOut(body);
        return "stop";
      }
      if (status === 404) {
        if (view) {
          gone = true;
          render();
        } else notFound(body);
        return "stop";
      }
      fill(refusal, problem(body));
      return undefined;
    },
  });
  loadEvents(0);
  loadDeployments();
  readLogs();
  void navigate;
  return () => {
    stream.close();
    if (logStream) logStream.close();
  };
}
