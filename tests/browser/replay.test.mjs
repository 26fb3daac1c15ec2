// The chunking issue's "done when", in headless Chromium: a browser publishes H.264 + Opus with WHIP for a few
// seconds and stops; the broadcast ends, gets its root CID, and the watch page lists it; /replay/<root> then plays
// the VOD playlist inside the IPFS directory, /ipfs/<root>/index.m3u8, with hls.js, and decodes frames. With
// gateway.public_url (here http://localhost:PORT beside pages on http://127.0.0.1:PORT, another origin), the replay
// loads every playlist and segment from the gateway's origin.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { launchBrowser, startZipiq } from './harness.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Publishes H.264 + Opus from the browser for a few seconds and waits for the broadcast's root CID. */
async function recordBroadcast(server, browser) {
  const [, key] = await server.waitForOutput(/Stream key:\s+(zq_[A-Za-z0-9_-]+)/);
  const publisher = await browser.newPage();
  await publisher.goto(`${server.base}/publish/live`);
  await publisher.fill('#key', key);
  await publisher.click('#start');
  await publisher.waitForFunction(() => window.zipiqPublishState === 'connected', null, { timeout: 20_000 });
  await sleep(6_000);
  await publisher.click('#stop');
  await publisher.waitForFunction(() => document.getElementById('status').textContent === 'Stopped.');
  await publisher.close();

  // The broadcast ends after the grace period and gets the root CID of its IPFS directory.
  let broadcast = null;
  for (let i = 0; i < 150 && !broadcast; i++) {
    const listing = await (await fetch(`${server.base}/api/v1/streams/live/broadcasts`)).json();
    broadcast = listing.broadcasts.find((b) => b.root_cid) ?? null;
    if (!broadcast) await sleep(100);
  }
  assert.ok(broadcast, 'the broadcast ended with a root CID');
  assert.ok(broadcast.chunks.length >= 3, `init and media segments: ${broadcast.chunks.length}`);
  return broadcast;
}

/** Opens /replay/<root> and waits until hls.js has decoded 30 frames (or failed). Returns the page. */
async function replay(server, browser, broadcast) {
  const page = await browser.newPage();
  await page.goto(`${server.base}/replay/${broadcast.root_cid}`);
  await page.waitForFunction(
    () => window.zipiqReplay && (window.zipiqReplay.error || window.zipiqReplay.framesDecoded >= 30),
    null,
    { timeout: 30_000 },
  );
  const state = await page.evaluate(() => window.zipiqReplay);
  assert.equal(state.error, null, `hls.js played without error: ${state.error}`);
  assert.ok(state.framesDecoded >= 30, `decoded frames: ${state.framesDecoded}`);
  const size = await page.evaluate(() => {
    const video = document.getElementById('video');
    return [video.videoWidth, video.videoHeight];
  });
  assert.ok(size[0] > 0 && size[1] > 0, `frame size ${size}`);
  return { page, state };
}

const recordingEnv = {
  ZIPIQ_MEDIA__GRACE_PERIOD_MS: '500',
  ZIPIQ_RECORDING__SEGMENT_TARGET_MS: '1000',
  ZIPIQ_ARCHIVE__MODE: 'off',
};

test('a finished broadcast replays in the browser from its root CID with hls.js', async (t) => {
  const server = await startZipiq({ env: recordingEnv });
  t.after(() => server.stop());
  const browser = await launchBrowser();
  t.after(() => browser.close());
  const broadcast = await recordBroadcast(server, browser);
  assert.equal(broadcast.ipfs_playlist, `/ipfs/${broadcast.root_cid}/index.m3u8`);
  const playlist = await (await fetch(`${server.base}${broadcast.ipfs_playlist}`)).text();
  assert.match(playlist, /#EXT-X-ENDLIST/);

  // The watch page links it.
  const watch = await browser.newPage();
  await watch.goto(`${server.base}/watch/live`);
  await watch.waitForSelector(`#past a[href="/replay/${broadcast.root_cid}"]`, { timeout: 10_000 });
  await watch.close();

  const { state } = await replay(server, browser, broadcast);
  t.diagnostic(`replayed ${state.framesDecoded} frames of ${broadcast.chunks.length} chunks from /ipfs/${broadcast.root_cid}`);
});

test('with gateway.public_url a replay loads its playlist and segments from the gateway origin', async (t) => {
  const server = await startZipiq({
    env: ({ httpPort }) => ({ ...recordingEnv, ZIPIQ_GATEWAY__PUBLIC_URL: `http://localhost:${httpPort}` }),
  });
  t.after(() => server.stop());
  const gateway = `http://localhost:${server.httpPort}`;
  const browser = await launchBrowser();
  t.after(() => browser.close());
  const broadcast = await recordBroadcast(server, browser);
  assert.equal(broadcast.ipfs_playlist, `${gateway}/ipfs/${broadcast.root_cid}/index.m3u8`);

  const requested = [];
  browser.context.on('request', (request) => requested.push(request.url()));
  const { state } = await replay(server, browser, broadcast);
  const content = requested.filter((url) => url.includes('/ipfs/'));
  assert.ok(content.length >= 3, `playlist and segments requested: ${content.join(' ')}`);
  for (const url of content) assert.ok(url.startsWith(`${gateway}/ipfs/`), `from the gateway origin: ${url}`);

  // The gateway's origin serves content only: the pages are not there.
  const page = await fetch(`${gateway}/replay/${broadcast.root_cid}`);
  assert.equal(page.status, 404);
  t.diagnostic(`replayed ${state.framesDecoded} frames from ${gateway}, ${content.length} requests to it`);
});
