// The notifier dashboard: follows /events (Server-Sent Events, read with fetch so that an
// API key can be sent), lists executions and pending approvals, and shows one execution's
// details on click; each execution's name links to its page with the graph of its states.
"use strict";

const RECONNECT_MS = 2000;

const state = {
  executions: new Map(), // executionArn -> execution, most recent first
  selected: null,
};

// ---------------------------------------------------------------- event stream

async function follow() {
  for (;;) {
    setConnection("connecting");
    try {
      const response = await api("/events", { headers: { accept: "text/event-stream" } });
      if (!response.ok) throw new Error(`/events answered ${response.status}`);
      setConnection("live");
      await readEvents(response.body, handleEvent);
    } catch (error) {
      if (error instanceof Unauthorized) {
        setConnection("offline");
        await keyEntered();
        continue;
      }
    }
    setConnection("offline");
    await sleep(RECONNECT_MS);
  }
}

async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(kind, JSON.parse(data.join("\n")));
    }
  }
}

function handleEvent(kind, data) {
  if (kind === "hello") {
    $("instance").textContent = data.instanceId;
    fillRoutes(data.routes);
    $("approvals-off").hidden = data.approvals;
    $("feed-off").hidden = data.statusFeed;
  } else if (kind === "snapshot") {
    state.executions = new Map(data.map((e) => [e.executionArn, e]));
    renderExecutions();
  } else if (kind === "execution") {
    const known = state.executions.has(data.executionArn);
    if (known) {
      state.executions.set(data.executionArn, data);
    } else {
      state.executions = new Map([[data.executionArn, data], ...state.executions]);
    }
    renderExecutions();
    if (state.selected === data.executionArn && data.status !== "RUNNING") {
      showDetail(data.executionArn);
    }
  } else if (kind === "approvals") {
    renderApprovals(data);
  }
}

function setConnection(value) {
  const element = $("connection");
  element.dataset.state = value;
  element.textContent = { live: "live", connecting: "connecting", offline: "offline" }[value];
}

// ---------------------------------------------------------------- executions

function renderExecutions() {
  const body = $("executions");
  const rows = [];
  for (const execution of state.executions.values()) {
    const row = document.createElement("tr");
    row.dataset.name = execution.name;
    row.dataset.status = execution.status;
    row.dataset.arn = execution.executionArn;
    if (execution.executionArn === state.selected) row.className = "selected";
    row.append(
      cell(statusBadge(execution.status)),
      cell(graphLink(execution), "name"),
      cell(execution.route ? `${execution.stateMachine} (/${execution.route})` : execution.stateMachine),
      cell(execution.startDate ? new Date(execution.startDate).toLocaleTimeString() : ""),
      cell(duration(execution), "duration"),
      cell(execution.completedVia || ""),
    );
    row.addEventListener("click", () => showDetail(execution.executionArn));
    rows.push(row);
  }
  body.replaceChildren(...rows);
  $("executions-empty").hidden = rows.length > 0;
}

// The execution's own page, with its graph.
function graphLink(execution) {
  const link = document.createElement("a");
  link.href = `/dashboard/executions/${encodeURIComponent(execution.name)}`;
  link.textContent = execution.name;
  link.title = "the execution's graph";
  link.addEventListener("click", (event) => event.stopPropagation());
  return link;
}

