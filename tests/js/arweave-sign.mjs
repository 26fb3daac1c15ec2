// Signs a message the way arweave-js signs (node crypto, RSA-PSS-SHA256, largest salt) and prints the signature
// as base64url. zipIQ's tests use it to prove that they verify signatures with a salt longer than their own.
//
//   node tests/js/arweave-sign.mjs WALLET.json MESSAGE
import { readFileSync } from 'node:fs'
import Arweave from 'arweave'

const [walletFile, message] = process.argv.slice(2)
if (!walletFile || message === undefined) throw new Error('usage: arweave-sign.mjs WALLET.json MESSAGE')
const arweave = Arweave.init({})
const jwk = JSON.parse(readFileSync(walletFile, 'utf8'))
const signature = await arweave.crypto.sign(jwk, new TextEncoder().encode(message))
if (!(await arweave.crypto.verify(jwk.n, new TextEncoder().encode(message), signature))) {
  throw new Error('arweave-js does not verify its own signature')
}
console.log(Arweave.utils.bufferTob64Url(signature))
