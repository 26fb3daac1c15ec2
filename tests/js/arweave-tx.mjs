// Format-2 Arweave transactions with arweave-js, for zipIQ's cross-implementation tests (src/archive/js_tests.rs).
//
//   node tests/js/arweave-tx.mjs verify TX.json [DATA_FILE]
//       Verifies a transaction zipIQ signed (the JSON of POST /tx) with `arweave.transactions.verify`; with
//       DATA_FILE, also computes the data root of its bytes. Prints {"valid", "dataRoot"}.
//   node tests/js/arweave-tx.mjs sign WALLET.json DATA_FILE LAST_TX REWARD
//       Signs a transaction carrying DATA_FILE's bytes, tagged App-Name: arweave-js, and prints its JSON (the body of
//       POST /tx, data left out).
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import Arweave from 'arweave'

const require = createRequire(import.meta.url)
const { computeRootHash } = require('arweave/node/lib/merkle')

// No requests are made: verify and sign work offline.
const arweave = Arweave.init({ host: '127.0.0.1', port: 1, protocol: 'http' })
const [mode, ...args] = process.argv.slice(2)

if (mode === 'verify') {
  const [txFile, dataFile] = args
  const tx = arweave.transactions.fromRaw(JSON.parse(readFileSync(txFile, 'utf8')))
  const valid = await arweave.transactions.verify(tx)
  const dataRoot = dataFile ? Arweave.utils.bufferTob64Url(await computeRootHash(readFileSync(dataFile))) : null
  console.log(JSON.stringify({ valid, dataRoot }))
} else if (mode === 'sign') {
  const [walletFile, dataFile, lastTx, reward] = args
  const jwk = JSON.parse(readFileSync(walletFile, 'utf8'))
  const tx = await arweave.createTransaction({ data: readFileSync(dataFile), last_tx: lastTx, reward }, jwk)
  tx.addTag('App-Name', 'arweave-js')
  await arweave.transactions.sign(tx, jwk)
  const json = tx.toJSON()
  json.data = ''
  console.log(JSON.stringify(json))
} else {
  throw new Error('usage: arweave-tx.mjs verify TX.json [DATA_FILE] | sign WALLET.json DATA_FILE LAST_TX REWARD')
}
