// Helpers for zipIQ's browser tests: Debian's Chromium driven by playwright-core, a zipIQ server started from the
// binary in ZIPIQ_BIN with a throwaway data dir and loopback ports, a tiny static file server, and a counter of
// decoded video frames (requestVideoFrameCallback).
//
// Everything listens on 127.0.0.1 only. Every process started here is stopped by the test that started it (see
// `stop`/`close`) and, as a last resort, killed when the test process exits. Temp dirs live under
// ZIPIQ_TEST_TMP (set by scripts/test; removed by it) or the OS temp dir, and are removed on close.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import http from 'node:http';
import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.ZIPIQ_TEST_CHROMIUM || '/usr/bin/chromium';

// Flags for headless Chromium on a machine with no network but loopback: no background connections, fake camera
// and microphone, permission prompts answered yes, and WebRTC host candidates on loopback without mDNS names.
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

const KEEP = process.env.ZIPIQ_TEST_KEEP === '1';
const cleanups = new Set();
process.on('exit', () => {
  for (const fn of cleanups) {
    try {
      fn();
    } catch {
      // Best effort at exit: nothing more can be done.
    }
  }
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => process.exit(128 + os.constants.signals[signal]));
}

/** A new empty directory under ZIPIQ_TEST_TMP (or the OS temp dir). */
export function tempDir(prefix) {
  const base = process.env.ZIPIQ_TEST_TMP || os.tmpdir();
  return mkdtempSync(path.join(base, `${prefix}-`));
}

function removeDir(dir) {
  if (!KEEP) rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** A port that was free on 127.0.0.1 a moment ago ('tcp' or 'udp'). */
export async function freePort(kind = 'tcp') {
  if (kind === 'udp') {
    const socket = dgram.createSocket('udp4');
    await new Promise((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, '127.0.0.1', resolve);
    });
    const { port } = socket.address();
    await new Promise((resolve) => socket.close(resolve));
    return port;
  }
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Launches Chromium with a fresh profile. Returns { context, newPage, close }.
 * `options.args` adds flags; `options.contextOptions` goes to launchPersistentContext.
 */
export async function launchBrowser(options = {}) {
  const userDataDir = tempDir('chromium-profile');
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, ...(options.args ?? [])],
    timeout: 60_000,
    ...options.contextOptions,
  });
  const browserProcess = context.browser()?.process?.();
  let closed = false;
  const kill = () => {
    // At process exit only: playwright kills its browser too, this covers a crash of the driver.
    if (browserProcess && browserProcess.exitCode === null) browserProcess.kill('SIGKILL');
    removeDir(userDataDir);
  };
  cleanups.add(kill);
  return {
    context,
    async newPage() {
      const page = await context.newPage();
      page.on('pageerror', (err) => console.error(`[page error] ${err.message}`));
      return page;
    },
    async close() {
      if (closed) return;
      closed = true;
      await context.close().catch(() => {});
      cleanups.delete(kill);
      removeDir(userDataDir);
    },
  };
}

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.m3u8': 'application/vnd.apple.mpegurl',
  '.mp4': 'video/mp4',
  '.m4s': 'video/iso.segment',
};

/**
 * A static HTTP server on 127.0.0.1: `pages` maps URL paths to { body, type } (or a string of HTML); with `root`,
 * other paths are files under that directory. Returns { url, close }.
 */
export async function serveFiles({ pages = {}, root } = {}) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    const page = pages[url.pathname];
    if (page !== undefined) {
      const { body, type } = typeof page === 'string' ? { body: page, type: MIME['.html'] } : page;
      res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
      return;
    }
    if (root) {
      const file = path.resolve(root, `.${decodeURIComponent(url.pathname)}`);
      if (file.startsWith(path.resolve(root) + path.sep)) {
        try {
          if ((await stat(file)).isFile()) {
            const type = MIME[path.extname(file)] ?? 'application/octet-stream';
            res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' });
            res.end(await readFile(file));
            return;
          }
        } catch {
          // Not found: fall through to 404.
        }
      }
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * The environment zipIQ runs with in tests: loopback listeners on the given ports, SQLite in the data dir, loopback
 * ICE candidates. Keys follow config.toml as `ZIPIQ_<SECTION>__<KEY>`; a test's own env function can replace or
 * remove (value null) any of them.
 */
export function defaultZipiqEnv({ httpPort, mediaPort, adminPort, dataDir }) {
  return {
    ZIPIQ_HTTP__LISTEN: `127.0.0.1:${httpPort}`,
    ZIPIQ_HTTP__PUBLIC_URL: `http://127.0.0.1:${httpPort}`,
    ZIPIQ_MEDIA__UDP_LISTEN: `127.0.0.1:${mediaPort}`,
    ZIPIQ_MEDIA__INCLUDE_LOOPBACK: 'true',
    ZIPIQ_ADMIN__LISTEN: `127.0.0.1:${adminPort}`,
    ZIPIQ_DATABASE__URL: `sqlite://${path.join(dataDir, 'zipiq.db')}`,
  };
}

/** This process's environment without any zipIQ configuration a developer may have set. */
function cleanEnv() {
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if ((key.startsWith('ZIPIQ_') && key.includes('__')) || key === 'ZIPIQ_CONFIG') delete env[key];
  }
  return env;
}

/**
 * Starts `zipiq serve` from ZIPIQ_BIN (or options.bin) in a new data dir, waits until GET /healthz answers 200.
 *
 * options.env: an object, or a function (async allowed) of { httpPort, mediaPort, adminPort, dataDir, freePort }
 *              giving ZIPIQ_* variables laid over defaultZipiqEnv (null removes one).
 * options.args: extra arguments after `serve`.
 * options.readyTimeoutMs: how long to wait for /healthz (default 60 s).
 * options.takeOver: a server killed with kill(): this one starts on its ports and its data dir (its database,
 *              keys), as a replacement node behind the same address would; this one's stop() removes the dir.
 *
 * Returns { base, httpPort, mediaPort, adminPort, dataDir, env, output(), waitForOutput(re, ms), cli(args), stop(),
 * kill() }.
 */
