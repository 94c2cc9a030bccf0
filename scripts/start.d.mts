// Types of scripts/start.mjs for the TypeScript tests that drive it.
import type { ChildProcess } from 'node:child_process';

export const ROOT: string;
export const DEFAULT_EMULATOR_LISTEN: string;
export const DEFAULT_EDITOR_PORT: number;
/** The thin-client address of the running `npm run mixnet` network; throws when none runs. */
export function mixnetDaemonAddress(stateDir?: string): string;

export type DaemonTarget =
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string }
  | { kind: 'config'; path: string };

export interface StartOptions {
  port?: number;
  host?: string;
  daemon?: string | null;
  emulator?: boolean;
  emulatorListen?: string;
  realistic?: boolean;
  /** The protocol the emulator speaks: 'pinned' (kpclientd v0.0.76, default) or 'current' (v0.0.99, Contact Vouchers). */
  protocol?: 'pinned' | 'current';
  userDir?: string;
  resetFlows?: boolean;
  /** Print the emulator's log (one line per request). */
  verbose?: boolean;
  /** 'inherit' (default) or a file path for Node-RED's log. */
  stdio?: string;
  log?: (line: string) => void;
  emulatorLog?: (line: string) => void;
  startTimeoutMs?: number;
}

export interface EmulatorHandle {
  readonly address: string;
  stop(options?: { graceful?: boolean }): Promise<void>;
  [k: string]: unknown;
}

export interface Demo {
  editorUrl: string;
  port: number;
  daemon: DaemonTarget;
  emulator: EmulatorHandle | null;
  nodeRed: { child: ChildProcess; version: string; dir: string };
  prepared: { settingsFile: string; flowsFile: string; seeded: boolean; exampleCount: number; daemonIds: string[] };
  userDir: string;
  stop(): Promise<void>;
}

export interface FlowNode { id: string; type: string; z?: string; [k: string]: unknown }

export function parseArgs(argv: string[]): Required<Omit<StartOptions, 'log' | 'emulatorLog' | 'stdio' | 'startTimeoutMs'>> & { help: boolean };
export function parseDaemonAddress(address: string): DaemonTarget;
export function describeTarget(t: DaemonTarget): string;
export function pointDaemonNode<T extends Record<string, unknown>>(node: T, target: DaemonTarget): T;
export function buildDemoFlows(options?: { examplesDir?: string; target?: DaemonTarget }): { flows: FlowNode[]; daemonIds: string[]; exampleCount: number };
export function prepareUserDir(options: { userDir: string; port: number; host?: string; target?: DaemonTarget; resetFlows?: boolean; log?: (l: string) => void }): Demo['prepared'];
export function nodeRedDir(): string;
export function freePort(host?: string): Promise<number>;
export function portIsFree(port: number, host?: string): Promise<boolean>;
export function startDemo(options?: StartOptions): Promise<Demo>;
