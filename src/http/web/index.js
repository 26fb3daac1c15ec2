// Lists live streams from /api/v1/live and refreshes every few seconds.
"use strict";
async function refresh() {
  const list = document.getElementById("live");
  try {
    const res = await fetch("/api/v1/live");
    const body = await res.json();
    list.replaceChildren();
    if (body.streams.length === 0) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "Nobody is live right now.";
      list.append(li);
    }
    for (const s of body.streams) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "/watch/" + encodeURIComponent(s.name);
      a.textContent = s.name;
      li.append(a, ` · ${s.viewers} watching · ${s.video_codec || "no video"}`);
      list.append(li);
    }
  } catch (e) {
    list.textContent = "Could not load the list: " + e;
  }
}
refresh();
setInterval(refresh, 5000);