function duration(execution) {
  if (!execution.startDate) return "";
  const end = execution.stopDate || (execution.status === "RUNNING" ? Date.now() : null);
  if (!end) return "";
  const ms = Math.max(0, end - execution.startDate);
  return ms < 10000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms / 1000)} s`;
}

function tickRunning() {
  for (const row of $("executions").querySelectorAll('tr[data-status="RUNNING"]')) {
    const execution = state.executions.get(row.dataset.arn);
    if (execution) row.querySelector(".duration").textContent = duration(execution);
  }
}

function statusBadge(status) {
  const badge = document.createElement("span");
  badge.className = "status";
  badge.dataset.status = status;
  badge.textContent = status;
  return badge;
}

function cell(content, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.append(content);
  return td;
}

// ---------------------------------------------------------------- details

async function showDetail(arn) {
  state.selected = arn;
  renderExecutions();
  const section = $("detail");
  section.hidden = false;
  $("detail-title").textContent = arn.split(":").pop();
  const body = $("detail-body");
  let details;
  try {
    const response = await api(`/dashboard/details?arn=${encodeURIComponent(arn)}`);
    details = await response.json();
    if (!response.ok) throw new Error(details.message || response.statusText);
  } catch (error) {
    body.replaceChildren(paragraph(`No details: ${error.message}`, "error"));
    return;
  }
  if (state.selected !== arn) return;
  const parts = [
    paragraph(`${details.status} · ${details.startDate || ""} → ${details.stopDate || "…"}`),
    block("Input", details.input),
  ];
  if ("processData" in details) parts.push(block("Process data", details.processData));
  if (details.processDataError) parts.push(block("Process data", details.processDataError));
  if (details.output != null) parts.push(block("Output", details.output));
  if (details.error || details.cause) {
    parts.push(block("Error", { error: details.error, cause: details.cause }));
  }
  const heading = document.createElement("h3");
  heading.textContent = "Steps";
  const list = document.createElement("ol");
  list.id = "history";
  const more = document.createElement("button");
  more.type = "button";
  more.id = "history-more";
  more.textContent = "More steps";
  more.hidden = true;
  parts.push(heading, list, more);
  body.replaceChildren(...parts);
  await showHistory(arn, list, more, null);
}

// The steps, from GET /executions/<arn>/history, a page at a time.
async function showHistory(arn, list, more, token) {
  const query = new URLSearchParams({ limit: "1000" });
  if (token) query.set("nextToken", token);
  const response = await api(`/executions/${encodeURIComponent(arn)}/history?${query}`);
  if (!response.ok || state.selected !== arn) return;
  const page = await response.json();
  for (const event of page.events) {
    const item = document.createElement("li");
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = event.timestamp ? event.timestamp.slice(11, 23) + " " : "";
    const name = event.details && event.details.name ? ` ${event.details.name}` : "";
    item.append(when, `${event.type}${name}`);
    list.append(item);
  }
  more.hidden = !page.nextToken;
  more.onclick = () => showHistory(arn, list, more, page.nextToken);
}

// ---------------------------------------------------------------- approvals

function renderApprovals(approvals) {
  const items = approvals.map((approval) => {
    const item = document.createElement("li");
    item.dataset.id = approval.id;
    item.dataset.executionName = approval.executionName;
    const about = document.createElement("div");
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = approval.executionName;
    const file = document.createElement("div");
    file.className = "muted";
    file.textContent = `requested ${new Date(approval.requestedAt).toLocaleTimeString()} · ${JSON.stringify(approval.file)}`;
    about.append(who, file);
    item.append(about, approvalActions(approval.id, item));
    return item;
  });
  $("approvals").replaceChildren(...items);
  $("approval-count").textContent = String(approvals.length);
  $("approvals-empty").hidden = approvals.length > 0 || !$("approvals-off").hidden;
}

// ---------------------------------------------------------------- running a workflow

function fillRoutes(routes) {
  const select = $("route");
  const chosen = select.value;
  select.replaceChildren(
    ...routes.map((route) => {
      const option = document.createElement("option");
      option.value = option.textContent = route;
      return option;
    }),
  );
  if (routes.includes(chosen)) select.value = chosen;
}

async function run(event) {
  event.preventDefault();
  const result = $("run-result");
  const route = $("route").value;
  let input;
  try {
    input = JSON.parse($("input").value || "{}");
  } catch (error) {
    result.textContent = `Input is not JSON: ${error.message}`;
    return;
  }
  result.textContent = `POST /${route} …`;
  try {
    const response = await api(`/${route}`, {
      method: "POST",
      headers: { "content-type": "application/json", prefer: "wait=120" },
      body: JSON.stringify(input),
    });
    const answer = await response.json();
    result.textContent = answer.transactionId
      ? `${answer.transactionId}: ${answer.status} (${response.status})`
      : `${response.status}: ${answer.message}`;
  } catch (error) {
    result.textContent = error.message;
  }
}

// ---------------------------------------------------------------- start

$("run-form").addEventListener("submit", run);
$("detail-close").addEventListener("click", () => {
  state.selected = null;
  $("detail").hidden = true;
  renderExecutions();
});
setInterval(tickRunning, 1000);
follow();