export async function startZipiq(options = {}) {
  const bin = options.bin ?? process.env.ZIPIQ_BIN;
  if (!bin) throw new Error('ZIPIQ_BIN is not set: build zipiq and point ZIPIQ_BIN at the binary');
  const old = options.takeOver;
  const dataDir = old ? old.dataDir : tempDir('zipiq-data');
  const ctx = {
    httpPort: old ? old.httpPort : await freePort('tcp'),
    mediaPort: old ? old.mediaPort : await freePort('udp'),
    adminPort: old ? old.adminPort : await freePort('tcp'),
    dataDir,
    freePort,
  };
  const extra = typeof options.env === 'function' ? await options.env(ctx) : (options.env ?? {});
  const env = { ...cleanEnv(), ...defaultZipiqEnv(ctx), ...extra };
  for (const [key, value] of Object.entries(env)) {
    if (value === null || value === undefined) delete env[key];
    else env[key] = String(value);
  }
  const base = `http://127.0.0.1:${ctx.httpPort}`;
  const logPath = path.join(dataDir, old ? 'server-2.log' : 'server.log');
  const log = createWriteStream(logPath);
  let output = '';
  const child = spawn(bin, ['serve', ...(options.args ?? [])], {
    cwd: dataDir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const onData = (chunk) => {
    output += chunk.toString();
    log.write(chunk);
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = once(child, 'exit');
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  cleanups.add(kill);

  let killed = false;
  const server = {
    base,
    ...ctx,
    env,
    logPath,
    output: () => output,
    async waitForOutput(pattern, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const match = output.match(pattern);
        if (match) return match;
        if (Date.now() > deadline) throw new Error(`zipiq never printed ${pattern}; output:\n${output}`);
        await sleep(50);
      }
    },
    /** Runs another zipiq command (keys, migrate ...) with the same configuration; returns its stdout. */
    async cli(args) {
      const run = spawn(bin, args, { cwd: dataDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      run.stdout.on('data', (c) => (out += c));
      run.stderr.on('data', (c) => (err += c));
      const [code] = await once(run, 'exit');
      if (code !== 0) throw new Error(`zipiq ${args.join(' ')} exited ${code}: ${err}`);
      return out;
    },
    /** SIGKILL at once, like a crash (`kill -9`); the data dir stays, for a server started with takeOver. */
    async kill() {
      if (killed) return;
      killed = true;
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      cleanups.delete(kill);
      await new Promise((resolve) => log.end(resolve));
    },
    /** SIGTERM, then SIGKILL after graceMs. Returns { code, signal, tookMs }. */
    async stop(graceMs = 15_000) {
      const started = Date.now();
      let result = { code: child.exitCode, signal: child.signalCode };
      if (result.code === null && result.signal === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(kill, graceMs);
        const [code, signal] = await exited;
        clearTimeout(timer);
        result = { code, signal };
      }
      cleanups.delete(kill);
      await new Promise((resolve) => log.end(resolve));
      if (!KEEP) removeDir(dataDir);
      return { ...result, tookMs: Date.now() - started };
    },
  };

  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000);
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await server.stop();
      throw new Error(`zipiq exited (${child.exitCode ?? child.signalCode}) before /healthz answered:\n${output}`);
    }
    try {
      const res = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2000) });
      if (res.status === 200) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`zipiq did not answer ${base}/healthz in time:\n${output}`);
    }
    await sleep(100);
  }
  return server;
}

/**
 * Starts counting the frames a <video> presents (requestVideoFrameCallback), and the time to the first one from
 * this call. Read the numbers with videoFrameStats.
 */
export async function countVideoFrames(page, selector = 'video') {
  await page.evaluate((sel) => {
    const video = document.querySelector(sel);
    if (!video) throw new Error(`no element ${sel}`);
    if (!('requestVideoFrameCallback' in HTMLVideoElement.prototype)) {
      throw new Error('requestVideoFrameCallback is not supported');
    }
    const stats = { frames: 0, firstFrameMs: null, start: performance.now() };
    window.__zipiqFrames = window.__zipiqFrames ?? {};
    window.__zipiqFrames[sel] = stats;
    const onFrame = () => {
      stats.frames += 1;
      if (stats.firstFrameMs === null) stats.firstFrameMs = performance.now() - stats.start;
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }, selector);
}

/** { frames, firstFrameMs, width, height, readyState } of a <video> counted by countVideoFrames. */
export async function videoFrameStats(page, selector = 'video') {
  return page.evaluate((sel) => {
    const video = document.querySelector(sel);
    const stats = window.__zipiqFrames?.[sel] ?? { frames: 0, firstFrameMs: null };
    return {
      frames: stats.frames,
      firstFrameMs: stats.firstFrameMs,
      width: video?.videoWidth ?? 0,
      height: video?.videoHeight ?? 0,
      readyState: video?.readyState ?? 0,
    };
  }, selector);
}

/** Waits until the <video> has presented at least `min` frames; returns its stats. */
export async function waitForVideoFrames(page, { selector = 'video', min = 1, timeoutMs = 20_000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stats = await videoFrameStats(page, selector);
    if (stats.frames >= min) return stats;
    if (Date.now() > deadline) {
      throw new Error(`only ${stats.frames} of ${min} frames in ${timeoutMs} ms: ${JSON.stringify(stats)}`);
    }
    await sleep(100);
  }
}
