// Shared set-up for the channel tests: an emulator on an ephemeral port (in
// this process, or in a child process of its own), connected thin clients,
// temp directories, and cleanup in reverse order.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { ThinClient } from '../../src/client/client';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator';
import { ChannelStore, type ChannelItem, type ChannelStoreOptions } from '../../src/channels';

/** Per-test timeout: generous when KP_CHANNEL_LATENCY=realistic (seconds per mixnet round trip). */
export const TEST_TIMEOUT_MS = process.env.KP_CHANNEL_LATENCY === 'realistic' ? 300_000 : 30_000;

const EMULATOR_CLI = resolve(__dirname, '..', '..', 'src', 'emulator', 'cli.ts');

export class Harness {
  private readonly cleanups: (() => Promise<void> | void)[] = [];
  emulator!: Emulator;
  /** Where client() dials: the emulator of start() or of startProcess(). */
  private address = '';

  async start(options: EmulatorOptions = {}): Promise<Emulator> {
    // KP_CHANNEL_LATENCY=fast runs the same tests with mixnet-like jitter in every reply.
    const latency = (process.env.KP_CHANNEL_LATENCY as EmulatorOptions['latency']) ?? 'instant';
    this.emulator = await startEmulator({ listen: '127.0.0.1:0', latency, ...options });
    this.address = this.emulator.address;
    this.cleanups.push(() => this.emulator.stop({ graceful: false }));
    return this.emulator;
  }

  /**
   * Starts the katzenpost-emulator command in a child process (so its replies
   * reach the store over a real socket from another event loop) and returns
   * its address; client() then dials it. `args` are extra CLI options.
   */
  async startProcess(args: string[] = []): Promise<string> {
    const latency = process.env.KP_CHANNEL_LATENCY ?? 'instant';
    const proc = spawn(process.execPath, ['--import', 'tsx', EMULATOR_CLI, '--listen', '127.0.0.1:0', '--latency', latency, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    this.cleanups.push(async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    });
    let output = '';
    this.address = await new Promise<string>((resolveAddress, reject) => {
      const timer = setTimeout(() => reject(new Error(`the emulator process did not start within 20 s:\n${output}`)), 20_000);
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        const m = /^listening on (\S+)/m.exec(output);
        if (m) {
          clearTimeout(timer);
          proc.stdout.off('data', onData);
          resolveAddress(m[1]);
        }
      };
      proc.stdout.on('data', onData);
      proc.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      proc.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the emulator process exited (${signal ?? code}) before listening:\n${output}`));
      });
    });
    // Keep draining its output so a full pipe never blocks it.
    proc.stdout.resume();
    return this.address;
  }

  tempDir(): string {
    const dir = mkdtempSync(join(tmpdir(), 'kp-channels-'));
    this.cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    return dir;
  }

  async client(): Promise<ThinClient> {
    const client = new ThinClient({ dial: this.address, reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 200 });
    this.cleanups.push(() => client.close().catch(() => {}));
    await client.connect();
    return client;
  }

  store(client: ThinClient | null, options: Partial<ChannelStoreOptions> = {}, path?: string): ChannelStore {
    const store = new ChannelStore({
      path: path ?? join(this.tempDir(), 'channels.db'),
      client,
      pollInitialMs: 10,
      pollMaxMs: 50,
      retryInitialMs: 50,
      retryMaxMs: 200,
      ...options,
    });
    this.cleanups.push(() => store.close());
    return store;
  }

  async cleanup(): Promise<void> {
    for (const fn of this.cleanups.reverse()) {
      try {
        await fn();
      } catch {
        // cleanup continues
      }
    }
    this.cleanups.length = 0;
  }
}

/** Collects `n` items from a channel with the callback API, then stops the receiver. */
export async function collect(store: ChannelStore, name: string, n: number, timeoutMs = TEST_TIMEOUT_MS - 10_000): Promise<ChannelItem[]> {
  const items: ChannelItem[] = [];
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    await store.receive(
      name,
      (item) => {
        items.push(item);
        if (items.length >= n) controller.abort();
      },
      { signal: controller.signal },
    );
  } finally {
    clearTimeout(timer);
  }
  if (items.length < n) throw new Error(`expected ${n} items from "${name}", got ${items.length} before the timeout`);
  return items;
}

export function texts(items: ChannelItem[]): string[] {
  return items.map((i) => (i.kind === 'message' ? i.payload.toString() : `<${i.kind}>`));
}

/** Creates the channel database file `path` as schema version 2 left it (fixtures/schema-v2.sql), open. */
export function versionTwoDatabase(path: string): Database.Database {
  const db = new Database(path);
  db.exec(readFileSync(join(__dirname, 'fixtures', 'schema-v2.sql'), 'utf8'));
  return db;
}
