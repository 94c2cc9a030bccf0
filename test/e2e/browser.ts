/**
 * The demo of `npm start` on ephemeral ports, opened in headless Chromium
 * and waited for until the editor has loaded the palette and the flows: the
 * start of every browser test (useDemoEditor wires it into a suite), and the
 * editor steps the tests share (deploy, show a tab, press an inject button,
 * read the debug sidebar). Without Chromium a local run skips, and a CI run
 * (CI=true) fails: the editor must be tested there.
 */
import assert from 'node:assert/strict';
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

/**
 * The demo editor for one mocha suite: opened in `before`, closed in `after`;
 * after each test, a screenshot when it failed and a failure for any
 * uncaught exception in the page. Read `page` and `session` from `before` on.
 */
export function useDemoEditor(label: string, options: { consoleErrors?: string[]; demoOptions?: Start.StartOptions } = {}): { readonly page: Page; readonly session: EditorSession } {
  let session: EditorSession | null = null;
  const pageErrors: string[] = [];
  before(async function () {
    session = await openDemoEditor(this, label, pageErrors, options.consoleErrors, options.demoOptions);
  });
  after(async function () {
    await session?.close();
  });
  afterEach(async function () {
    const errors = pageErrors.splice(0);
    if (this.currentTest?.state === 'failed' && session) {
      await session.page.screenshot({ path: join(ARTIFACTS, `${label}-failure-${Date.now()}.png`) }).catch(() => {});
    }
    assert.deepEqual(errors, [], `page errors in the editor:\n${errors.join('\n')}`);
  });
  return {
    get session() {
      assert.ok(session, 'the demo editor is not open yet (read it from a hook or a test)');
      return session;
    },
    get page() {
      return this.session.page;
    },
  };
}

/** Deploy, and fail if the editor asks for confirmation (invalid or unknown nodes). */
export async function deploy(page: Page): Promise<void> {
  await page.click('#red-ui-header-button-deploy');
  const confirm = page.locator('.ui-dialog:visible').locator('button', { hasText: /confirm deploy/i });
  if (await confirm.isVisible().catch(() => false)) {
    const text = await page.locator('.ui-dialog:visible').first().textContent();
    assert.fail(`deploy asked for confirmation (invalid or unknown nodes?): ${text}`);
  }
  await page.waitForFunction(() => RED.nodes.dirty() === false, null, { timeout: 20_000 });
}

/** Show the flow tab with this label. */
export async function showTab(page: Page, label: string): Promise<void> {
  const tab = (await page.evaluate((title: string) => {
    let id: string | null = null;
    RED.nodes.eachWorkspace((ws: { id: string; label: string }) => { if (ws.label === title) id = ws.id; });
    return id;
  }, label)) as string | null;
  assert.ok(tab, `the tab "${label}" is not deployed`);
  await page.evaluate((id: string) => RED.workspaces.show(id), tab);
}

/** The id of the inject node with this name; fails when there is none. */
export async function injectNamed(page: Page, name: string): Promise<string> {
  const id = (await page.evaluate((n: string) => RED.nodes.filterNodes({ type: 'inject' }).find((x: { name: string }) => x.name === n)?.id, name)) as string | undefined;
  assert.ok(id, `no inject node "${name}"`);
  return id;
}

/** Press the button of an inject node on the shown tab. */
export async function clickInjectButton(page: Page, id: string): Promise<void> {
  const button = page.locator(`[id="${id}"] .red-ui-flow-node-button-button`);
  await button.scrollIntoViewIfNeeded();
  await button.click();
}

export async function openDebugSidebar(page: Page): Promise<void> {
  await page.evaluate(() => RED.sidebar.show('debug'));
  await page.locator('#red-ui-sidebar-debug-clear').waitFor({ state: 'visible', timeout: 10_000 });
}

/** Wait until a debug message containing `text` shows; the error says what the sidebar shows instead. */
export async function waitForDebugText(page: Page, text: string, timeoutMs = 30_000): Promise<void> {
  try {
    await page.locator('.red-ui-debug-content .red-ui-debug-msg', { hasText: text }).first().waitFor({ state: 'visible', timeout: timeoutMs });
  } catch (e) {
    const shown = await page.locator('.red-ui-debug-content').textContent().catch(() => '');
    throw new Error(`the debug sidebar never showed "${text}"; it shows: ${shown?.slice(0, 500)}; Node-RED logs: ${ARTIFACTS}/node-red-*.log`, { cause: e });
  }
}
