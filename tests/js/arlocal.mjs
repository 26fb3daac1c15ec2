// Starts arlocal (a local Arweave gateway, npm `arlocal`) for the tests, listening ONLY on 127.0.0.1.
//
//   node tests/js/arlocal.mjs [--port N] [--dir DIR]
//
// --port 0 (the default) lets the kernel pick a free port. --dir is where arlocal keeps its SQLite database and
// its request log (default: a new temp dir, removed on exit; a given --dir is left for its owner to remove). When the gateway answers, prints one line
//   ARLOCAL_READY http://127.0.0.1:PORT
// on stdout and keeps running until SIGTERM or SIGINT, then stops the gateway and exits 0.
//
// arlocal's own CLI and `start()` listen on every interface, so this replaces the Koa app's `listen` with one
// bound to loopback before starting it. arlocal writes its request log to `./logs`, so this runs inside --dir.

import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import ArLocalModule from 'arlocal';

const ArLocal = ArLocalModule.default ?? ArLocalModule;

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    dir: { type: 'string' },
  },
});

const port = Number.parseInt(values.port, 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`arlocal.mjs: bad --port ${values.port}`);
  process.exit(2);
}
const ownDir = values.dir === undefined;
const dir = ownDir ? mkdtempSync(path.join(os.tmpdir(), 'zipiq-arlocal-')) : path.resolve(values.dir);
mkdirSync(dir, { recursive: true });
process.chdir(dir);

// showLogs=false, a database under dir, persist=false (arlocal deletes it on start and stop).
const arlocal = new ArLocal(port || 1984, false, path.join(dir, 'db'), false);

let server;
const listenLoopback = arlocal.app.listen.bind(arlocal.app);
// arlocal's own listen callback only prints "started on port <the port it was given>", which is wrong for port 0.
arlocal.app.listen = () => {
  server = listenLoopback(port, '127.0.0.1');
  return server;
};

await arlocal.start();
if (!server) {
  console.error('arlocal.mjs: arlocal did not call listen');
  process.exit(1);
}
if (!server.listening) {
  await Promise.race([
    once(server, 'listening'),
    once(server, 'error').then(([err]) => {
      throw err;
    }),
  ]);
}
const { port: bound } = server.address();
console.log(`ARLOCAL_READY http://127.0.0.1:${bound}`);

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  // arlocal.stop() does not wait for the server to close; bound it in time either way.
  const timer = setTimeout(() => process.exit(0), 5000);
  timer.unref();
  try {
    await arlocal.stop();
    server.closeAllConnections?.();
    await new Promise((resolve) => server.close(() => resolve()));
  } catch (err) {
    console.error(`arlocal.mjs: error while stopping on ${signal}: ${err}`);
  }
  if (ownDir) rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
