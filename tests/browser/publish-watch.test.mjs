// End to end in headless Chromium: /publish/live publishes the fake camera and microphone with WHIP, /watch/live
// in another page plays it with WHEP; the test asserts decoded frames, their size, and the time to first frame.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { countVideoFrames, launchBrowser, startZipiq, waitForVideoFrames } from './harness.mjs';

test('a browser publishes with WHIP and another page watches with WHEP', async (t) => {
  const server = await startZipiq();
  t.after(() => server.stop());
  const [, key] = await server.waitForOutput(/Stream key:\s+(zq_[A-Za-z0-9_-]+)/);

  const browser = await launchBrowser();
  t.after(() => browser.close());

  const publisher = await browser.newPage();
  await publisher.goto(`${server.base}/publish/live`);
  await publisher.fill('#key', key);
  await publisher.click('#start');
  await publisher.waitForFunction(() => window.zipiqPublishState === 'connected', null, { timeout: 20_000 });

  const viewer = await browser.newPage();
  const opened = Date.now();
  await viewer.goto(`${server.base}/watch/live`);
  await countVideoFrames(viewer, '#video');
  const stats = await waitForVideoFrames(viewer, { selector: '#video', min: 30, timeoutMs: 30_000 });
  assert.ok(stats.frames >= 30, `decoded frames: ${stats.frames}`);
  assert.ok(stats.width > 0 && stats.height > 0, `frame size ${stats.width}x${stats.height}`);
  const page = await viewer.evaluate(() => window.zipiqStats);
  assert.equal(page.state, 'connected');
  assert.ok(page.firstFrameMs !== null, 'the page measured its time to first frame');
  // A generous bound: this is a functional check on a loaded 2-core CI machine, not a performance target.
  assert.ok(page.firstFrameMs < 10_000, `time to first frame ${page.firstFrameMs} ms`);
  t.diagnostic(
    `first frame ${Math.round(page.firstFrameMs)} ms after the WHEP offer (page opened ${Date.now() - opened} ms ago), ` +
      `${stats.width}x${stats.height}, ${stats.frames} frames`,
  );

  // The home page lists the stream; stopping the publisher ends its session cleanly.
  const listing = await (await fetch(`${server.base}/api/v1/live`)).json();
  assert.deepEqual(listing.streams.map((s) => s.name), ['live']);
  assert.equal(listing.streams[0].viewers, 1);
  await publisher.click('#stop');
  await publisher.waitForFunction(() => document.getElementById('status').textContent === 'Stopped.');
});
