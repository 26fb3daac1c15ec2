// Signs ANS-104 data items with arbundles (ArweaveSigner: RSA-PSS with the largest salt) for zipIQ to parse and
// verify (src/archive/js_tests.rs), and bundles them with arbundles' bundleAndSignData.
//
//   node tests/js/ans104-sign.mjs WALLET.json OUT_DIR
//
// Writes OUT_DIR/item-N.bin for each case below, OUT_DIR/bundle.bin holding every item, and prints one JSON object
// per item: {"file", "id", "owner", "target", "anchor", "tags", "dataSha256"} (binary fields base64url, anchor as
// the raw 32 bytes in base64url).
import { readFileSync, writeFileSync } from 'node:fs'
import { createHash, randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { ArweaveSigner, bundleAndSignData, createData } from 'arbundles'

const [walletFile, outDir] = process.argv.slice(2)
if (!walletFile || !outDir) throw new Error('usage: ans104-sign.mjs WALLET.json OUT_DIR')
const signer = new ArweaveSigner(JSON.parse(readFileSync(walletFile, 'utf8')))
const b64url = (bytes) => Buffer.from(bytes).toString('base64url')

const cases = [
  { data: 'hello from arbundles', opts: { tags: [{ name: 'App-Name', value: 'arbundles' }, { name: 'Content-Type', value: 'text/plain' }] } },
  { data: randomBytes(300 * 1024), opts: { tags: [{ name: 'Chunk-Index', value: '00000001' }], anchor: randomBytes(32).toString('base64url').slice(0, 32) } },
  { data: '', opts: {} },
  { data: 'to someone', opts: { target: b64url(randomBytes(32)), tags: [{ name: 'Ünïcödé', value: '✓ tag 🎥' }] } },
]

const items = []
for (const [index, { data, opts }] of cases.entries()) {
  const item = createData(data, signer, opts)
  await item.sign(signer)
  if (!(await item.isValid())) throw new Error(`arbundles made an invalid item ${index}`)
  const file = join(outDir, `item-${index}.bin`)
  writeFileSync(file, item.getRaw())
  items.push(item)
  console.log(JSON.stringify({
    file,
    id: item.id,
    owner: item.owner,
    target: item.target,
    anchor: b64url(item.rawAnchor),
    tags: item.tags,
    dataSha256: createHash('sha256').update(item.rawData).digest('hex'),
  }))
}
const bundle = await bundleAndSignData(items, signer)
if (!(await bundle.verify())) throw new Error('arbundles made an invalid bundle')
writeFileSync(join(outDir, 'bundle.bin'), bundle.getRaw())
