/**
 * The demo of `npm start` on ephemeral ports, opened in headless Chromium
 * and waited for until the editor has loaded the palette and the flows: the
 * start of every browser test. Without Chromium a local run skips, and a CI
 * run (CI=true) fails: the editor must be tested there.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import type * as Start from '../../scripts/start.mjs';

export const ROOT = join(__dirname, '..', '..');
export const CHROMIUM = '/usr/bin/chromium';
export const ARTIFACTS = join(ROOT, 'test-artifacts', 'e2e');

declare const RED: any; // eslint-disable-line @typescript-eslint/no-explicit-any
declare const document: any; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface EditorSession {
  demo: Start.Demo;
  context: BrowserContext;
  page: Page;
  userDir: string;
  close(): Promise<void>;
}

/**
 * Start the demo and open its editor. `label` names the temp directories and
 * the Node-RED log in ARTIFACTS; uncaught page errors go to `pageErrors`,
 * console errors to `consoleErrors` when given. Call from a mocha `before`.
 */
export async function openDemoEditor(
  hook: Mocha.Context,
  label: string,
  pageErrors: string[],
  consoleErrors?: string[],
  /** More options of startDemo, e.g. { protocol: 'current' } for an emulator with Contact Vouchers. */
  demoOptions: Start.StartOptions = {},
): Promise<EditorSession> {
  if (!existsSync(CHROMIUM)) {
    if (process.env.CI === 'true') {
      throw new Error(`${CHROMIUM} is absent, so the editor cannot be tested (CI=true: this fails instead of skipping; apt-get install chromium)`);
    }
    console.log(`      skipped: ${CHROMIUM} is absent (apt-get install chromium; .ci/run installs it)`);
    hook.skip();
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  const start = (await import(join(ROOT, 'scripts', 'start.mjs'))) as typeof Start;
  const userDir = mkdtempSync(join(tmpdir(), `kp-e2e-${label}-user-`));
  const demo = await start.startDemo({
    port: 0, emulatorListen: '127.0.0.1:0', userDir, resetFlows: true,
    stdio: join(ARTIFACTS, `node-red-${label}.log`), log: () => {}, emulatorLog: () => {},
    ...demoOptions,
  });
  const profileDir = mkdtempSync(join(tmpdir(), `kp-e2e-${label}-chromium-`));
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1600, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => pageErrors.push(`${e.name}: ${e.message}`));
  if (consoleErrors) page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  await page.goto(demo.editorUrl);
  // The editor is ready when the palette holds our nodes and the flows are loaded.
  await page.waitForFunction(() => typeof RED !== 'undefined' && RED.nodes && RED.nodes.getType && RED.workspaces.count() > 0
    && document.querySelector('.red-ui-palette-node') !== null, null, { timeout: 60_000 });
  return {
    demo,
    context,
    page,
    userDir,
    close: async () => {
      await context.close().catch(() => {});
      await demo.stop();
      for (const d of [profileDir, userDir]) rmSync(d, { recursive: true, force: true });
    },
  };
}
