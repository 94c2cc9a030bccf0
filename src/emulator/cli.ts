#!/usr/bin/env node
/**
 * katzenpost-emulator: run the kpclientd emulator from the command line,
 * with fault commands on stdin and SIGHUP = restart.
 */
import { createInterface } from 'node:readline';
import { PROTOCOL_LEVELS, type ProtocolLevel } from './current';
import { startEmulator, type Emulator, type EmulatorOptions } from './server';
import { LATENCY_MODES, type LatencyMode } from './timing';

const HELP = `Usage: katzenpost-emulator [options]

A SIMULATOR of the Katzenpost client daemon (kpclientd) and the mixnet
behind it, for tests and demos. It speaks the real thin-client protocol but
provides NO anonymity and runs NO real mixnet: every message and box stays
in this process's memory. Never use it for anything that needs privacy.

Options:
  --listen ADDR          TCP address to listen on (default 127.0.0.1:64331; port 0 = any free port)
  --unix PATH            listen on a Unix socket instead (PATH, or @name for an abstract socket)
  --ws ADDR              also listen for WebSocket clients, as kpclientd v0.0.99 [Listen.Ws]
                         (ws://127.0.0.1:64332; port 0 = any free port)
  --protocol LEVEL       pinned | current (default pinned: kpclientd v0.0.76; current = v0.0.99:
                         25-key replies, directory authorities, Contact Vouchers, the v0.0.99
                         PKI document and geometry, 10-minute grace period, unknown requests dropped)
  --latency MODE         instant | fast | realistic (default fast: a few milliseconds)
  --realistic            same as --latency realistic (mixnet-like round trips, 5 s copy polls)
  --instant              same as --latency instant (no delays at all)
  --epoch-period SECONDS mixnet epoch length; a new PKI document is broadcast each epoch (default 1200)
  --couriers N           service nodes, each offering courier, echo and testdest (default 3, at least 2)
  --replicas N           storage replicas in the PKI document (default 5)
  --grace-period SECONDS how long a disconnected client's session can be resumed
                         (default 1800; 600 with --protocol current)
  --max-send-queue BYTES drop a client whose unread replies exceed this (default 67108864)
  --frame-timeout SECONDS
                         close a client whose request frame is still incomplete this long
                         after its first byte (default 60)
  --max-buffered BYTES   cap on the memory of all clients together: unread replies plus
                         partial request frames (at their declared length); past it the
                         client holding the most is dropped (default 268435456)
  --offline              start with the mixnet unreachable (connection status is_connected=false)
  --courier-patience SECONDS
                         how long the courier keeps trying to read a temp-stream box that is not
                         written yet before it fails the copy (default 91, as the real courier,
                         in every latency mode; shorten it only to test that failure)
  --courier-cache SECONDS
                         how long the courier answers a re-sent read from its cache: a default
                         read whose box is written after 5 re-dispatches stalls until then
                         (default 300, as the real courier, with --realistic; else 0: a read
                         completes as soon as its box is written)
  --no-pki               start without a PKI document, as a daemon that has not fetched one yet:
                         handshakes carry a null document and requests that need one fail
                         (error 4) until the "pki" command publishes it
  --pki-delay SECONDS    a delayed first PKI document: it arrives SECONDS after start, and until
                         then each new connection's handshake waits for it (at most 30 s, then a
                         null document), as a current kpclientd does
  --verbose, -v          log every connection and request (capabilities are never logged)
  --help, -h             show this help and exit

Commands on standard input (one per line):
  restart                restart the daemon: drop connections, new instance token, keep stored boxes
  restart --fresh        restart and forget every stored box and copy verdict
  offline | online       mixnet connectivity off / on (broadcasts connection_status_event)
  malformed              send an undecodable frame to every connected client
  oversize               send an over-size (> 40 MiB) length prefix to every client, then close
  stall MS               hold every outgoing frame for MS milliseconds
  epoch                  advance to the next epoch now (broadcasts a new PKI document)
  no-pki                 forget the PKI document: handshakes carry a null document, requests that
                         need one fail, until "pki"
  pki-delay SECONDS      forget the PKI document and get it back SECONDS from now; new handshakes
                         wait for it meanwhile (at most 30 s)
  pki                    publish the PKI document now (to every client; held handshakes complete)
  status                 print the address, instance token, epoch, connectivity and connections
  shutdown               send shutdown_event to every client and exit
  help                   list these commands

Signals: SIGHUP = restart (state kept); SIGINT / SIGTERM = graceful shutdown.
`;

