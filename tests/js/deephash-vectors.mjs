// Prints deep-hash test vectors computed by arweave-js (and checked against arbundles' own deep hash), one per
// line as `NAME HEX`. zipIQ's unit tests in src/archive/deephash.rs embed these values.
//
//   node tests/js/deephash-vectors.mjs
import { createRequire } from 'node:module'
import { deepHash as arbundlesDeepHash } from 'arbundles'

const require = createRequire(import.meta.url)
const arweaveDeepHash = require('arweave/node/lib/deepHash').default

const text = (s) => new TextEncoder().encode(s)
const pattern = (len, mul) => Uint8Array.from({ length: len }, (_, i) => (i * mul) % 256)

const vectors = [
  ['empty_blob', new Uint8Array()],
  ['hello_blob', text('hello')],
  ['empty_list', []],
  ['nested', [text('dataitem'), text('1'), [[text('a'), text('b')], []], pattern(256, 1)]],
  ['one_mib_blob', pattern(1024 * 1024, 31)],
]

for (const [name, value] of vectors) {
  const ours = Buffer.from(await arweaveDeepHash(value)).toString('hex')
  const theirs = Buffer.from(await arbundlesDeepHash(value)).toString('hex')
  if (ours !== theirs) throw new Error(`${name}: arweave-js and arbundles disagree (${ours} vs ${theirs})`)
  console.log(`${name} ${ours}`)
}
