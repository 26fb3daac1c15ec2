// Prints the data root arweave-js gives to test data of several sizes, as Rust tuples `(LEN, "ROOT"),`, for
// the known-value test in src/archive/merkle.rs. The data of length LEN is byte i = (i * 7) % 251.
//
//   node tests/js/data-roots.mjs [LEN...]
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { computeRootHash } = require('arweave/node/lib/merkle')
const { bufferTob64Url } = require('arweave/node/lib/utils')

const KIB = 1024
const sizes = process.argv.length > 2
  ? process.argv.slice(2).map(Number)
  : [1, 1000, 32 * KIB - 1, 256 * KIB - 1, 256 * KIB, 256 * KIB + 1, 288 * KIB - 1, 288 * KIB, 512 * KIB,
      600 * KIB, 5 * 256 * KIB + 77, 7 * 256 * KIB, 3 * 1024 * KIB + 12345]
for (const len of sizes) {
  const data = Uint8Array.from({ length: len }, (_, i) => (i * 7) % 251)
  console.log(`(${len}, "${bufferTob64Url(await computeRootHash(data))}"),`)
}
