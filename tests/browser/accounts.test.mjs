// The "done when", through the web pages in headless Chromium: a new user signs up, follows the
// verification link (no mail server: zipIQ writes the mail to its log), logs in, creates a private stream on "My
// streams", publishes the fake camera to it from the browser with its key, and a second page watches it with a
// viewer link, while the same watch page without the link is refused.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { countVideoFrames, launchBrowser, startZipiq, waitForVideoFrames } from './harness.mjs';

test('sign up, verify, log in, create a private stream, publish it and watch it with a viewer link', async (t) => {
  const server = await startZipiq();
  t.after(() => server.stop());
  const browser = await launchBrowser();
  t.after(() => browser.close());
  const email = 'newcomer@example.org';
  const password = 'a long enough password';

  const account = await browser.newPage();
  await account.goto(`${server.base}/signup`);
  await account.fill('input[name=email]', email);
  await account.fill('input[name=password]', password);
  await account.click('button[type=submit]');
  await account.waitForFunction(() => /on its way/.test(document.getElementById('status').textContent));

  // No SMTP server is configured: the mail, with its link, is in the log.
  const [link] = await server.waitForOutput(/http:\/\/127\.0\.0\.1:\d+\/account\/verify#token=zqv_[A-Za-z0-9_-]{43}/);
  await account.goto(link);
  await account.waitForFunction(() => /confirmed/.test(document.getElementById('status').textContent));
  assert.equal(new URL(account.url()).hash, '', 'the token is removed from the address bar');

  await account.goto(`${server.base}/login`);
  await account.fill('input[name=email]', email);
  await account.fill('input[name=password]', password);
  await account.click('button[type=submit]');
  await account.waitForURL(`${server.base}/account`);
  await account.waitForFunction((e) => document.getElementById('who').textContent.includes(e), email);

  await account.fill('#create input[name=name]', 'mine');
  await account.selectOption('#create select[name=visibility]', 'private');
  await account.click('#create button[type=submit]');
  await account.waitForSelector('#secret:not([hidden])');
  const publishLink = await account.getAttribute('#secret a', 'href');
  assert.match(publishLink, /^\/publish\/mine#key=zq_/);

  const publisher = await browser.newPage();
  await publisher.goto(`${server.base}${publishLink}`);
  assert.match(await publisher.inputValue('#key'), /^zq_/, 'the key comes from the link');
  await publisher.click('#start');
  await publisher.waitForFunction(() => window.zipiqPublishState === 'connected', null, { timeout: 20_000 });

  // Without a viewer token the private stream is refused.
  const stranger = await browser.newPage();
  await stranger.goto(`${server.base}/watch/mine`);
  await stranger.waitForFunction(() => /private/.test(document.getElementById('status').textContent), null, {
    timeout: 20_000,
  });

  // The owner makes a viewer link; it plays.
  await account.click('text=Viewer link');
  await account.waitForFunction(() => /Viewer link for mine/.test(document.getElementById('secret').textContent));
  const watchUrl = await account.getAttribute('#secret a', 'href');
  assert.match(watchUrl, /\/watch\/mine#token=/);
  const viewer = await browser.newPage();
  await viewer.goto(watchUrl);
  await countVideoFrames(viewer, '#video');
  const stats = await waitForVideoFrames(viewer, { selector: '#video', min: 20, timeoutMs: 30_000 });
  assert.ok(stats.frames >= 20, `decoded frames: ${stats.frames}`);
  const listing = await (await fetch(`${server.base}/api/v1/live`)).json();
  assert.deepEqual(listing.streams, [], 'a private stream is not listed');

  await publisher.click('#stop');
  await publisher.waitForFunction(() => document.getElementById('status').textContent === 'Stopped.');
});
