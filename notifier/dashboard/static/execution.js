// One execution's page: its state machine drawn as a graph (laid out by dagre, drawn as SVG),
// each state coloured by what the execution's history says of it, followed live while the
// execution runs (GET /dashboard/executions/<id>/graph every 1.5 s). A click on a state shows
// its input and output; a state waiting for an approval shows the approval's buttons.
"use strict";

const REFRESH_MS = 1500;
const SVG = "http://www.w3.org/2000/svg";
const NODE_HEIGHT = 34;
const FONT = "13px system-ui, -apple-system, 'Segoe UI', sans-serif";
const START = "__start";
const END = "__end";

const executionId = decodeURIComponent(location.pathname.split("/").pop());
const page = { graph: null, drawnFor: null, selected: null };

async function load() {
  for (;;) {
    try {
      const response = await api(`/dashboard/executions/${encodeURIComponent(executionId)}/graph`);
      const graph = await response.json();
      if (!response.ok) throw new Error(graph.message || response.statusText);
      show(graph);
      if (graph.status !== "RUNNING" && graph.status !== "PENDING_REDRIVE") return;
    } catch (error) {
      if (error instanceof Unauthorized) {
        await keyEntered();
        continue;
      }
      $("graph-message").textContent = `No graph: ${error.message}`;
      $("graph-message").className = "error";
      $("graph-message").hidden = false;
    }
    await sleep(REFRESH_MS);
  }
}

function show(graph) {
  page.graph = graph;
  $("execution-name").textContent = graph.name;
  $("execution-status").textContent = graph.status;
  $("execution-status").dataset.status = graph.status;
  $("workflow").textContent = `${graph.executionArn.split(":")[6]} (/${graph.route})`;
  $("graph-message").hidden = !graph.historyTruncated;
  $("graph-message").textContent = "The history is long: drawn from its first events only.";
  if (page.drawnFor !== graph.executionArn) {
    $("graph").replaceChildren(draw(layout(graph.definition)));
    page.drawnFor = graph.executionArn;
  }
  colour(graph);
  if (page.selected) showState(page.selected);
  showApproval(graph);
}

// ---------------------------------------------------------------- the graph

function layout(definition) {
  const g = new dagre.graphlib.Graph({ compound: true, multigraph: true });
  g.setGraph({ rankdir: "TB", nodesep: 24, ranksep: 34, marginx: 16, marginy: 16 });
  g.setDefaultEdgeLabel(() => ({}));
  g.setNode(START, { label: "Start", width: 60, height: 26, kind: "terminal" });
  g.setNode(END, { label: "End", width: 60, height: 26, kind: "terminal" });
  addStates(g, definition, null, START, END);
  dagre.layout(g);
  return g;
}

// The states of `machine` (the definition, or a Parallel branch or Map iterator) into `g`,
// inside the cluster `parent`, entered from `entry` and ending at `exit`.
function addStates(g, machine, parent, entry, exit) {
  edge(g, entry, machine.StartAt, "");
  for (const [name, state] of Object.entries(machine.States)) {
    g.setNode(name, { label: name, width: textWidth(name) + 28, height: NODE_HEIGHT, kind: state.Type });
    if (parent) g.setParent(name, parent);
    let after = name; // where the state's own Next or End leads from
    const branches = state.Type === "Parallel" ? state.Branches || [] : [];
    const iterator = state.Type === "Map" ? state.ItemProcessor || state.Iterator : null;
    const inner = iterator ? [iterator] : branches;
    if (inner.length) {
      after = `${name}::join`;
      g.setNode(after, { label: "", width: 14, height: 14, kind: "join" });
      if (parent) g.setParent(after, parent);
      inner.forEach((branch, i) => {
        const cluster = `${name}::${iterator ? "items" : `branch ${i + 1}`}`;
        g.setNode(cluster, { label: iterator ? `${name}: each item` : "", kind: "cluster" });
        if (parent) g.setParent(cluster, parent);
        addStates(g, branch, cluster, name, after);
      });
    }
    if (state.Next) edge(g, after, state.Next, "");
    if (state.Default) edge(g, name, state.Default, "default");
    for (const choice of state.Choices || []) edge(g, name, choice.Next, "");
    for (const handler of state.Catch || []) edge(g, after, handler.Next, "catch");
    if (state.End || state.Type === "Succeed" || state.Type === "Fail") edge(g, after, exit, "");
  }
}

