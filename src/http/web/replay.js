// Replays a finished broadcast from its root CID: /replay/<cid> plays /ipfs/<cid>/index.m3u8 (the VOD playlist
// inside the broadcast's IPFS directory) from this server's gateway with hls.js, or natively where the browser
// plays HLS itself. The gateway is on this origin, or on its own (gateway.public_url, given in the page's
// zipiq-gateway meta). The same path plays from any IPFS gateway.
"use strict";
(() => {
  const cid = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
  const video = document.getElementById("video");
  const status = document.getElementById("status");
  const meta = document.querySelector('meta[name="zipiq-gateway"]');
  const gateway = meta ? meta.content.replace(/\/+$/, "") : "";
  const path = "/ipfs/" + encodeURIComponent(cid) + "/index.m3u8";
  const src = gateway + path;
  document.getElementById("cid").textContent = cid;
  document.getElementById("anywhere").textContent = "https://<gateway>" + path;
  const state = { framesDecoded: 0, error: null, playing: false };
  window.zipiqReplay = state;

  const fail = (message) => {
    state.error = message;
    status.textContent = "Cannot play: " + message;
  };
  if (!/^[A-Za-z0-9]+$/.test(cid)) {
    fail("not a CID");
    return;
  }
  video.addEventListener("playing", () => { state.playing = true; status.textContent = "Playing"; });
  video.addEventListener("ended", () => { status.textContent = "Ended"; });
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    const onFrame = (_now, meta) => {
      state.framesDecoded = meta.presentedFrames;
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  const play = () => video.play().catch((e) => fail(e.message));
  if (window.Hls && Hls.isSupported()) {
    // No worker: the page's CSP allows same-origin scripts only, and a worker would load from a blob: URL.
    const hls = new Hls({ enableWorker: false });
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (data.fatal) fail(data.type + ": " + data.details);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, play);
    hls.loadSource(src);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = src;
    video.addEventListener("loadedmetadata", play);
  } else {
    fail("this browser plays neither HLS nor Media Source Extensions");
  }
})();
