// zipIQ's small WHIP/WHEP client, shared by the publish and watch pages. No build step, no dependencies.
"use strict";
const zipiq = (() => {
  // Waits until ICE gathering is complete (or a short timeout): the server uses ICE-lite and needs no trickle.
  function gathered(pc, timeoutMs = 2000) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      pc.addEventListener("icegatheringstatechange", check);
      setTimeout(done, timeoutMs);
    });
  }

  // POSTs the local offer to `url`; retries while the server answers 409/503 with Retry-After (not live yet).
  async function negotiate(pc, url, token, { retries = 30, onWait } = {}) {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    for (let attempt = 0; ; attempt++) {
      const headers = { "Content-Type": "application/sdp" };
      if (token) headers["Authorization"] = "Bearer " + token;
      const res = await fetch(url, { method: "POST", headers, body: pc.localDescription.sdp });
      if (res.status === 201) {
        const answer = await res.text();
        await pc.setRemoteDescription({ type: "answer", sdp: answer });
        return new URL(res.headers.get("Location"), new URL(url, location.href)).toString();
      }
      let detail = "";
      try { detail = (await res.json()).detail || ""; } catch (_) { /* not JSON */ }
      const wait = Number(res.headers.get("Retry-After") || 0);
      if ((res.status === 409 || res.status === 503) && wait > 0 && attempt < retries) {
        if (onWait) onWait(detail, wait);
        await new Promise((r) => setTimeout(r, wait * 1000));
        continue;
      }
      const err = new Error(`${res.status} ${detail}`.trim());
      err.status = res.status;
      throw err;
    }
  }

  async function end(resourceUrl, token) {
    if (!resourceUrl) return;
    const headers = token ? { "Authorization": "Bearer " + token } : {};
    try { await fetch(resourceUrl, { method: "DELETE", headers }); } catch (_) { /* best effort */ }
  }

  function streamName() {
    const parts = location.pathname.split("/").filter(Boolean);
    return decodeURIComponent(parts[parts.length - 1] || "live");
  }

  // A secret handed over in the page URL (#name=... or ?name=...), removed from the address bar and history.
  function takeUrlToken(name = "token") {
    const value = new URLSearchParams(location.hash.slice(1)).get(name) || new URLSearchParams(location.search).get(name);
    if (value) history.replaceState(null, "", location.pathname);
    return value;
  }

  return { negotiate, end, streamName, takeUrlToken };
})();
