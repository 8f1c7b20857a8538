// verified_fetch.mjs GATEWAY URL ACCEPT OUT [URL ACCEPT OUT...]: fetches
// each ipfs:// URL with @helia/verified-fetch, which verifies every block
// it gets from the trustless GATEWAY, and writes the body to OUT. ACCEPT
// "-" sends no Accept header. Exits non-zero on any status but 200.
import { writeFile } from 'node:fs/promises'
import { withHTTP } from '@helia/http'
import { createVerifiedFetchWithHelia } from '@helia/verified-fetch'
import { createHeliaLight } from 'helia'

const [gw, ...rest] = process.argv.slice(2)
// helia waits forever for providers when it has fallback routers only (no
// default router ever finishes), so give it one that finds nothing.
const none = { name: 'none', async * findProviders () {} }
const helia = withHTTP(createHeliaLight({ routers: [none] }), {
  delegatedRouters: [],
  recursiveGateways: [gw],
  allowInsecure: true,
  allowLocal: true
})
await helia.start()
const vf = await createVerifiedFetchWithHelia(helia)
let failed = false
for (let i = 0; i + 2 < rest.length; i += 3) {
  const [url, accept, out] = rest.slice(i, i + 3)
  const headers = accept === '-' ? {} : { accept }
  const r = await vf(url, { headers, signal: AbortSignal.timeout(120000) })
  const body = Buffer.from(await r.arrayBuffer())
  console.log(url, r.status, r.headers.get('content-type'), body.length)
  if (r.status !== 200) {
    failed = true
    continue
  }
  await writeFile(out, body)
}
await vf.stop()
await helia.stop()
process.exit(failed ? 1 : 0)
