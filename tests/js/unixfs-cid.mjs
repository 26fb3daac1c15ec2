// Prints the CID the JavaScript UnixFS importer (ipfs-unixfs-importer, profile `unixfs-v1-2025` of IPIP-499)
// gives to a file, or to a directory wrapping several files. zipIQ's tests compare their own CIDs with it.
//
//   node tests/js/unixfs-cid.mjs FILE              -> CID of FILE's bytes
//   node tests/js/unixfs-cid.mjs --dir F1 F2 ...   -> CID of a directory holding F1, F2 ... under their base names
//
// Nothing is written anywhere: blocks go to an in-memory blockstore.
import { readFile } from 'node:fs/promises'
import { basename } from 'node:path'
import { MemoryBlockstore } from 'blockstore-core'
import { importer } from 'ipfs-unixfs-importer'

const PROFILE = 'unixfs-v1-2025'

async function main (args) {
  const blockstore = new MemoryBlockstore()
  if (args[0] === '--dir') {
    const files = args.slice(1)
    if (files.length === 0) throw new Error('--dir needs at least one file')
    const candidates = []
    for (const file of files) {
      candidates.push({ path: basename(file), content: await readFile(file) })
    }
    let last
    for await (const entry of importer(candidates, blockstore, { profile: PROFILE, wrapWithDirectory: true })) {
      last = entry
    }
    if (last == null || last.path !== '') throw new Error('the importer produced no wrapping directory')
    return last.cid.toString()
  }
  if (args.length !== 1) throw new Error('usage: unixfs-cid.mjs FILE | --dir FILE...')
  const content = await readFile(args[0])
  let last
  for await (const entry of importer([{ content }], blockstore, { profile: PROFILE })) {
    last = entry
  }
  if (last == null) throw new Error('the importer produced nothing')
  return last.cid.toString()
}

main(process.argv.slice(2)).then(
  (cid) => { process.stdout.write(cid + '\n') },
  (err) => { process.stderr.write(String(err?.stack ?? err) + '\n'); process.exit(1) }
)