function edge(g, from, to, kind) {
  g.setEdge(from, to, { kind }, `${from}->${to}:${kind}`);
}

let measuring = null;
function textWidth(text) {
  measuring = measuring || document.createElement("canvas").getContext("2d");
  measuring.font = FONT;
  return Math.ceil(measuring.measureText(text).width);
}

function draw(g) {
  const { width, height } = g.graph();
  const svg = element("svg", { id: "graph-svg", width, height, viewBox: `0 0 ${width} ${height}` });
  const defs = element("defs", {});
  const marker = element("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto",
  });
  marker.append(element("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow-head" }));
  defs.append(marker);
  svg.append(defs);
  for (const id of g.nodes()) {
    const node = g.node(id);
    if (node.kind !== "cluster") continue;
    const cluster = element("g", { class: "cluster" });
    cluster.append(element("rect", {
      x: node.x - node.width / 2, y: node.y - node.height / 2, width: node.width, height: node.height, rx: 8,
    }));
    if (node.label) {
      const label = element("text", { x: node.x - node.width / 2 + 8, y: node.y - node.height / 2 + 14 });
      label.textContent = node.label;
      cluster.append(label);
    }
    svg.append(cluster);
  }
  for (const e of g.edges()) {
    const { points, kind } = g.edge(e);
    const d = points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
    svg.append(element("path", { d, class: `edge ${kind}`, "marker-end": "url(#arrow)" }));
  }
  for (const id of g.nodes()) {
    const node = g.node(id);
    if (node.kind === "cluster") continue;
    const group = element("g", { class: `node ${node.kind === "terminal" || node.kind === "join" ? node.kind : "state"}` });
    group.dataset.kind = node.kind;
    if (node.kind !== "terminal" && node.kind !== "join") {
      group.dataset.state = id;
      group.dataset.status = "not-reached";
      group.addEventListener("click", () => showState(id));
    }
    const x = node.x - node.width / 2;
    const y = node.y - node.height / 2;
    const round = node.kind === "terminal" || node.kind === "join" ? node.height / 2 : 6;
    group.append(element("rect", { x, y, width: node.width, height: node.height, rx: round }));
    if (node.label) {
      const text = element("text", { x: node.x, y: node.y + 4.5, "text-anchor": "middle" });
      text.textContent = node.label;
      group.append(text);
    }
    const title = element("title", {});
    title.textContent = node.kind === "terminal" ? node.label : `${id} (${node.kind})`;
    group.append(title);
    svg.append(group);
  }
  return svg;
}

function element(name, attributes) {
  const made = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) made.setAttribute(key, String(value));
  return made;
}

function colour(graph) {
  for (const group of document.querySelectorAll("#graph-svg g[data-state]")) {
    const state = graph.states[group.dataset.state];
    group.dataset.status = state ? state.status : "not-reached";
    group.classList.toggle("selected", group.dataset.state === page.selected);
  }
}

// ---------------------------------------------------------------- a state, an approval

function showState(name) {
  page.selected = name;
  colour(page.graph);
  const state = page.graph.states[name];
  $("state-title").textContent = `${name}: ${state ? state.status : "not reached"}`;
  const parts = [];
  if (state) {
    parts.push(block("Input", state.input));
    if (state.output != null) parts.push(block("Output", state.output));
    if (state.error || state.cause) parts.push(block("Error", { error: state.error, cause: state.cause }));
  } else {
    parts.push(paragraph("The execution has not reached this state.", "muted"));
  }
  $("state-body").replaceChildren(...parts);
}

async function showApproval(graph) {
  const box = $("approval");
  const waiting = Object.values(graph.states).some((state) => state.status === "waiting");
  if (!waiting) {
    box.hidden = true;
    return;
  }
  const response = await api("/approvals");
  if (!response.ok) return;
  const { approvals } = await response.json();
  const approval = approvals.find((a) => a.executionArn === graph.executionArn);
  if (!approval) {
    box.hidden = true;
    return;
  }
  if (box.dataset.id === approval.id && !box.hidden) return;
  box.dataset.id = approval.id;
  const heading = document.createElement("h3");
  heading.textContent = `Waiting for approval · requested ${new Date(approval.requestedAt).toLocaleTimeString()}`;
  box.replaceChildren(heading, block("File", approval.file), approvalActions(approval.id, box));
  box.hidden = false;
}

load();
