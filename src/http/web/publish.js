// Publishes the camera, microphone or screen to /whip/<stream> with the stream key.
"use strict";
(() => {
  const stream = zipiq.streamName();
  document.getElementById("title").textContent = "Publishing to " + stream;
  // "My streams" links here with the key in the fragment (never sent to a server).
  const keyFromLink = zipiq.takeUrlToken("key");
  if (keyFromLink) document.getElementById("key").value = keyFromLink;
  const watch = document.getElementById("watch-link");
  watch.href = "/watch/" + encodeURIComponent(stream);
  watch.textContent = location.origin + watch.getAttribute("href");
  const status = document.getElementById("status");
  const start = document.getElementById("start");
  const stop = document.getElementById("stop");
  let pc = null, resource = null, media = null, key = null;

  function preferH264(transceiver) {
    // H.264 first: OBS viewers and the recorder (CMAF segments) expect it; browsers fall back to others.
    if (!RTCRtpSender.getCapabilities || !transceiver.setCodecPreferences) return;
    const codecs = RTCRtpSender.getCapabilities("video").codecs;
    const h264 = codecs.filter((c) => c.mimeType === "video/H264" && /packetization-mode=1/.test(c.sdpFmtpLine || ""));
    const rest = codecs.filter((c) => !h264.includes(c));
    if (h264.length) transceiver.setCodecPreferences([...h264, ...rest]);
  }

  async function begin(ev) {
    ev.preventDefault();
    key = document.getElementById("key").value.trim();
    start.disabled = true;
    try {
      const source = document.getElementById("source").value;
      media = source === "screen"
        ? await navigator.mediaDevices.getDisplayMedia({ video: true, audio: true })
        : await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: true });
      document.getElementById("preview").srcObject = media;
      pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
      for (const track of media.getTracks()) {
        const t = pc.addTransceiver(track, { direction: "sendonly", streams: [media] });
        if (track.kind === "video") preferH264(t);
      }
      pc.addEventListener("connectionstatechange", () => {
        status.textContent = "Connection: " + pc.connectionState;
        window.zipiqPublishState = pc.connectionState;
      });
      status.textContent = "Connecting…";
      resource = await zipiq.negotiate(pc, "/whip/" + encodeURIComponent(stream), key, { retries: 0 });
      stop.disabled = false;
    } catch (e) {
      status.textContent = "Could not publish: " + e.message;
      window.zipiqPublishState = "error: " + e.message;
      await finish();
    }
  }

  async function finish() {
    await zipiq.end(resource, key);
    resource = null;
    if (pc) pc.close();
    pc = null;
    if (media) media.getTracks().forEach((t) => t.stop());
    media = null;
    start.disabled = false;
    stop.disabled = true;
  }

  document.getElementById("form").addEventListener("submit", begin);
  stop.addEventListener("click", async () => { await finish(); status.textContent = "Stopped."; });
  window.addEventListener("pagehide", () => { if (resource) navigator.sendBeacon && zipiq.end(resource, key); });
})();
