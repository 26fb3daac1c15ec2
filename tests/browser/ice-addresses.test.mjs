// ICE with several host addresses (issue "Hardening II", item 6): the media socket on 0.0.0.0 with loopback offered
// beside the machine's own address, so every answer lists two or more host candidates on one port. Twenty times in
// a row a Chromium page publishes with WHIP and another page of the same browser watches with WHEP; every one must
// connect and decode video, and connecting (the WHIP/WHEP answer to "connected") must stay under 1 s at p99.
//
// Before the fix webrtc-rs booked each check on whichever host candidate's read loop took it from the shared
// socket, and about half the viewers never connected. The socket listens on all addresses for this test, but every
// packet stays on this host: Chromium reaches the machine's own address through the loopback device.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { countVideoFrames, freePort, launchBrowser, startZipiq, waitForVideoFrames } from './harness.mjs';

const ROUNDS = 20;

/** Records when the page received the answer to its WHIP or WHEP POST, and how many host candidates it had. */
function watchAnswers(page) {
  const seen = { at: null, hosts: null };
  page.on('response', async (res) => {
    const url = new URL(res.url());
    if (res.request().method() !== 'POST' || !/^\/(whip|whep)\//.test(url.pathname) || res.status() !== 201) return;
    seen.at = Date.now();
    try {
      const sdp = await res.text();
      seen.hosts = new Set(
        sdp
          .split(/\r?\n/)
          .filter((l) => l.startsWith('a=candidate:') && l.includes(' typ host'))
          .map((l) => l.split(' ')[4]),
      ).size;
    } catch {
      seen.hosts = -1;
    }
  });
  return seen;
}

async function waitFor(page, fn, timeoutMs) {
  await page.waitForFunction(fn, null, { timeout: timeoutMs, polling: 10 });
  return Date.now();
}

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

test('with two host addresses, 20 browser publish/watch rounds all connect, p99 under 1 s', async (t) => {
  const server = await startZipiq({
    env: async () => ({
      ZIPIQ_MEDIA__UDP_LISTEN: `0.0.0.0:${await freePort('udp')}`,
      ZIPIQ_MEDIA__INCLUDE_LOOPBACK: 'true',
    }),
  });
  t.after(() => server.stop());
  const [, key] = await server.waitForOutput(/Stream key:\s+(zq_[A-Za-z0-9_-]+)/);

  const browser = await launchBrowser();
  t.after(() => browser.close());

  const publishMs = [];
  const watchMs = [];
  const failures = [];
  let hosts = null;
  for (let round = 1; round <= ROUNDS; round += 1) {
    const publisher = await browser.newPage();
    const viewer = await browser.newPage();
    try {
      const published = watchAnswers(publisher);
      await publisher.goto(`${server.base}/publish/live`);
      await publisher.fill('#key', key);
      await publisher.click('#start');
      const pubConnected = await waitFor(publisher, () => window.zipiqPublishState === 'connected', 10_000);
      publishMs.push(pubConnected - published.at);
      hosts = published.hosts;

      const watched = watchAnswers(viewer);
      await viewer.goto(`${server.base}/watch/live`);
      const viewConnected = await waitFor(viewer, () => window.zipiqStats?.state === 'connected', 10_000);
      watchMs.push(viewConnected - watched.at);
      await countVideoFrames(viewer, '#video');
      await waitForVideoFrames(viewer, { selector: '#video', min: 1, timeoutMs: 10_000 });
      assert.ok(watched.hosts >= 2, `the WHEP answer offered ${watched.hosts} host addresses`);

      await publisher.click('#stop');
      await publisher.waitForFunction(() => document.getElementById('status').textContent === 'Stopped.');
    } catch (e) {
      failures.push(`round ${round}: ${e.message.split('\n')[0]}`);
    } finally {
      await viewer.close();
      await publisher.close();
    }
    // The stream is free again before the next round publishes it (a failed round may leave it held briefly).
    for (let i = 0; i < 100; i += 1) {
      const live = await (await fetch(`${server.base}/api/v1/live`)).json();
      if (live.streams.length === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const summary =
    `host addresses offered: ${hosts}; publish connect p50 ${percentile(publishMs, 50)} ms, ` +
    `p99 ${percentile(publishMs, 99)} ms, max ${Math.max(...publishMs)} ms; watch connect p50 ` +
    `${percentile(watchMs, 50)} ms, p99 ${percentile(watchMs, 99)} ms, max ${Math.max(...watchMs)} ms`;
  t.diagnostic(summary);
  assert.deepEqual(failures, [], `${failures.length} of ${ROUNDS} rounds failed; ${summary}`);
  assert.ok(hosts >= 2, `answers offered ${hosts} host addresses: this machine needs an address besides loopback`);
  assert.ok(percentile(publishMs, 99) < 1000, summary);
  assert.ok(percentile(watchMs, 99) < 1000, summary);
});
