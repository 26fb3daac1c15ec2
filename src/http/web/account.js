// "My streams": the logged-in user's streams (create, visibility, rename, new key, viewer links, delete), password
// change and logout, all through /api/v1 with the bearer tokens of session.js.
"use strict";
(() => {
  if (!session.loggedIn()) { location.replace("/login"); return; }
  const status = document.getElementById("status");
  const list = document.getElementById("streams");
  const secret = document.getElementById("secret");

  function show(message, ok) { status.textContent = message; status.className = ok ? "ok" : "error"; }
  function el(tag, props = {}, ...children) {
    const e = document.createElement(tag);
    Object.assign(e, props);
    e.append(...children);
    return e;
  }
  async function call(method, path, body) {
    try { return await session.api(method, path, body); } catch (e) {
      if (e.status === 401) { session.clear(); location.replace("/login"); }
      throw e;
    }
  }

  // Shows a secret (a key or a viewer link) once, with what to do with it.
  function reveal(title, rows) {
    secret.replaceChildren(el("strong", { textContent: title }));
    const table = el("table", { className: "stats" });
    for (const [label, value, href] of rows) {
      const cell = href ? el("a", { href, textContent: value }) : el("code", { textContent: value });
      table.append(el("tr", {}, el("th", { textContent: label }), el("td", {}, cell)));
    }
    secret.append(table, el("p", { className: "muted", textContent: "Shown only now: copy it somewhere safe." }));
    secret.hidden = false;
    secret.scrollIntoView({ behavior: "smooth" });
  }
  function revealKey(stream, key) {
    reveal(`Stream key of ${stream.name}`, [
      ["OBS Service", "WHIP"],
      ["OBS Server", stream.whip_url],
      ["OBS Bearer Token", key],
      ["Or publish from this browser", "/publish/" + stream.name, `/publish/${encodeURIComponent(stream.name)}#key=${encodeURIComponent(key)}`],
    ]);
  }

  function card(s) {
    const visibility = el("select", {});
    for (const v of ["public", "unlisted", "private"]) visibility.append(el("option", { value: v, textContent: v, selected: v === s.visibility }));
    visibility.addEventListener("change", () => act(async () => {
      await call("PATCH", `/api/v1/streams/${encodeURIComponent(s.name)}`, { visibility: visibility.value });
      show(`${s.name} is now ${visibility.value}.`, true);
    }));
    const button = (label, fn) => { const b = el("button", { type: "button", textContent: label }); b.addEventListener("click", () => act(fn)); return b; };
    const path = `/api/v1/streams/${encodeURIComponent(s.name)}`;
    return el("li", {},
      el("div", { className: "row" },
        el("strong", { textContent: s.name }),
        el("span", { className: "muted", textContent: s.live ? `live · ${s.viewers} watching` : "offline" }),
        el("label", {}, "Who may watch ", visibility)),
      el("div", { className: "row" },
        el("a", { href: "/watch/" + encodeURIComponent(s.name), textContent: "Watch" }),
        el("a", { href: "/publish/" + encodeURIComponent(s.name), textContent: "Publish" }),
        button("New key", async () => {
          if (!confirm(`Make a new key for ${s.name}? The old key stops working at once.`)) return;
          const r = await call("POST", path + "/key");
          revealKey(r.body.stream, r.body.key);
        }),
        button("Viewer link", async () => {
          const r = await call("POST", path + "/viewer-tokens", {});
          reveal(`Viewer link for ${s.name}`, [
            ["Watch page", r.body.watch_url, r.body.watch_url],
            ["Valid until", new Date(r.body.expires_at * 1000).toLocaleString()],
          ]);
        }),
        button("Revoke viewer links", async () => {
          await call("DELETE", path + "/viewer-tokens");
          show(`Every viewer link of ${s.name} stopped working.`, true);
        }),
        button("Rename", async () => {
          const name = prompt("New name", s.name);
          if (!name || name === s.name) return;
          await call("PATCH", path, { name });
          show(`Renamed to ${name}.`, true);
        }),
        button("Delete", async () => {
          if (!confirm(`Delete ${s.name}? Its key stops working; its recordings stay archived.`)) return;
          await call("DELETE", path);
          show(`${s.name} is deleted.`, true);
        })));
  }

  async function act(fn) {
    try { await fn(); await load(); } catch (e) { show(e.message, false); }
  }

  async function load() {
    const me = await call("GET", "/api/v1/me");
    document.getElementById("who").textContent = `· ${me.body.email} (${me.body.role})`;
    const r = await call("GET", "/api/v1/streams");
    list.replaceChildren(...r.body.streams.map(card));
    if (r.body.streams.length === 0) list.append(el("li", { className: "muted", textContent: "No stream yet: create one below." }));
  }

  document.getElementById("create").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    act(async () => {
      const r = await call("POST", "/api/v1/streams", { name: f.elements.name.value, visibility: f.elements.visibility.value });
      f.reset();
      revealKey(r.body.stream, r.body.key);
      show(`Created ${r.body.stream.name}.`, true);
    });
  });
  document.getElementById("password").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ev.target;
    act(async () => {
      const r = await call("POST", "/api/v1/me/password", {
        current_password: f.elements.current_password.value,
        new_password: f.elements.new_password.value,
      });
      session.save(r.body);
      f.reset();
      show("Password changed; every other device was logged out.", true);
    });
  });
  document.getElementById("logout").addEventListener("click", async () => {
    try { await call("POST", "/api/v1/auth/logout"); } catch (_) { /* logged out anyway */ }
    session.clear();
    location.assign("/login");
  });
  load().catch((e) => show(e.message, false));
})();
