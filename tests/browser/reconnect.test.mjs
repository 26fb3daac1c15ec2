// The watch page survives its server's death: the server is killed (SIGKILL) while a page watches, a replacement
// starts on the same address with the same data (as a node behind a load balancer would be replaced), the
// publisher reconnects as OBS does, and the watch page connects again on its own and plays on.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { countVideoFrames, launchBrowser, startZipiq, videoFrameStats, waitForVideoFrames } from './harness.mjs';

async function publish(page, base, key) {
  await page.goto(`${base}/publish/live`);
  await page.fill('#key', key);
  await page.click('#start');
  await page.waitForFunction(() => window.zipiqPublishState === 'connected', null, { timeout: 30_000 });
}

test('the watch page reconnects on its own when its server dies and a replacement takes its address', async (t) => {
  const first = await startZipiq();
  t.after(() => first.kill());
  const [, key] = await first.waitForOutput(/Stream key:\s+(zq_[A-Za-z0-9_-]+)/);

  const browser = await launchBrowser();
  t.after(() => browser.close());
  const publisher = await browser.newPage();
  await publish(publisher, first.base, key);
  const viewer = await browser.newPage();
  await viewer.goto(`${first.base}/watch/live`);
  await countVideoFrames(viewer, '#video');
  await waitForVideoFrames(viewer, { selector: '#video', min: 10, timeoutMs: 30_000 });

  // The server dies; a replacement takes its ports and its database.
  const killedAt = Date.now();
  await first.kill();
  const second = await startZipiq({ takeOver: first });
  t.after(() => second.stop());
  // The publisher comes back (OBS reconnects on its own; the browser page is started again).
  await publish(publisher, second.base, key);

  // The watch page, untouched, connects again and plays on.
  await viewer.waitForFunction(
    () => window.zipiqStats.restarts >= 1 && window.zipiqStats.state === 'connected',
    null,
    { timeout: 60_000 },
  );
  const before = (await videoFrameStats(viewer, '#video')).frames;
  const after = await waitForVideoFrames(viewer, { selector: '#video', min: before + 30, timeoutMs: 30_000 });
  assert.ok(after.frames >= before + 30, `frames after the reconnect: ${after.frames - before}`);
  const page = await viewer.evaluate(() => window.zipiqStats);
  t.diagnostic(
    `the page reconnected ${page.restarts} time(s); playing again ${Date.now() - killedAt} ms after the kill`,
  );
});
