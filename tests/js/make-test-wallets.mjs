// Makes the TEST-ONLY Arweave wallets in tests/data/wallets/ with arweave-js (RSA-4096 JWKs, as a user's wallet
// would be). They hold nothing and must never hold anything: their private keys are public in this repository.
//
//   node tests/js/make-test-wallets.mjs DIR NAME...   -> DIR/NAME.json for each NAME (existing files are kept)
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import Arweave from 'arweave'

const [dir, ...names] = process.argv.slice(2)
if (!dir || names.length === 0) throw new Error('usage: make-test-wallets.mjs DIR NAME...')
const arweave = Arweave.init({})
for (const name of names) {
  const file = join(dir, `${name}.json`)
  if (existsSync(file)) continue
  const jwk = await arweave.wallets.generate()
  writeFileSync(file, JSON.stringify(jwk, null, 2) + '\n', { mode: 0o600 })
  console.log(`${file} ${await arweave.wallets.jwkToAddress(jwk)}`)
}
