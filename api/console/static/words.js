// The CLI's words for a project's state (tether.cli.render and tether.cli.watch.judge), so that the
// console and `tether status` / `tether watch` say the same thing about the same project.

export const NONE = "-";

export function desired(project) {
  return project.deletion_requested ? "deleting" : project.desired_state;
}

function condition(status, type) {
  return status ? (status.conditions || []).find((c) => c.type === type) || null : null;
}

export function ready(status) {
  const found = condition(status, "Ready");
  if (!found) return NONE;
  return { True: "yes", False: "no" }[found.status] || "unknown";
}

export function phase(status) {
  return status ? status.phase : "Pending";
}

export function deployment(project, status) {
  if (project.target_version === null) return NONE;
  let text = `v${project.target_version}`;
  const running = status ? status.running_version : null;
  if (running !== null && running !== project.target_version) text += ` (running v${running})`;
  return text;
}

export function statusMessage(project, status) {
  if (!status) return "waiting for the operator";
  const stalled = condition(status, "Stalled");
  if (stalled && stalled.status === "True") return `stalled: ${stalled.message}`;
  if (status.observed_generation < project.generation) {
    return `operator has not seen generation ${project.generation} yet`;
  }
  if (status.last_error) return status.last_error;
  for (const type of ["Ready", "Reconciling"]) {
    const found = condition(status, type);
    if (found && found.message) return found.message;
  }
  return "";
}

export function endpointUrl(status) {
  if (!status || !status.endpoint) return null;
  return /^https?:\/\//.test(status.endpoint) ? status.endpoint : `http://${status.endpoint}/`;
}

export function crashes(status) {
  let text = String(status.crash_count);
  if (status.last_exit_code !== null) text += `, last exit code ${status.last_exit_code}`;
  if (status.oom_killed) text += " (killed: out of memory)";
  return text;
}

// A condition written for the project's current generation, or null.
function current(view, type) {
  const found = condition(view.status, type);
  return found && found.observed_generation === view.project.generation ? found : null;
}

// Whether the project is where it was asked to be ("ready", "stopped", "deleted"), will not get
// there ("failed"), or is on its way ("converging"), and why: tether.cli.watch.judge.
export function judge(view) {
  const p = view.project;
  const s = view.status;
  if (p.deletion_requested) return { verdict: "converging", message: "being destroyed: removing its containers" };
  if (!s) return { verdict: "converging", message: "waiting for the operator" };
  if (s.observed_generation !== p.generation) {
    return {
      verdict: "converging",
      message: `waiting for the operator to act on generation ${p.generation} (it last acted on ${s.observed_generation})`,
    };
  }
  const stalled = current(view, "Stalled");
  if (stalled && stalled.status === "True") {
    return { verdict: "failed", message: `stalled (${stalled.reason}): ${stalled.message}` };
  }
  const running = p.desired_state === "running";
  if (running && p.target_version !== null && s.failed_version === p.target_version) {
    const event = [...(view.events || [])]
      .reverse()
      .find((e) => e.reason === "RolloutFailed" && e.generation === p.generation);
    const why = event ? event.message : `v${p.target_version} did not become ready`;
    const back =
      s.running_version !== null && s.running_version !== p.target_version
        ? `; v${s.running_version} is running again`
        : "";
    return { verdict: "failed", message: `the rollout of v${p.target_version} failed: ${why}${back}` };
  }
  const readyNow = current(view, "Ready");
  const reconciling = current(view, "Reconciling");
  const settled = reconciling !== null && reconciling.status === "False";
  if (running && settled && readyNow && readyNow.status === "True") {
    const where = s.endpoint ? ` on ${s.endpoint}` : "";
    return { verdict: "ready", message: `v${s.running_version} is ready${where}` };
  }
  if (!running && settled) return { verdict: "stopped", message: "stopped as desired" };
  const doing = reconciling || readyNow;
  return { verdict: "converging", message: doing && doing.message ? doing.message : `phase ${s.phase}` };
}

export const VERDICT_WORDS = {
  ready: "Ready",
  stopped: "Stopped",
  converging: "Converging",
  failed: "Failed",
  deleted: "Gone",
};
