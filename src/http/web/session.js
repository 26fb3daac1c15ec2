// Accounts in the browser: tokens live in localStorage and go out only as "Authorization: Bearer" headers, never as
// cookies, so another site cannot make this browser act with them (no CSRF); the strict Content-Security-Policy
// (same-origin scripts only, no inline script) is what keeps foreign scripts away from them.
"use strict";
const session = (() => {
  const ACCESS = "zipiq.access", REFRESH = "zipiq.refresh";

  function save(pair) {
    localStorage.setItem(ACCESS, pair.access_token);
    localStorage.setItem(REFRESH, pair.refresh_token);
  }
  function clear() {
    localStorage.removeItem(ACCESS);
    localStorage.removeItem(REFRESH);
  }
  function loggedIn() { return !!localStorage.getItem(REFRESH); }

  // Exchanges the refresh token for a new pair (it rotates: the old one is used up). False when it is refused.
  async function refresh() {
    const token = localStorage.getItem(REFRESH);
    if (!token) return false;
    const res = await fetch("/api/v1/auth/refresh", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: token }),
    });
    if (!res.ok) { clear(); return false; }
    save(await res.json());
    return true;
  }

  // Calls the API with the access token; refreshes once on 401. Resolves to { status, body } (body: parsed JSON or
  // null). Throws an Error with the problem's detail (and .field, .status) for other failures.
  async function api(method, path, body) {
    for (let attempt = 0; attempt < 2; attempt++) {
      const headers = {};
      const access = localStorage.getItem(ACCESS);
      if (access) headers["Authorization"] = "Bearer " + access;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      if (res.status === 401 && attempt === 0 && access && await refresh()) continue;
      let parsed = null;
      const text = await res.text();
      if (text) { try { parsed = JSON.parse(text); } catch (_) { parsed = null; } }
      if (res.ok) return { status: res.status, body: parsed };
      const err = new Error((parsed && parsed.detail) || `${res.status} ${res.statusText}`);
      err.status = res.status;
      err.field = parsed && parsed.field;
      throw err;
    }
    throw new Error("not logged in");
  }

  // The token in the page URL's fragment (#token=...) or query (?token=...), removed from the address bar.
  function takeUrlToken(name = "token") {
    const fromHash = new URLSearchParams(location.hash.slice(1)).get(name);
    const fromQuery = new URLSearchParams(location.search).get(name);
    const token = fromHash || fromQuery;
    if (token) history.replaceState(null, "", location.pathname);
    return token;
  }

  return { save, clear, loggedIn, refresh, api, takeUrlToken };
})();
