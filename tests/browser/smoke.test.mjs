// Smoke tests of the browser test harness itself: Debian's Chromium starts headless, its fake camera gives a live
// video track whose frames a <video> decodes and presents; and, when ZIPIQ_BIN is set, the harness starts zipIQ
// on loopback ports, Chromium loads its front page, and the server stops on SIGTERM.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  countVideoFrames,
  launchBrowser,
  serveFiles,
  startZipiq,
  waitForVideoFrames,
} from './harness.mjs';

const CAMERA_PAGE = `<!doctype html>
<meta charset="utf-8">
<title>fake camera</title>
<video id="camera" muted playsinline></video>`;

test('the fake camera gives a live video track whose frames a video element decodes', async (t) => {
  const site = await serveFiles({ pages: { '/camera.html': CAMERA_PAGE } });
  t.after(() => site.close());
  const browser = await launchBrowser();
  t.after(() => browser.close());
  const page = await browser.newPage();
  await page.goto(`${site.url}/camera.html`);

  const track = await page.evaluate(async () => {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: 640, height: 360, frameRate: 30 },
      audio: true,
    });
    const video = document.getElementById('camera');
    video.srcObject = stream;
    const [videoTrack] = stream.getVideoTracks();
    const [audioTrack] = stream.getAudioTracks();
    return {
      secure: window.isSecureContext,
      video: { kind: videoTrack.kind, state: videoTrack.readyState, settings: videoTrack.getSettings() },
      audio: { kind: audioTrack?.kind, state: audioTrack?.readyState },
    };
  });
  assert.equal(track.secure, true, 'a page on 127.0.0.1 is a secure context');
  assert.equal(track.video.kind, 'video');
  assert.equal(track.video.state, 'live');
  assert.equal(track.video.settings.width, 640);
  assert.equal(track.audio.state, 'live');

  await countVideoFrames(page, '#camera');
  await page.evaluate(() => document.getElementById('camera').play());
  const stats = await waitForVideoFrames(page, { selector: '#camera', min: 10, timeoutMs: 20_000 });
  assert.ok(stats.frames >= 10, `decoded frames: ${stats.frames}`);
  assert.equal(stats.width, 640);
  assert.equal(stats.height, 360);
  t.diagnostic(`first frame after ${Math.round(stats.firstFrameMs)} ms`);
});

test(
  'the harness starts zipiq on loopback, Chromium loads its front page, and SIGTERM stops it',
  { skip: process.env.ZIPIQ_BIN ? false : 'ZIPIQ_BIN is not set' },
  async (t) => {
    const server = await startZipiq();
    t.after(() => server.stop());
    const health = await fetch(`${server.base}/healthz`);
    assert.equal(health.status, 200);

    const browser = await launchBrowser();
    t.after(() => browser.close());
    const page = await browser.newPage();
    const response = await page.goto(`${server.base}/`);
    assert.equal(response.status(), 200);
    assert.match(response.headers()['content-type'] ?? '', /^text\/html/);

    const stopped = await server.stop();
    assert.equal(stopped.signal, null, `zipiq was killed (${stopped.signal}) instead of exiting on SIGTERM`);
    t.diagnostic(`zipiq exited ${stopped.code} ${stopped.tookMs} ms after SIGTERM`);
  },
);
