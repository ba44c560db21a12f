// The node's WireGuard key file (created 0600, reused, refused when readable by others),
// the key never in a log, and command errors that name the command and its stderr.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { generatePrivateKey, isWireGuardKey, loadOrCreateKey, publicKeyOf } from '../../agent/wireguard/keys.ts';
import { must, runCommand } from '../../agent/wireguard/exec.ts';
import { WireGuardError } from '../../agent/wireguard/errors.ts';

/** a pino logger whose every line lands in `lines` */
function capturingLogger(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, cb) { lines.push(chunk.toString()); cb(); } });
  return { logger: pino({ level: 'trace' }, sink), lines };
}

describe('wireguard keys', () => {
  const dir = mkdtempSync(join(tmpdir(), 'nodal-wgkey-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('derives the public key like X25519 does (RFC 7748 §6.1 vector)', () => {
    const alice = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex').toString('base64');
    const pub = Buffer.from('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a', 'hex').toString('base64');
    assert.equal(publicKeyOf(alice), pub);
  });

  it('generates clamped keys, as `wg genkey` does', () => {
    for (let i = 0; i < 20; i++) {
      const k = generatePrivateKey();
      assert.ok(isWireGuardKey(k));
      const raw = Buffer.from(k, 'base64');
      assert.equal(raw[0]! & 7, 0);
      assert.equal(raw[31]! & 0xc0, 0x40);
    }
  });

  it('creates private.key 0600 on first start and reuses it after, never logging it', () => {
    const { logger, lines } = capturingLogger();
    const keyDir = join(dir, 'node-a');
    const first = loadOrCreateKey(keyDir, logger);
    assert.equal(first.created, true);
    const file = join(keyDir, 'private.key');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(keyDir).mode & 0o777, 0o700);
    const priv = readFileSync(file, 'utf8').trim();
    assert.ok(isWireGuardKey(priv));
    assert.equal(publicKeyOf(priv), first.publicKey);
    assert.deepEqual(readdirSync(keyDir), ['private.key'], 'no temporary file left behind');

    const second = loadOrCreateKey(keyDir, logger);
    assert.equal(second.created, false);
    assert.equal(second.publicKey, first.publicKey);
    assert.equal(readFileSync(file, 'utf8').trim(), priv, 'the file is not rewritten');

    const log = lines.join('');
    assert.ok(log.includes(first.publicKey), 'the logs name the public key');
    assert.equal(log.includes(priv), false, 'the private key must never be logged');
  });

  it('refuses a key file others can read, without quoting it', () => {
    const keyDir = join(dir, 'node-b');
    loadOrCreateKey(keyDir, capturingLogger().logger);
    const file = join(keyDir, 'private.key');
    const priv = readFileSync(file, 'utf8');
    rmSync(file);
    writeFileSync(file, priv, { mode: 0o644 });
    assert.throws(() => loadOrCreateKey(keyDir, capturingLogger().logger), (e: WireGuardError) => {
      assert.equal(e.code, 'NODAL_ERR_WG_KEY');
      assert.match(e.message, /mode 0644; a WireGuard private key must be 0600/);
      assert.equal(e.message.includes(priv.trim()), false);
      return true;
    });
  });

  it('refuses a file that is not a key, without quoting it', () => {
    const keyDir = join(dir, 'node-c');
    loadOrCreateKey(keyDir, capturingLogger().logger);
    const file = join(keyDir, 'private.key');
    rmSync(file);
    writeFileSync(file, 'secret-but-not-a-key\n', { mode: 0o600 });
    assert.throws(() => loadOrCreateKey(keyDir, capturingLogger().logger), (e: WireGuardError) =>
      e.code === 'NODAL_ERR_WG_KEY' && /does not hold a WireGuard private key/.test(e.message) && !e.message.includes('secret-but'));
  });
});

describe('wireguard command errors', () => {
  it('name the command line and its stderr, with a stable code', async () => {
    await assert.rejects(must('NODAL_ERR_WG_SETUP', 'configuring nodal-wg0', 'sh', ['-c', 'echo "Unable to modify interface: Protocol not supported" >&2; exit 1']),
      (e: WireGuardError) => {
        assert.equal(e.code, 'NODAL_ERR_WG_SETUP');
        assert.match(e.message, /^configuring nodal-wg0: `sh -c .*` failed: Unable to modify interface: Protocol not supported$/);
        assert.equal(e.stderr, 'Unable to modify interface: Protocol not supported');
        assert.match(e.command ?? '', /^sh -c/);
        return true;
      });
  });

  it('say what to install when a tool is missing', async () => {
    await assert.rejects(must('NODAL_ERR_WG_SETUP', 'reading peers', '/nonexistent/nodal-no-such-tool', []), (e: WireGuardError) =>
      e.code === 'NODAL_ERR_WG_TOOLS_MISSING' && /nodal-no-such-tool is not installed/.test(e.message));
  });

  it('runCommand returns stdout on success', async () => {
    assert.equal((await runCommand('sh', ['-c', 'echo ok'])).stdout, 'ok\n');
  });
});