const COMMANDS = `commands: restart [--fresh] | offline | online | malformed | oversize | stall MS | epoch | no-pki | pki-delay SECONDS | pki | status | shutdown | help`;

interface Parsed {
  options: EmulatorOptions;
  verbose: boolean;
  help: boolean;
}

function fail(message: string): never {
  process.stderr.write(`katzenpost-emulator: ${message}\nTry --help.\n`);
  process.exit(2);
}

function positiveNumber(flag: string, v: string | undefined): number {
  const n = Number(v);
  if (v === undefined || !Number.isFinite(n) || n <= 0) fail(`${flag} needs a positive number`);
  return n;
}

function nonNegativeNumber(flag: string, v: string | undefined): number {
  const n = Number(v);
  if (v === undefined || v === '' || !Number.isFinite(n) || n < 0) fail(`${flag} needs a non-negative number`);
  return n;
}

function positiveInteger(flag: string, v: string | undefined): number {
  const n = Number(v);
  if (v === undefined || !Number.isInteger(n) || n <= 0) fail(`${flag} needs a positive integer`);
  return n;
}

function integer(flag: string, v: string | undefined): number {
  const n = Number(v);
  if (v === undefined || !Number.isInteger(n) || n < 0) fail(`${flag} needs a non-negative integer`);
  return n;
}

export function parseArgs(argv: string[]): Parsed {
  const options: EmulatorOptions = {};
  let verbose = false;
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value: string | undefined;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const take = () => value ?? argv[++i];
    switch (arg) {
      case '--help':
      case '-h':
        help = true;
        break;
      case '--listen':
        options.listen = take() ?? fail('--listen needs an address');
        break;
      case '--unix':
        options.listen = take() ?? fail('--unix needs a path');
        if (!options.listen.startsWith('@') && !options.listen.includes('/')) options.listen = `./${options.listen}`;
        break;
      case '--ws':
        options.wsListen = take() ?? fail('--ws needs an address');
        break;
      case '--protocol': {
        const level = take() as ProtocolLevel;
        if (!PROTOCOL_LEVELS.includes(level)) fail(`--protocol must be one of ${PROTOCOL_LEVELS.join(', ')}`);
        options.protocol = level;
        break;
      }
      case '--latency': {
        const mode = take() as LatencyMode;
        if (!LATENCY_MODES.includes(mode)) fail(`--latency must be one of ${LATENCY_MODES.join(', ')}`);
        options.latency = mode;
        break;
      }
      case '--realistic':
        options.latency = 'realistic';
        break;
      case '--instant':
        options.latency = 'instant';
        break;
      case '--epoch-period':
        options.epochPeriodMs = positiveNumber(arg, take()) * 1000;
        break;
      case '--couriers':
        options.couriers = integer(arg, take());
        break;
      case '--replicas':
        options.replicas = integer(arg, take());
        break;
      case '--grace-period':
        options.sessionGracePeriodMs = positiveNumber(arg, take()) * 1000;
        break;
      case '--max-send-queue':
        options.maxSendQueueBytes = integer(arg, take());
        break;
      case '--frame-timeout':
        options.frameTimeoutMs = positiveNumber(arg, take()) * 1000;
        break;
      case '--max-buffered':
        options.maxBufferedBytes = positiveInteger(arg, take());
        break;
      case '--offline':
        options.online = false;
        break;
      case '--courier-patience':
        options.courierPatienceMs = nonNegativeNumber(arg, take()) * 1000;
        break;
      case '--courier-cache':
        options.courierDedupTtlMs = nonNegativeNumber(arg, take()) * 1000;
        break;
      case '--no-pki':
        options.noPkiDocument = true;
        break;
      case '--pki-delay':
        options.pkiDocumentDelayMs = nonNegativeNumber(arg, take()) * 1000;
        break;
      case '--verbose':
      case '-v':
        verbose = true;
        break;
      default:
        fail(`unknown option ${arg}`);
    }
  }
  return { options, verbose, help };
}

function banner(emu: Emulator): string {
  const line = '='.repeat(76);
  return [
    line,
    ' katzenpost-emulator: a SIMULATOR of kpclientd and the Katzenpost mixnet',
    ' It provides NO anonymity and runs NO real mixnet. Everything stays in this',
    ' process. Use it for tests and demos only, never for private messages.',
    line,
    `listening on ${emu.address}${emu.wsAddress ? ` and ${emu.wsAddress}` : ''}  (protocol ${emu.protocol}, latency ${emu.latency}, epoch ${emu.epoch}, mixnet ${emu.isOnline() ? 'online' : 'offline'}${emu.hasPkiDocument() ? '' : ', no PKI document yet'})`,
    `instance token ${emu.instanceToken.toString('hex')}`,
    ...(emu.wsAddress ? [`WebSocket clients: [Dial.Ws] Address = "${emu.wsAddress}"`] : []),
    `clients: dial ${emu.address} (thinclient.toml: [Dial.${emu.address.includes('/') || emu.address.startsWith('@') ? 'Unix' : 'Tcp'}] Address = "${emu.address}")`,
    `type "help" for fault commands; Ctrl-C stops`,
  ].join('\n');
}

