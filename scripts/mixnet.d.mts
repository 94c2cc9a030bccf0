// Types of scripts/mixnet.mjs for the TypeScript tests that drive it.
export const ROOT: string;
export const KATZENPOST_VERSION: string;
export const BIN_DIR: string;
export const STATE_DIR: string;
export const NET_DIR: string;
export const THINCLIENT_TOML: string;
export const DEFAULT_BASE_PORT: number;
export const DEFAULT_CLIENT_PORT: number;

export interface MixnetOptions {
  command: 'install' | 'start' | 'stop' | 'status' | 'logs' | null;
  basePort: number;
  timeoutS: number;
  foreground: boolean;
  help: boolean;
}
export function parseArgs(argv: string[]): MixnetOptions;
export function refusedModules(goOutput: string): string[];
export function localizeConfig(toml: string, clientPort: number): string;
export function install(): void;
export function start(o: MixnetOptions): Promise<void>;
export function stop(): Promise<void>;
export function status(): boolean;
export function readPids(): { version: string; clientPort: number; startedAt: string; processes: Record<string, number> } | null;
export function startProcess(name: string): number;
export function stopProcess(name: string, options?: { signal?: NodeJS.Signals; graceMs?: number }): Promise<boolean>;
export function waitReady(clientPort: number, timeoutS: number, options?: { onProgress?: (line: string) => void }): Promise<void>;
export function logFiles(): string[];
export function printLogTails(lines?: number): void;
