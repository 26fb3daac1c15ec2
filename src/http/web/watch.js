// Watches /whep/<stream>, shows resolution, frame rate, bitrate and a latency estimate. A private stream needs the
// viewer token of a viewer link (/watch/<stream>#token=... or ?token=...), sent to WHEP as a bearer token.
"use strict";
(() => {
  const stream = zipiq.streamName();
  const viewerToken = zipiq.takeUrlToken();
  document.getElementById("title").textContent = stream;
  const video = document.getElementById("video");
  const status = document.getElementById("status");
  const layerSelect = document.getElementById("layer");
  const stats = { framesDecoded: 0, firstFrameMs: null, startedAt: performance.now(), state: "new" };
  window.zipiqStats = stats;
  let pc = null, resource = null;
  // A lost connection (the node went away, the network dropped) is made again on its own, with a growing pause
  // (1, 2, 4, 8, then every 10 s); behind a load balancer the new request lands on a live node.
  let restarts = 0, restartTimer = null, lostTimer = null;
  stats.restarts = 0;

  function restart(reason) {
    if (restartTimer) return;
    const delay = Math.min(1000 * 2 ** Math.min(restarts, 3), 10000);
    status.textContent = "Connection lost (" + reason + "); trying again in " + delay / 1000 + " s…";
    restartTimer = setTimeout(() => {
      restartTimer = null;
      restarts += 1;
      stats.restarts += 1;
      const old = pc, oldResource = resource;
      pc = null; resource = null;
      try { old && old.close(); } catch (_) { /* already closed */ }
      zipiq.end(oldResource, viewerToken);
      video.srcObject = null;
      start();
    }, delay);
  }

  async function start() {
    pc = new RTCPeerConnection();
    const mine = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addEventListener("track", (ev) => {
      if (!video.srcObject) video.srcObject = ev.streams[0] || new MediaStream();
      if (!ev.streams[0]) video.srcObject.addTrack(ev.track);
    });
    pc.addEventListener("connectionstatechange", () => {
      if (pc !== mine) return;
      stats.state = pc.connectionState;
      status.textContent = "Connection: " + pc.connectionState;
      clearTimeout(lostTimer);
      if (pc.connectionState === "connected") restarts = 0;
      if (pc.connectionState === "failed") restart("failed");
      // Disconnected for 3 s: the other end is most likely gone (a viewer's network blip is shorter).
      if (pc.connectionState === "disconnected") {
        lostTimer = setTimeout(() => { if (pc === mine && pc.connectionState === "disconnected") restart("no packets"); }, 3000);
      }
    });
    try {
      stats.startedAt = performance.now();
      resource = await zipiq.negotiate(pc, "/whep/" + encodeURIComponent(stream), viewerToken, {
        retries: 1000,
        onWait: (detail) => { status.textContent = "Waiting for the stream to go live…"; },
      });
    } catch (e) {
      status.textContent = e.status === 401 || e.status === 403
        ? "This stream is private: open it with the viewer link its owner gave you (" + e.message + ")"
        : "Could not watch: " + e.message;
      stats.state = "error: " + e.message;
      // The node could not be reached or failed: try again. A refusal (4xx) is final.
      if (e.status === undefined || e.status >= 500) restart(e.message);
    }
  }

  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    const onFrame = () => {
      if (stats.firstFrameMs === null) stats.firstFrameMs = performance.now() - stats.startedAt;
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  let lastBytes = 0, lastTime = 0;
  setInterval(async () => {
    if (!pc) return;
    const report = await pc.getStats();
    report.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") {
        stats.framesDecoded = r.framesDecoded || 0;
        document.getElementById("frames").textContent = stats.framesDecoded;
        if (r.frameWidth) document.getElementById("resolution").textContent = `${r.frameWidth}×${r.frameHeight}`;
        if (r.framesPerSecond) document.getElementById("fps").textContent = r.framesPerSecond.toFixed(0) + " fps";
        if (lastTime) {
          const kbps = (8 * (r.bytesReceived - lastBytes)) / (r.timestamp - lastTime);
          document.getElementById("bitrate").textContent = kbps.toFixed(0) + " kbit/s";
        }
        lastBytes = r.bytesReceived; lastTime = r.timestamp;
        if (r.jitterBufferEmittedCount) {
          const jb = (1000 * r.jitterBufferDelay) / r.jitterBufferEmittedCount;
          stats.jitterBufferMs = jb;
          const rtt = stats.rttMs || 0;
          document.getElementById("latency").textContent = `${(jb + rtt / 2).toFixed(0)} ms (jitter buffer + RTT/2)`;
        }
      }
      if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime !== undefined) {
        stats.rttMs = 1000 * r.currentRoundTripTime;
      }
    });
  }, 1000);

  async function chooseLayer() {
    if (!resource) return;
    const headers = { "Content-Type": "application/json" };
    if (viewerToken) headers["Authorization"] = "Bearer " + viewerToken;
    await fetch(resource + "/layer", {
      method: "POST",
      headers,
      body: JSON.stringify({ layer: layerSelect.value || null }),
    });
  }
  layerSelect.addEventListener("change", chooseLayer);

  async function loadLayers() {
    try {
      const res = await fetch("/api/v1/live");
      const body = await res.json();
      const me = body.streams.find((s) => s.name === stream);
      for (const l of (me && me.layers) || []) {
        if (l === "" || [...layerSelect.options].some((o) => o.value === l)) continue;
        const o = document.createElement("option");
        o.value = l; o.textContent = l;
        layerSelect.append(o);
      }
    } catch (_) { /* optional */ }
  }

  // Past broadcasts of this stream, each replayable from its root CID (here, or from any IPFS gateway).
  async function loadPast() {
    const past = document.getElementById("past");
    try {
      const res = await fetch("/api/v1/streams/" + encodeURIComponent(stream) + "/broadcasts?limit=10");
      if (!res.ok) return;
      const body = await res.json();
      const ended = body.broadcasts.filter((b) => b.root_cid);
      if (!ended.length) return;
      const h = document.createElement("h2");
      h.textContent = "Past broadcasts";
      const list = document.createElement("ul");
      for (const b of ended) {
        const li = document.createElement("li");
        const a = document.createElement("a");
        a.href = "/replay/" + encodeURIComponent(b.root_cid);
        a.textContent = new Date(b.started_at).toLocaleString();
        const seconds = b.chunks.reduce((sum, c) => sum + c.duration_ms, 0) / 1000;
        const cid = document.createElement("code");
        cid.textContent = b.root_cid;
        li.append(a, " (" + Math.round(seconds) + " s) ", cid);
        list.append(li);
      }
      past.replaceChildren(h, list);
    } catch (_) { /* optional */ }
  }

  document.getElementById("unmute").addEventListener("click", () => { video.muted = false; video.play(); });
  window.addEventListener("pagehide", () => zipiq.end(resource, viewerToken));
  loadPast();
  start().then(loadLayers);
})();