async function main(): Promise<void> {
  // A closed stdout (e.g. piped into head) must not take the emulator down.
  process.stdout.on('error', () => {});
  const { options, verbose, help } = parseArgs(process.argv.slice(2));
  if (help) {
    process.stdout.write(HELP);
    return;
  }
  const stamp = () => new Date().toISOString().slice(11, 23);
  if (verbose) options.log = (line) => process.stdout.write(`${stamp()} ${line}\n`);
  let emu: Emulator;
  try {
    emu = await startEmulator(options);
  } catch (e) {
    fail((e as Error).message);
  }
  process.stdout.write(`${banner(emu)}\n`);

  let stopping = false;
  const shutdown = async (why: string) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`${why}: stopping (shutdown_event to ${emu.connectionCount()} client(s))\n`);
    await emu.stop({ graceful: true });
    process.stdout.write('stopped\n');
    process.exit(0);
  };
  const say = (m: string): void => {
    process.stdout.write(`${m}\n`);
  };

  const run = async (line: string): Promise<void> => {
    const [cmd, ...args] = line.trim().split(/\s+/);
    switch (cmd) {
      case '':
        return;
      case 'restart': {
        const fresh = args.includes('--fresh');
        await emu.restart({ keepState: !fresh });
        return say(`restarted (${fresh ? 'fresh state' : 'state kept'}), instance token ${emu.instanceToken.toString('hex')}`);
      }
      case 'offline':
        emu.setOnline(false);
        return say('mixnet offline');
      case 'online':
        emu.setOnline(true);
        return say('mixnet online');
      case 'malformed':
        emu.injectMalformedFrame();
        return say(`malformed frame sent to ${emu.connectionCount()} client(s)`);
      case 'oversize':
        emu.injectOversizeLengthPrefix();
        return say(`oversize length prefix sent to ${emu.connectionCount()} client(s)`);
      case 'stall': {
        const ms = Number(args[0]);
        if (!Number.isFinite(ms) || ms < 0) return say('usage: stall MS');
        emu.stallReplies(ms);
        return say(`stalling replies for ${ms} ms`);
      }
      case 'epoch':
        emu.advanceEpoch();
        return say(`epoch ${emu.epoch}`);
      case 'no-pki':
        emu.withholdPkiDocument();
        return say('PKI document withheld: handshakes carry a null document until "pki"');
      case 'pki-delay': {
        const seconds = Number(args[0]);
        if (args[0] === undefined || !Number.isFinite(seconds) || seconds < 0) return say('usage: pki-delay SECONDS');
        emu.delayPkiDocument(seconds * 1000);
        return say(`PKI document delayed by ${seconds} s; new handshakes wait for it`);
      }
      case 'pki':
        if (emu.hasPkiDocument()) return say(`PKI document already present (epoch ${emu.epoch})`);
        emu.publishPkiDocument();
        return say(`PKI document published (epoch ${emu.epoch})`);
      case 'status':
        return say(
          `address ${emu.address}, instance token ${emu.instanceToken.toString('hex')}, epoch ${emu.epoch}, ` +
            `mixnet ${emu.isOnline() ? 'online' : 'offline'}, PKI document ${emu.hasPkiDocument() ? 'present' : 'absent'}, ${emu.connectionCount()} connection(s)`,
        );
      case 'shutdown':
      case 'quit':
      case 'exit':
        return shutdown('shutdown command');
      case 'help':
        return say(COMMANDS);
      default:
        return say(`unknown command "${cmd}"; ${COMMANDS}`);
    }
  };

  // Commands run one at a time, in order; standard input ending (e.g. under CI) does not stop the emulator.
  let chain = Promise.resolve();
  const rl = createInterface({ input: process.stdin, terminal: false });
  rl.on('line', (line) => {
    chain = chain.then(() => run(line)).catch((e) => say(`error: ${(e as Error).message}`));
  });
  process.on('SIGHUP', () => {
    chain = chain.then(() => run('restart')).catch((e) => say(`error: ${(e as Error).message}`));
  });
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`katzenpost-emulator: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  });
}
