// What the dashboard's pages share: the API key, calls to the daemon, small DOM helpers and
// deciding an approval.
"use strict";

const KEY_STORAGE = "notifier-api-key";

const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.set("x-api-key", key);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    $("key-form").hidden = false;
    throw new Unauthorized("an API key is required");
  }
  return response;
}

function keyEntered() {
  return new Promise((resolve) => {
    $("key-form").hidden = false;
    $("key-form").onsubmit = (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY_STORAGE, $("key").value);
      $("key-form").hidden = true;
      resolve();
    };
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function block(title, value) {
  const wrapper = document.createElement("div");
  const heading = document.createElement("h3");
  heading.textContent = title;
  const pre = document.createElement("pre");
  pre.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  wrapper.append(heading, pre);
  return wrapper;
}

function paragraph(text, className) {
  const p = document.createElement("p");
  p.textContent = text;
  if (className) p.className = className;
  return p;
}

function button(label, className, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.className = className;
  element.addEventListener("click", onClick);
  return element;
}

// A comment box with Approve and Reject, deciding the approval `id` (POST /approvals/<id>).
function approvalActions(id, container) {
  const actions = document.createElement("div");
  actions.className = "actions";
  const comment = document.createElement("input");
  comment.placeholder = "comment";
  comment.className = "comment";
  const decide = async (approved) => {
    for (const element of actions.querySelectorAll("button")) element.disabled = true;
    try {
      const response = await api(`/approvals/${encodeURIComponent(id)}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ approved, comment: comment.value }),
      });
      if (!response.ok) throw new Error((await response.json()).message);
    } catch (error) {
      container.append(paragraph(error.message, "error"));
      for (const element of actions.querySelectorAll("button")) element.disabled = false;
    }
  };
  actions.append(
    comment,
    button("Approve", "approve", () => decide(true)),
    button("Reject", "reject", () => decide(false)),
  );
  return actions;
}
