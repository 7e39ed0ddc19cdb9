// The console: plain JavaScript over the app's own API (same origin; the App Service Authentication
// session authorizes each call, no key is in the page). Screens: exports, connections (Admins), an export's
// form with its mapping editor, an export's runs, a run with its live progress and downloads.
"use strict";
(() => {
  const ROLE = document.body.dataset.role;
  const ADMIN = ROLE === "Admin";
  const view = document.getElementById("view");
  const alertBox = document.getElementById("alert");
  const statusBox = document.getElementById("status");
  const ENDED = ["succeeded", "completed_with_rejects", "failed", "skipped", "cancelled"];
  const PROFILE_FIELDS = ["email", "phone_number", "external_id", "first_name", "last_name", "organization",
    "title", "city", "region", "country", "zip"];
  const AGREEMENT = "I agree, on behalf of my organization, that the profiles of the segments exported with this " +
    "connection (email addresses, phone numbers, names and the mapped properties) are sent to Klaviyo, which " +
    "processes them outside this organization. The agreement is recorded with my name and the time.";
  let poll = null;
  let latest = null; // the token of the screen asked for last: one still loading from before is not drawn

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat(3)) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  async function api(method, path, body) {
    const init = { method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch("/api/" + path, init);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    return { status: response.status, ok: response.ok, data };
  }

  function say(message) { alertBox.textContent = ""; statusBox.textContent = message; }
  function fail(result, what) {
    statusBox.textContent = "";
    const message = (result.data && result.data.error) || "the app answered " + result.status;
    alertBox.textContent = what + ": " + message;
  }
  let pending = null; // a message to show once the next screen is drawn
  function go(hash, message) {
    pending = message || null;
    if (location.hash === hash) route(true); else location.hash = hash;
  }
  const when = (iso) => iso ? new Date(iso).toLocaleString() : "";
  const badge = (status) => h("span", { class: "badge " + status, text: status.replaceAll("_", " ") });
  const encoded = encodeURIComponent;

  // Draws a screen: its nodes, nested arrays flattened, nothing for null or false.
  // A screen still loading when another was asked for is not drawn over it.
  function show(token, ...nodes) {
    if (token !== latest) return;
    view.replaceChildren(...nodes.flat(3).filter((n) => n !== null && n !== undefined && n !== false));
  }

  function heading(text) {
    document.title = text + " · Klaviyo exports";
    return h("h1", { text, tabindex: "-1" });
  }

  function table(columns, rows, label) {
    return h("table", { class: "stack", "aria-label": label },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", text: c })))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell, i) => {
        const actions = i === cells.length - 1 && columns[i] === "Actions";
        return h("td", { "data-label": columns[i], class: actions ? "actions" : null }, cell);
      })))));
  }

  // A labelled input with its hint and the place for its error (the API's `problems` name the field).
  function field(label, name, input, hint) {
    const id = "f-" + name.replace(/[^a-z0-9]+/gi, "-");
    input.id = id;
    input.dataset.field = name;
    const hintNode = hint ? h("p", { class: "hint", id: id + "-hint", text: hint }) : null;
    const error = h("p", { class: "field-error", id: id + "-error", hidden: true });
    input.setAttribute("aria-describedby", (hintNode ? id + "-hint " : "") + id + "-error");
    if (input.type === "checkbox") {
      return h("div", { class: "field check" }, input, h("label", { for: id, text: label }), hintNode, error);
    }
    return h("div", { class: "field" }, h("label", { for: id, text: label }), input, hintNode, error);
  }
  const text = (value, attrs) => h("input", { type: "text", value: value || "", ...attrs });
  function select(options, value) {
    const node = h("select", {}, options.map(([v, label]) => h("option", { value: v, text: label })));
    node.value = value === undefined || value === null ? "" : value;
    return node;
  }
  const checkbox = (checked) => { const node = h("input", { type: "checkbox" }); node.checked = !!checked; return node; };

  function clearProblems(form) {
    alertBox.textContent = "";
    form.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; e.hidden = true; });
    form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
  }

  // Puts each problem next to its field (or the closest one: `segment` for `segment.blob` missing, etc.).
  function showProblems(form, result, what) {
    const problems = (result.data && result.data.problems) || [];
    const nameRule = /^(\w+): (.*)$/.exec((result.data && result.data.error) || "");
    if (!problems.length && nameRule) problems.push({ field: nameRule[1], reason: nameRule[2] });
    const elsewhere = [];
    let first = null;
    for (const problem of problems) {
      let input = null;
      for (let parts = problem.field.split("."); parts.length && !input; parts.pop()) {
        input = form.querySelector(`[data-field="${CSS.escape(parts.join("."))}"]`);
      }
      if (!input) { elsewhere.push(problem.field + ": " + problem.reason); continue; }
      const error = document.getElementById(input.id + "-error");
      error.textContent = (error.textContent ? error.textContent + " " : "") + problem.reason;
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      first = first || input;
    }
    fail(result, what);
    if (elsewhere.length) alertBox.append(h("ul", {}, elsewhere.map((p) => h("li", { text: p }))));
    if (first) first.focus();
  }

  // -- exports ---------------------------------------------------------------------------------------------
  async function exportsView(token) {
    const result = await api("GET", "exports");
    if (!result.ok) return fail(result, "The exports could not be listed");
    const exports = result.data.exports;
    const runs = await Promise.all(exports.map((e) => api("GET", `exports/${encoded(e.name)}/runs`)));
    const rows = exports.map((e, i) => {
      const last = runs[i].ok ? runs[i].data.runs[0] : null;
      const actions = [
        h("button", { type: "button", onclick: () => runNow(e.name), "aria-label": "Run " + e.name + " now" }, "Run now"),
        h("a", { class: "button secondary", href: `#/exports/${e.name}/runs`, "aria-label": "Runs of " + e.name }, "Runs"),
      ];
      if (ADMIN) {
        actions.push(h("a", { class: "button secondary", href: `#/exports/${e.name}/edit`, "aria-label": "Edit " + e.name }, "Edit"));
        actions.push(h("button", { type: "button", class: "danger", "aria-label": "Delete " + e.name,
          onclick: () => remove("exports", e.name, "#/exports") }, "Delete"));
      }
      return [e.name, e.connection, e.list_id,
        last ? h("span", {}, badge(last.status), " ", h("span", { class: "muted", text: when(last.created_at) })) : "never run",
        actions];
    });
    show(token, heading("Exports"),
      ADMIN ? h("div", { class: "bar" }, h("a", { class: "button", href: "#/exports/new" }, "Add export")) : null,
      exports.length ? table(["Name", "Connection", "List", "Last run", "Actions"], rows, "Exports")
        : h("p", { text: ADMIN ? "No exports yet." : "No exports you may use yet (ask an Admin)." }));
  }

  async function runNow(name) {
    const result = await api("POST", `exports/${encoded(name)}/runs`);
    if (result.status !== 202) return fail(result, "The run could not be started");
    go(`#/runs/${result.data.run_id}`, `Run of ${name} started: this page follows it.`);
  }

  async function remove(kind, name, back) {
    if (!confirm(`Delete ${kind === "exports" ? "export" : "connection"} ${name}?`)) return;
    const result = await api("DELETE", `${kind}/${encoded(name)}`);
    if (result.status !== 204) return fail(result, `${name} was not deleted`);
    await route();
    say(`Deleted ${name}.`);
  }

  async function exportForm(name, token) {
    const [found, connections] = await Promise.all([
      name ? api("GET", `exports/${encoded(name)}`) : Promise.resolve({ ok: true, data: null }),
      api("GET", "connections"),
    ]);
    if (!found.ok) return fail(found, "The export could not be read");
    if (!connections.ok) return fail(connections, "The connections could not be listed");
    const existing = found.data || { segment: { container: "segments", mode: "blob" }, format: "auto", enabled: true,
      sync_mode: "add", mapping: {} };
    const inputs = {
      name: text(name, { readonly: !!name, autocomplete: "off" }),
      connection: select([["", "Choose a connection"], ...connections.data.connections.map((c) => [c.name, c.display_name + " (" + c.name + ")"])], existing.connection),
      list_id: text(existing.list_id),
      container: text(existing.segment.container),
      mode: select([["blob", "One file"], ["newest", "The newest file under a folder"], ["folder", "A folder of parts with a marker file"]], existing.segment.mode || "blob"),
      path: text(existing.segment.blob || existing.segment.prefix),
      format: select([["auto", "From the file name"], ["csv", "CSV"], ["jsonl", "JSON Lines"], ["parquet", "Parquet"], ["delta", "Delta table"], ["cdm", "CDM folder"]], existing.format),
      delimiter: select([["", "Detect"], [",", "Comma"], [";", "Semicolon"], ["\t", "Tab"], ["|", "Pipe"]], existing.delimiter || ""),
      enabled: checkbox(existing.enabled),
      sync_mode: select([["add", "Add and update (never remove)"], ["mirror", "Mirror (the list holds exactly the segment)"]], existing.sync_mode),
    };
    const pathField = field("File or folder in the container", "segment.blob", inputs.path,
      "e.g. demo/vip-customers.csv, or a folder such as exports/vip/");
    const syncPathName = () => { inputs.path.dataset.field = inputs.mode.value === "blob" ? "segment.blob" : "segment.prefix"; };
    inputs.mode.addEventListener("change", syncPathName);
    const mapping = h("fieldset", { "data-field": "mapping", id: "f-mapping", tabindex: "-1" });
    let columns = null;
    const segmentBody = () => {
      const segment = { container: inputs.container.value, mode: inputs.mode.value };
      segment[inputs.mode.value === "blob" ? "blob" : "prefix"] = inputs.path.value;
      const body = { segment, format: inputs.format.value, delimiter: inputs.delimiter.value || null };
      for (const key of ["csv", "entity", "version"]) if (existing[key] !== undefined && existing[key] !== null) body[key] = existing[key];
      return body;
    };
    const columnsButton = h("button", { type: "button", class: "secondary" }, "Read the columns");
    const form = h("form", { novalidate: true, "aria-label": name ? "Edit export " + name : "Add export" });
    columnsButton.addEventListener("click", async () => {
      clearProblems(form);
      const result = await api("POST", "segment-columns", segmentBody());
      if (!result.ok) return showProblems(form, result, "The columns could not be read");
      columns = result.data.columns;
      say(columns.length ? `${columns.length} columns read from the segment's header.` : result.data.note);
      renderMapping(mapping, existing.mapping, columns);
      const firstSelect = mapping.querySelector("select, input");
      if (firstSelect) firstSelect.focus();
    });
    renderMapping(mapping, existing.mapping, columns);
    syncPathName();
    form.append(
      field("Name", "name", inputs.name, name ? null : "lowercase letters, digits and single dashes"),
      field("Connection", "connection", inputs.connection),
      field("Klaviyo list id", "list_id", inputs.list_id, "the id in the list's URL in Klaviyo, e.g. Xy12Ab"),
      h("fieldset", { "data-field": "segment", id: "f-segment", tabindex: "-1" }, h("legend", { text: "Segment" }),
        h("p", { class: "field-error", id: "f-segment-error", hidden: true }),
        field("Storage container", "segment.container", inputs.container),
        field("What to read", "segment.mode", inputs.mode),
        pathField,
        field("Format", "format", inputs.format),
        field("CSV delimiter", "delimiter", inputs.delimiter),
        h("div", { class: "bar" }, columnsButton)),
      mapping,
      field("Enabled (the timer and dropped files run it)", "enabled", inputs.enabled),
      field("Sync mode", "sync_mode", inputs.sync_mode),
      h("div", { class: "bar" }, h("button", { type: "submit" }, "Save"),
        h("a", { class: "button secondary", href: "#/exports" }, "Cancel")),
      h("p", { class: "hint", text: "Saving does not run the export." }));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearProblems(form);
      const keep = {};
      for (const key of ["csv", "entity", "version", "run_always", "full", "max_removal_share", "confirm_removals", "reconcile"]) {
        if (existing[key] !== undefined && existing[key] !== null) keep[key] = existing[key];
      }
      const body = { ...keep, ...segmentBody(), connection: inputs.connection.value, list_id: inputs.list_id.value,
        mapping: readMapping(mapping), enabled: inputs.enabled.checked, sync_mode: inputs.sync_mode.value };
      const target = inputs.name.value.trim();
      if (!target) return showProblems(form, { status: 400, data: { error: "the export is not valid", problems: [{ field: "name", reason: "a name is needed" }] } }, "Not saved");
      const result = await api("PUT", `exports/${encoded(target)}`, body);
      if (!result.ok) return showProblems(form, result, "The export was not saved");
      go("#/exports", `Saved export ${target}. It has not run: use Run now.`);
    });
    show(token, heading(name ? "Edit export " + name : "Add export"), form);
  }

  // The mapping editor: each profile field picks one of the segment's columns; other columns may go as properties.
  function renderMapping(container, mapping, columns) {
    mapping = mapping || {};
    const used = new Set(PROFILE_FIELDS.map((f) => mapping[f]).filter(Boolean));
    const properties = mapping.properties || {};
    const rows = PROFILE_FIELDS.map((profileField) => {
      const current = mapping[profileField] || (columns && profileField === "email" ? columns.find((c) => c.toLowerCase() === "email") : "") || "";
      const input = columns
        ? select([["", "(not sent)"], ...columns.map((c) => [c, c]), ...(current && !columns.includes(current) ? [[current, current + " (not in the segment)"]] : [])], current)
        : text(current);
      input.dataset.profileField = profileField;
      return field(profileField.replaceAll("_", " "), "mapping." + profileField, input);
    });
    const extra = (columns || Object.keys(properties)).filter((c) => !used.has(c));
    const propertyBoxes = extra.map((column) => {
      const box = checkbox(column in properties);
      box.dataset.property = column;
      box.dataset.propertyName = properties[column] || column;
      return field(`${column} (as the custom property ${properties[column] || column})`, "mapping.properties." + column, box);
    });
    container.replaceChildren(h("legend", { text: "Mapping: which column feeds which profile field" }),
      h("p", { class: "hint", id: "f-mapping-error-hint",
        text: columns ? "Columns offered from the segment's header (names only, no values)." : "Read the columns to pick from them, or type the column names." }),
      h("p", { class: "field-error", id: "f-mapping-error", hidden: true }),
      h("div", { class: "grid" }, rows));
    if (propertyBoxes.length) container.append(h("fieldset", {}, h("legend", { text: "Custom properties" }), propertyBoxes));
  }

  function readMapping(container) {
    const mapping = {};
    container.querySelectorAll("[data-profile-field]").forEach((input) => {
      if (input.value.trim()) mapping[input.dataset.profileField] = input.value.trim();
    });
    const properties = {};
    container.querySelectorAll("[data-property]").forEach((box) => {
      if (box.checked) properties[box.dataset.property] = box.dataset.propertyName;
    });
    if (Object.keys(properties).length) mapping.properties = properties;
    return mapping;
  }

  // -- runs ------------------------------------------------------------------------------------------------
  async function runsView(name, token) {
    const result = await api("GET", `exports/${encoded(name)}/runs`);
    if (!result.ok) return fail(result, "The runs could not be listed");
    const runs = result.data.runs;
    const rows = runs.map((r) => [h("a", { href: `#/runs/${r.run_id}` }, when(r.created_at)), r.trigger, badge(r.status),
      String((r.counts && r.counts.rows_read) || 0), String((r.counts && r.counts.sent) || 0),
      String((r.counts && r.counts.rejected) || 0)]);
    show(token, heading("Runs of " + name),
      h("div", { class: "bar" }, h("button", { type: "button", onclick: () => runNow(name) }, "Run now")),
      runs.length ? table(["Started", "Trigger", "Status", "Rows read", "Sent", "Rejected"], rows, "Runs of " + name)
        : h("p", { text: "No runs yet." }));
    if (token === latest && runs.some((r) => !ENDED.includes(r.status))) poll = setTimeout(() => refresh((t) => runsView(name, t)), 2000);
  }

  async function runView(runId, token) {
    const result = await api("GET", `runs/${encoded(runId)}`);
    if (!result.ok) return fail(result, "The run could not be read");
    const run = result.data;
    const counts = run.counts || {};
    const ended = ENDED.includes(run.status);
    const progress = !ended && counts.rows_read
      ? h("p", {}, h("label", { for: "progress", text: "Sent so far " }),
        h("progress", { id: "progress", max: String(counts.rows_read), value: String(counts.sent || 0) }))
      : null;
    const reasons = (run.report && run.report.reasons) || {};
    const reasonRows = Object.entries(reasons).flatMap(([outcome, byReason]) =>
      Object.entries(byReason).map(([reason, count]) => [outcome, reason, String(count)]));
    const actions = [];
    if (!ended) actions.push(h("button", { type: "button", class: "danger", onclick: () => cancel(run.run_id) }, "Cancel run"));
    if (run.report_path) {
      actions.push(h("a", { class: "button secondary", href: `/api/runs/${run.run_id}/report.json`, download: `${run.export_name}-${run.run_id}-report.json` }, "Download report.json"));
      actions.push(h("a", { class: "button secondary", href: `/api/runs/${run.run_id}/rejects.csv`, download: `${run.export_name}-${run.run_id}-rejects.csv` }, "Download rejects.csv"));
    }
    show(token, heading("Run of " + run.export_name),
      h("p", {}, "Status: ", badge(run.status), run.phase ? h("span", { class: "muted", text: " · phase " + run.phase.replaceAll("_", " ") }) : null),
      h("p", { class: "muted", text: `Started ${when(run.started_at || run.created_at)} by ${run.requested_by} (${run.trigger})` + (run.finished_at ? `, ended ${when(run.finished_at)}` : "") }),
      run.reason ? h("p", {}, h("strong", { text: "Reason: " }), run.reason) : null,
      progress,
      h("h2", { text: "Counts" }),
      h("dl", { class: "counts", "aria-label": "Counts" }, Object.entries(counts).flatMap(([k, v]) =>
        [h("dt", { text: k.replaceAll("_", " ") }), h("dd", { "data-count": k, text: Number(v).toLocaleString() })])),
      reasonRows.length ? [h("h2", { text: "Rows not imported, by reason" }), table(["Outcome", "Reason", "Rows"], reasonRows, "Rows not imported")] : null,
      h("div", { class: "bar" }, actions, h("a", { href: `#/exports/${run.export_name}/runs` }, "All runs of " + run.export_name)));
    if (token === latest && !ended) poll = setTimeout(() => refresh((t) => runView(runId, t)), 1000);
  }

  async function cancel(runId) {
    const result = await api("POST", `runs/${encoded(runId)}/cancel`);
    if (![200, 202].includes(result.status)) return fail(result, "The run was not cancelled");
    say(result.status === 200 ? "Cancelled." : "Asked to stop: it stops within 2 seconds.");
    await refresh((t) => runView(runId, t));
  }

  // -- connections (Admins) ----------------------------------------------------------------------------------
  async function connectionsView(token) {
    const result = await api("GET", "connections");
    if (!result.ok) return fail(result, "The connections could not be listed");
    const rows = result.data.connections.map((c) => [c.name, c.display_name,
      c.usable_by === "contributors" ? "Admins and contributors" : "Admins only", c.secret_name,
      c.privacy_consent ? `agreed by ${c.privacy_consent.agreed_by}, ${when(c.privacy_consent.agreed_at)}` : "not agreed: runs fail",
      [h("a", { class: "button secondary", href: `#/connections/${c.name}/edit`, "aria-label": "Edit " + c.name }, "Edit"),
        h("button", { type: "button", class: "danger", "aria-label": "Delete " + c.name, onclick: () => remove("connections", c.name) }, "Delete")]]);
    show(token, heading("Connections"),
      h("div", { class: "bar" }, h("a", { class: "button", href: "#/connections/new" }, "Add connection")),
      rows.length ? table(["Name", "Display name", "Who may use it", "Key Vault secret", "Privacy agreement", "Actions"], rows, "Connections")
        : h("p", { text: "No connections yet." }));
  }

  async function connectionForm(name, token) {
    const found = name ? await api("GET", `connections/${encoded(name)}`) : { ok: true, data: {} };
    if (!found.ok) return fail(found, "The connection could not be read");
    const c = found.data;
    const inputs = {
      name: text(name, { readonly: !!name, autocomplete: "off" }),
      display_name: text(c.display_name),
      usable_by: select([["admins", "Admins only"], ["contributors", "Admins and contributors"]], c.usable_by || "admins"),
      secret_name: text(c.secret_name, { autocomplete: "off" }),
      privacy_consent: checkbox(!!c.privacy_consent),
    };
    const form = h("form", { novalidate: true, "aria-label": name ? "Edit connection " + name : "Add connection" },
      field("Name", "name", inputs.name, name ? null : "lowercase letters, digits and single dashes"),
      field("Display name", "display_name", inputs.display_name),
      field("Who may use it", "usable_by", inputs.usable_by),
      field("Key Vault secret name", "secret_name", inputs.secret_name,
        "the name of the secret that holds the Klaviyo private API key (the key itself is never entered here)"),
      h("fieldset", {}, h("legend", { text: "Data privacy agreement" }),
        h("p", { class: "agreement", id: "agreement-text", text: AGREEMENT }),
        field("I agree to the data privacy agreement above", "privacy_consent", inputs.privacy_consent,
          "Without it the connection's runs fail before anything is sent; saving without it withdraws an earlier agreement.")),
      h("div", { class: "bar" }, h("button", { type: "submit" }, "Save"),
        h("a", { class: "button secondary", href: "#/connections" }, "Cancel")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearProblems(form);
      const target = inputs.name.value.trim();
      if (!target) return showProblems(form, { status: 400, data: { error: "the connection is not valid", problems: [{ field: "name", reason: "a name is needed" }] } }, "Not saved");
      const result = await api("PUT", `connections/${encoded(target)}`, { display_name: inputs.display_name.value,
        secret_name: inputs.secret_name.value, usable_by: inputs.usable_by.value, privacy_consent: inputs.privacy_consent.checked });
      if (!result.ok) return showProblems(form, result, "The connection was not saved");
      go("#/connections", `Saved connection ${target}.`);
    });
    show(token, heading(name ? "Edit connection " + name : "Add connection"), form);
  }

  // -- routing -----------------------------------------------------------------------------------------------
  async function refresh(render) {
    if (poll) clearTimeout(poll);
    poll = null;
    const hash = location.hash;
    const token = Symbol("screen");
    latest = token;
    try { await render(token); } catch (error) { alertBox.textContent = "The console could not reach the app: " + error.message; }
    if (location.hash !== hash && poll) clearTimeout(poll);
  }

  async function route(moveFocus) {
    const path = location.hash.replace(/^#\/?/, "").split("/");
    const [section, name, sub] = path;
    document.querySelectorAll("[data-nav]").forEach((a) => {
      if (a.dataset.nav === (section || "exports")) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    });
    if (section === "connections" && !ADMIN) return go("#/exports");
    let render = exportsView;
    if (section === "connections") render = name === "new" ? (t) => connectionForm(null, t) : name ? (t) => connectionForm(name, t) : connectionsView;
    else if (section === "exports" && name === "new" && ADMIN) render = (t) => exportForm(null, t);
    else if (section === "exports" && name && sub === "edit" && ADMIN) render = (t) => exportForm(name, t);
    else if (section === "exports" && name && sub === "runs") render = (t) => runsView(name, t);
    else if (section === "runs" && name) render = (t) => runView(name, t);
    await refresh(render);
    if (pending) { say(pending); pending = null; }
    const title = view.querySelector("h1");
    if (moveFocus && title && document.activeElement === document.body) title.focus();
  }

  if (!ADMIN) document.querySelectorAll("[data-admin-only]").forEach((node) => node.remove());
  window.addEventListener("hashchange", () => { alertBox.textContent = ""; statusBox.textContent = ""; route(true); });
  route();
})();
