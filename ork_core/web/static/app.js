// ork serve: the little script behind the pages. No framework, nothing fetched from elsewhere.
// Text from tasks is always set with textContent, never parsed as HTML.
"use strict";
(function () {
  const TOKEN_KEY = "ork_token";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

  function flash(message, kind) {
    const box = $("#flash");
    box.textContent = message;
    box.className = kind || "info";
    box.hidden = false;
  }

  async function api(method, url, body) {
    const headers = { "Accept": "application/json" };
    if (token()) headers["Authorization"] = "Bearer " + token();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const message = (data && data.error) || (response.status + " " + response.statusText);
      const error = new Error(response.status === 401 ? message + " — enter the API token at the top" : message);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  // -- the token (kept in this browser's localStorage, sent as a header: never a cookie) --------
  function showTokenState() {
    const state = $("#token-state");
    if (state) state.textContent = token() ? "set" : "not set";
  }
  const tokenForm = $("#token-form");
  if (tokenForm) {
    tokenForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("#token").value.trim();
      if (value) localStorage.setItem(TOKEN_KEY, value); else localStorage.removeItem(TOKEN_KEY);
      // Pages (plain GETs) cannot send a header: on a non-loopback server they read with this
      // cookie. The server never accepts it for an action, so a cross-site request gains nothing.
      document.cookie = TOKEN_KEY + "=" + (value ? encodeURIComponent(value) : "") + "; path=/; SameSite=Strict"
        + (value ? "" : "; max-age=0") + (location.protocol === "https:" ? "; Secure" : "");
      $("#token").value = "";
      showTokenState();
      flash(value ? "token saved in this browser" : "token removed", "info");
    });
    showTokenState();
  }

  // -- runs page: trigger ------------------------------------------------------------------------
  const triggerForm = $("#trigger-form");
  if (triggerForm) {
    triggerForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const params = {};
      for (const raw of $("#trigger-params").value.split("\n")) {
        const line = raw.trim();
        if (!line) continue;
        const at = line.indexOf("=");
        if (at <= 0) { flash("params: expected name=value, got " + JSON.stringify(line), "error"); return; }
        params[line.slice(0, at).trim()] = line.slice(at + 1).trim();
      }
      try {
        const run = await api("POST", "/api/v1/runs", { workflow: $("#trigger-workflow").value.trim(), params });
        window.location.href = "/runs/" + encodeURIComponent(run.id);
      } catch (error) { flash("trigger: " + error.message, "error"); }
    });
  }

  // -- schedules page: pause switches ------------------------------------------------------------
  for (const box of $$("input.pause")) {
    box.addEventListener("change", async () => {
      const paused = box.checked;
      try {
        await api("POST", "/api/v1/schedules/" + encodeURIComponent(box.dataset.workflow) + "/pause", { paused });
        box.parentElement.querySelector(".pause-label").textContent = paused ? "paused" : "active";
        flash(box.dataset.workflow + (paused ? " paused" : " unpaused"), "info");
      } catch (error) {
        box.checked = !paused;
        flash("pause: " + error.message, "error");
      }
    });
  }

  // -- runs page: the table follows the runs that are not finished --------------------------------
  const runsTable = $("#runs");
  if (runsTable) {
    const FINAL = ["success", "failed", "cancelled"];
    const unfinished = () => $$("#runs tbody tr[data-run] .badge").some((b) => !FINAL.includes(b.textContent.trim()));
    setInterval(async () => {
      if (document.hidden || !unfinished()) return;
      try {
        const response = await fetch(window.location.href, { headers: { "Accept": "text/html" } });
        if (!response.ok) return;
        const parsed = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = parsed.querySelector("#runs tbody");
        if (fresh) $("#runs tbody").replaceWith(fresh);
      } catch (e) { /* the server restarted: next time */ }
    }, 3000);
  }

  // -- run page ------------------------------------------------------------------------------------
  const runBox = $("#run");
  if (!runBox) return;
  const runId = runBox.dataset.run;
  const nodes = new Map($$("#dag g.node").map((g) => [g.dataset.task, g]));
  let final = runBox.dataset.final === "true";
  let polling = false;
  let panelTag = null;

  function applyStates() {
    const names = JSON.parse($("#names").textContent);
    const states = JSON.parse($("#states").textContent);
    names.forEach((name, i) => {
      const node = nodes.get(name);
      const cls = "node st-" + states[i];
      if (node && node.getAttribute("class") !== cls) {
        node.setAttribute("class", cls);
        node.querySelector("title").textContent = name + ": " + states[i];
      }
    });
  }

  async function refresh() {
    const headers = token() ? { "Authorization": "Bearer " + token() } : {};
    if (panelTag) headers["If-None-Match"] = panelTag;
    const response = await fetch("/runs/" + encodeURIComponent(runId) + "/panel", { headers, cache: "no-store" });
    if (response.status === 304 || !response.ok) return;  // nothing changed
    panelTag = response.headers.get("ETag");
    const parts = document.createElement("template");
    parts.innerHTML = await response.text();  // our server's HTML, task text escaped there
    $("#head").replaceChildren(...parts.content.querySelector('[data-part="head"]').childNodes);
    $("#panel").replaceChildren(...parts.content.querySelector('[data-part="body"]').childNodes);
    applyStates();
    final = $("#run-status") && ["success", "failed", "cancelled"].includes($("#run-status").textContent.trim());
    runBox.dataset.final = final ? "true" : "false";
  }

  async function poll() {
    if (polling) return;
    polling = true;
    try {
      while (!final) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        try { await refresh(); } catch (e) { /* the server restarted: try again */ }
      }
    } finally { polling = false; }
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.act");
    if (button) {
      const action = button.dataset.action;
      const body = action === "retry" && button.dataset.task ? { tasks: [button.dataset.task], downstream: true } : undefined;
      button.disabled = true;
      try {
        const result = await api("POST", "/api/v1/runs/" + encodeURIComponent(runId) + "/" + action, body);
        flash(action === "retry" ? "retry queued: " + result.reset.join(", ") : "cancel requested", "info");
        final = false;
        panelTag = null;
        await refresh();
        final = false;
        poll();
        if (logState.task) openLog(logState.task, null);
      } catch (error) {
        button.disabled = false;
        flash(action + ": " + error.message, "error");
      }
      return;
    }
    const link = event.target.closest("a.show-log, #dag g.node");
    if (link) {
      event.preventDefault();
      openLog(link.dataset.task, null);
    }
  });

  // -- the log panel: attempt tabs, and a live tail by long polling ------------------------------
  const logState = { task: null, attempt: null, offset: 0, generation: 0 };

  function attemptsOf(task) {
    const row = $$("#tasks a.show-log").find((a) => a.dataset.task === task);
    return row ? Math.max(parseInt(row.dataset.attempts, 10) || 0, 1) : 1;
  }

  function openLog(task, attempt) {
    const count = attemptsOf(task);
    attempt = attempt || count;
    logState.task = task; logState.attempt = attempt; logState.offset = 0; logState.generation += 1;
    const wasHidden = $("#logs").hidden;
    $("#logs").hidden = false;
    if (wasHidden) $("#logs").scrollIntoView({ block: "nearest" });
    $("#log-task").textContent = task;
    const tabs = $("#log-tabs");
    tabs.textContent = "";
    for (let n = 1; n <= count; n++) {
      const tab = document.createElement("button");
      tab.type = "button";
      tab.className = "tab" + (n === attempt ? " active" : "");
      tab.setAttribute("role", "tab");
      tab.textContent = "attempt " + n;
      tab.addEventListener("click", () => openLog(task, n));
      tabs.appendChild(tab);
    }
    $("#log-lines").textContent = "";
    for (const [name, node] of nodes) node.classList.toggle("selected", name === task);
    tail(logState.generation);
  }

  async function tail(generation) {
    const pre = $("#log-lines");
    while (generation === logState.generation) {
      const url = "/api/v1/runs/" + encodeURIComponent(runId) + "/logs?task=" + encodeURIComponent(logState.task)
        + "&attempt=" + logState.attempt + "&offset=" + logState.offset + "&wait=" + (final ? 0 : 10);
      let page;
      try { page = await api("GET", url); } catch (error) { flash("log: " + error.message, "error"); return; }
      if (generation !== logState.generation) return;
      const text = page.lines.map((l) => new Date(l.ts * 1000).toLocaleTimeString() + " " + (l.stream === "log" ? l.level : l.stream) + ": " + l.line).join("\n");
      if (text) pre.textContent += (pre.textContent ? "\n" : "") + text;
      if (!pre.textContent) pre.textContent = "(no lines yet)";
      else if (pre.textContent.startsWith("(no lines yet)\n")) pre.textContent = pre.textContent.slice(15);
      logState.offset = page.next_offset;
      if (["success", "failed", "cancelled"].includes(page.run_status) && page.lines.length === 0) return;
    }
  }

  applyStates();
  if (!final) poll();
})();
