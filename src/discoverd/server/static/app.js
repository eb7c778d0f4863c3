// discoverd dashboard: one long poll on /dashboard/api/state, DOM built with textContent only.
"use strict";

(() => {
  const TOKEN_KEY = "discoverd.token";
  const STATE_URL = "/dashboard/api/state";
  const $ = (id) => document.getElementById(id);

  let state = null; // the last state answer's data
  let receivedAt = 0; // Date.now() when it arrived (ages advance locally from there)
  let selected = null; // {appid, env} whose instances are shown
  let generation = 0; // bumped to restart the long poll (selection or token changed)
  let controller = null;

  // -- small DOM helpers (never innerHTML: registry data is text) -----------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-") || key === "title") node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(typeof child === "string" ? document.createTextNode(child) : child);
      }
    }
    return node;
  }

  function badge(status) {
    const cls = status.startsWith("UNKNOWN") ? "UNKNOWN" : status;
    return el("span", { class: `badge badge-${cls}`, text: status });
  }

  function formatAge(seconds) {
    if (!Number.isFinite(seconds)) return "?";
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function ageCell(base) {
    const span = el("span", { class: "age", text: formatAge(base) });
    span.dataset.base = String(base);
    return span;
  }

  function updateAges() {
    if (!state) return;
    const passed = (Date.now() - receivedAt) / 1000;
    for (const span of document.querySelectorAll(".age")) {
      span.textContent = formatAge(Number(span.dataset.base) + passed);
    }
  }

  function showMessage(text, kind) {
    const box = $("message");
    box.textContent = text;
    box.dataset.kind = kind;
    box.hidden = false;
  }

  function setConn(kind, text) {
    const conn = $("conn");
    conn.className = `conn conn-${kind}`;
    conn.dataset.state = kind;
    conn.textContent = text;
  }

  // -- token and requests ----------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function authHeaders() {
    const t = token();
    return t ? { Authorization: `Bearer ${t}` } : {};
  }

  async function post(path, pairs) {
    const resp = await fetch(path, {
      method: "POST",
      headers: { ...authHeaders(), "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(pairs),
    });
    const text = await resp.text();
    try {
      return JSON.parse(text);
    } catch {
      throw new Error(`HTTP ${resp.status}: ${text.slice(0, 200)}`);
    }
  }

  async function act(label, path, pairs) {
    showMessage(`${label}…`, "pending");
    try {
      const body = await post(path, pairs);
      if (body.code === 0) showMessage(`${label}: done`, "ok");
      else showMessage(`${label}: error ${body.code}: ${body.message}`, "error");
      return body.code === 0;
    } catch (err) {
      showMessage(`${label}: ${err.message}`, "error");
      return false;
    }
  }

  function instancePairs(ins) {
    return [["zone", ins.zone], ["env", ins.env], ["appid", ins.appid], ["hostname", ins.hostname]];
  }

  // -- the long poll ---------------------------------------------------------------------------

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function pollLoop() {
    const mine = ++generation;
    let since = 0;
    let mark = null;
    let failures = 0;
    while (mine === generation) {
      controller = new AbortController();
      const query = new URLSearchParams({ since: String(since) });
      if (mark !== null) query.set("renews", mark);
      if (selected) {
        query.set("app", selected.appid);
        query.set("env", selected.env);
      }
      try {
        const resp = await fetch(`${STATE_URL}?${query}`, {
          headers: authHeaders(),
          signal: controller.signal,
          cache: "no-store",
        });
        const body = await resp.json();
        if (mine !== generation) return;
        if (body.code !== 0) {
          setConn("error", `state: error ${body.code}: ${body.message}`);
          if (body.code === -401 || body.code === -403) return; // wait for another token
          failures += 1;
          await sleep(Math.min(5000, 250 * 2 ** failures));
          continue;
        }
        failures = 0;
        state = body.data;
        receivedAt = Date.now();
        since = state.version;
        mark = state.renew_mark;
        render();
        setConn("live", `live · v${state.version}`);
      } catch (err) {
        if (mine !== generation || (err && err.name === "AbortError")) return;
        failures += 1;
        setConn("reconnecting", "reconnecting…");
        await sleep(Math.min(5000, 250 * 2 ** failures));
      }
    }
  }

  function restart() {
    generation += 1;
    if (controller) controller.abort();
    pollLoop();
  }

  // -- rendering -------------------------------------------------------------------------------

  function render() {
    document.documentElement.dataset.version = String(state.version);
    renderNode();
    renderGuard();
    renderNodes();
    renderXds();
    renderApps();
    renderInstances();
  }

  function renderNode() {
    const n = state.node;
    const summary = $("node-summary");
    summary.replaceChildren(
      el("span", { class: "mono", text: n.addr }),
      ` · zone ${n.zone} · env ${n.env} · ${n.hostname} · v${n.version} · up `,
      ageCell(n.uptime),
      ` · ${n.apps} apps, ${n.instances} instances`,
    );
  }

  function renderGuard() {
    const g = state.guard;
    const status = $("guard-status");
    status.className = `guard-status ${g.eviction_suspended ? "suspended" : "normal"}`;
    status.textContent = g.eviction_suspended ? "Eviction suspended" : "Eviction running normally";
    status.dataset.suspended = String(g.eviction_suspended);
    const facts = [
      [`Renews, last ${g.window} s window`, `${g.renews_last_window}`],
      ["Needed per window", `${g.needed} (${Math.round(g.threshold * 100)} % of ${g.expected} expected)`],
      ["Renews this window so far", `${g.renews_this_window}`],
      ["Evicted after", `${g.evict_after} s without renew`],
    ];
    $("guard-facts").replaceChildren(
      ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]),
    );
    const items = g.reasons.map((r) => el("li", { class: "bad", text: `${r.kind}: ${r.text}`, "data-kind": r.kind }));
    if (g.startup_protect) {
      items.push(el("li", {
        class: "warn",
        "data-kind": "startup-protect",
        text: `start-up protect: protocol reads answer -500 until a peer sync succeeds or ${state.node.protect_duration} s pass (eviction is not affected)`,
      }));
    }
    $("guard-reasons").replaceChildren(...items);
  }

  function renderNodes() {
    const rows = state.nodes.map((n) =>
      el("tr", { "data-addr": n.addr },
        el("td", { class: "mono", text: n.addr }),
        el("td", { text: n.zone }),
        el("td", { text: n.role === "self" ? "this node" : n.role === "peer" ? "peer" : "other zone" }),
        el("td", {}, badge(n.status)),
      ),
    );
    $("nodes").tBodies[0].replaceChildren(...rows);
  }

  function renderXds() {
    const panel = $("xds-panel");
    panel.hidden = state.xds === null;
    if (state.xds === null) return;
    const rows = state.xds.map((c) =>
      el("tr", { "data-node": c.node_id },
        el("td", { class: "mono", text: c.node_id || "(no request yet)" }),
        el("td", { class: "mono", text: c.peer }),
        el("td", { text: c.env }),
        el("td", { text: c.zone }),
        el("td", { text: (c.watching.endpoints || c.watching.listener || []).join(", ") }),
        el("td", { text: String(c.nacks) }),
      ),
    );
    $("xds").tBodies[0].replaceChildren(...rows);
    $("xds-count").textContent = `(${state.xds.length})`;
    $("xds-empty").hidden = state.xds.length > 0;
  }

  function zoneCounts(zones) {
    const box = el("div", { class: "zone-counts" });
    for (const [zone, counts] of Object.entries(zones)) {
      const parts = Object.entries(counts).filter(([, n]) => n > 0).map(([s, n]) => `${n} ${s}`);
      box.append(el("span", { text: `${zone}: ${parts.join(", ") || "0"}`, "data-zone": zone }));
    }
    return box;
  }

  function isSelected(a) {
    return selected !== null && selected.appid === a.appid && selected.env === a.env;
  }

  function renderApps() {
    const filter = $("apps-filter").value.trim().toLowerCase();
    const apps = state.apps.filter((a) => !filter || a.appid.toLowerCase().includes(filter));
    const rows = apps.map((a) => {
      const open = el("button", { class: "link", text: a.appid, type: "button" });
      open.addEventListener("click", () => select({ appid: a.appid, env: a.env }));
      const row = el("tr", { "data-app": a.appid, "data-env": a.env },
        el("td", {}, open),
        el("td", { text: a.env }),
        el("td", { class: "num", text: String(a.instances) }),
        el("td", {}, zoneCounts(a.zones)),
      );
      if (isSelected(a)) row.classList.add("selected");
      return row;
    });
    $("apps").tBodies[0].replaceChildren(...rows);
    $("apps-count").textContent = `(${state.apps.length})`;
    $("apps-empty").hidden = state.apps.length > 0;
  }

  function metadataList(meta) {
    const entries = Object.entries(meta);
    if (!entries.length) return el("span", { class: "muted", text: "—" });
    return el("ul", {}, ...entries.map(([k, v]) => el("li", { class: "mono", text: `${k}=${v}` })));
  }

  function renderInstances() {
    const panel = $("instances-panel");
    if (!selected || !state.selected) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    $("instances-title").textContent = `Instances of ${selected.appid} (${selected.env})`;
    $("instances-gone").hidden = state.selected.found;
    const rows = state.instances.map((ins) => {
      const buttons = [
        ["Set WAITING", () => act(`set ${ins.hostname} WAITING`, "/discovery/set", [...instancePairs(ins), ["status", "2"]])],
        ["Set UP", () => act(`set ${ins.hostname} UP`, "/discovery/set", [...instancePairs(ins), ["status", "1"]])],
        ["Edit metadata", () => editMetadata(ins)],
        ["Cancel", () => confirmCancel(ins)],
      ].map(([label, handler]) => {
        const b = el("button", { type: "button", text: label, "data-action": label });
        if (label === "Cancel") b.classList.add("danger");
        b.addEventListener("click", handler);
        return b;
      });
      return el("tr", { "data-hostname": ins.hostname, "data-zone": ins.zone, "data-status": ins.status_name },
        el("td", { text: ins.zone }),
        el("td", { class: "mono", text: ins.hostname }),
        el("td", {}, el("ul", {}, ...ins.addrs.map((a) => el("li", { class: "mono", text: a })))),
        el("td", { text: ins.version || "—" }),
        el("td", {}, badge(ins.status_name)),
        el("td", { class: "metadata" }, metadataList(ins.metadata)),
        el("td", {}, ageCell(ins.reg_age)),
        el("td", {}, ageCell(ins.renew_age)),
        el("td", { class: "actions" }, ...buttons),
      );
    });
    $("instances").tBodies[0].replaceChildren(...rows);
  }

  // -- selection and dialogs -------------------------------------------------------------------

  function select(app) {
    selected = app;
    const hash = new URLSearchParams({ app: app.appid, env: app.env });
    history.replaceState(null, "", `#${hash}`);
    if (state) renderApps();
    restart();
  }

  function selectionFromHash() {
    const hash = new URLSearchParams(location.hash.slice(1));
    const appid = hash.get("app");
    return appid ? { appid, env: hash.get("env") || "" } : null;
  }

  let pendingConfirm = null;
  let editing = null;

  function confirmCancel(ins) {
    pendingConfirm = ins;
    $("confirm-text").textContent =
      `Cancel ${ins.hostname} of ${ins.appid} (${ins.env}, zone ${ins.zone})? It leaves the registry until it registers again.`;
    $("confirm-dialog").showModal();
  }

  function editMetadata(ins) {
    editing = ins;
    $("meta-title").textContent = `Metadata of ${ins.hostname}`;
    $("meta-text").value = JSON.stringify(ins.metadata, null, 2);
    $("meta-error").hidden = true;
    $("meta-dialog").showModal();
  }

  function parseMetadata(text) {
    let value;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new Error(`not valid JSON: ${err.message}`);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new Error("metadata must be a JSON object");
    }
    for (const [k, v] of Object.entries(value)) {
      if (typeof v !== "string") throw new Error(`the value of "${k}" must be a string`);
    }
    return value;
  }

  function wireDialogs() {
    $("confirm-no").addEventListener("click", () => $("confirm-dialog").close());
    $("confirm-ok").addEventListener("click", () => {
      const ins = pendingConfirm;
      $("confirm-dialog").close();
      if (ins) act(`cancel ${ins.hostname}`, "/discovery/cancel", instancePairs(ins));
    });
    $("meta-cancel").addEventListener("click", () => $("meta-dialog").close());
    $("meta-save").addEventListener("click", async () => {
      const ins = editing;
      let meta;
      try {
        meta = parseMetadata($("meta-text").value);
      } catch (err) {
        $("meta-error").textContent = err.message;
        $("meta-error").hidden = false;
        return;
      }
      $("meta-dialog").close();
      await act(`metadata of ${ins.hostname}`, "/discovery/set", [...instancePairs(ins), ["metadata", JSON.stringify(meta)]]);
    });
  }

  function wireToken() {
    const input = $("token");
    input.value = token();
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
      showMessage(value ? "token set for this tab" : "token cleared", "ok");
      restart();
    });
    $("token-clear").addEventListener("click", () => {
      input.value = "";
      sessionStorage.removeItem(TOKEN_KEY);
      showMessage("token cleared", "ok");
      restart();
    });
  }

  function start() {
    selected = selectionFromHash();
    wireDialogs();
    wireToken();
    $("apps-filter").addEventListener("input", () => state && renderApps());
    setInterval(updateAges, 1000);
    pollLoop();
  }

  start();
})();
