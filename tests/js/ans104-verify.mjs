// Verifies ANS-104 data items and bundles with arbundles (the reference JavaScript library) and prints what it
// reads, one JSON object per line, for zipIQ's cross-implementation tests (src/archive/js_tests.rs).
//
//   node tests/js/ans104-verify.mjs ITEM_FILE...            -> {"file", "valid", "id", "signatureType", "owner",
//                                                               "target", "anchor", "tags", "dataSha256"} per item
//   node tests/js/ans104-verify.mjs --bundle BUNDLE_FILE    -> {"valid", "ids"} then one line per item as above
//
// Binary fields are base64url; tags are [{"name", "value"}] as UTF-8 text. Exit code 0 even when an item is
// invalid: the caller reads "valid".
import { readFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { Bundle, DataItem } from 'arbundles'

async function describe (item, file) {
  return {
    file,
    valid: await DataItem.verify(item.getRaw()),
    id: item.id,
    signatureType: item.signatureType,
    owner: item.owner,
    target: item.target,
    anchor: item.anchor,
    tags: item.tags,
    dataSha256: createHash('sha256').update(item.rawData).digest('hex'),
  }
}

const args = process.argv.slice(2)
if (args[0] === '--bundle') {
  if (args.length !== 2) throw new Error('usage: ans104-verify.mjs --bundle BUNDLE_FILE')
  const bundle = new Bundle(readFileSync(args[1]))
  console.log(JSON.stringify({ valid: await bundle.verify(), ids: bundle.getIds() }))
  for (const item of bundle.items) console.log(JSON.stringify(await describe(item, args[1])))
} else {
  if (args.length === 0) throw new Error('usage: ans104-verify.mjs ITEM_FILE...')
  for (const file of args) {
    console.log(JSON.stringify(await describe(new DataItem(readFileSync(file)), file)))
  }
}
