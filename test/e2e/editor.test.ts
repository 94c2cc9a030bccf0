// The Node-RED editor in a real browser (Debian's Chromium driven by
// playwright-core), against Node-RED started exactly as `npm start` starts it
// (scripts/start.mjs: the pack from the working tree, the emulator, the demo
// flows), on ephemeral ports. Screenshots go to test-artifacts/e2e/;
// KATZENPOST_UPDATE_SCREENSHOTS=1 also copies the README's to docs/screenshots/.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { ARTIFACTS, ROOT, clickInjectButton, deploy, openDebugSidebar, showTab, useDemoEditor, waitForDebugText } from './browser';

const SCREENSHOTS = join(ROOT, 'docs', 'screenshots');
const MODULE = '@katzenpost-community/node-red-katzenpost';
// The example the test imports and runs: inject "hello mixnet" -> blocking send to echo -> debug.
const EXAMPLE_GROUP = 'Basics';
const EXAMPLE_TITLE = '01 - Echo ping';
const ECHO_TEXT = 'hello mixnet';

// Browser globals, used only inside page.evaluate callbacks (which run in the page);
// declared here so the tests type-check without the DOM library.
declare const RED: any; // eslint-disable-line @typescript-eslint/no-explicit-any
declare const document: any; // eslint-disable-line @typescript-eslint/no-explicit-any

const declaredTypes = Object.keys((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { 'node-red': { nodes: Record<string, string> } })['node-red'].nodes);

describe('e2e: the Node-RED editor with the pack, in Chromium', function () {
  this.timeout(180_000);
  const consoleErrors: string[] = [];
  const editor = useDemoEditor('e2e', { consoleErrors });
  let page: Page;

  async function shot(name: string, forReadme = false): Promise<void> {
    const file = join(ARTIFACTS, `${name}.png`);
    // Transient notifications ("Successfully deployed") would cover the canvas.
    if (forReadme) {
      await page.evaluate(() => {
        const n = document.getElementById('red-ui-notifications');
        if (n) n.style.visibility = 'hidden';
        // Show the flow from its top-left corner, where the examples start.
        const chart = document.getElementById('red-ui-workspace-chart');
        if (chart) { chart.scrollLeft = 0; chart.scrollTop = 0; }
      });
      await page.waitForTimeout(100);
    }
    await page.screenshot({ path: file });
    if (forReadme) await page.evaluate(() => { const n = document.getElementById('red-ui-notifications'); if (n) n.style.visibility = ''; });
    if (forReadme && process.env.KATZENPOST_UPDATE_SCREENSHOTS === '1') {
      mkdirSync(SCREENSHOTS, { recursive: true });
      copyFileSync(file, join(SCREENSHOTS, `${name}.png`));
    }
  }

  before(function () {
    page = editor.page;
  });

  after(function () {
    if (consoleErrors.length) console.log(`      browser console errors (not failures):\n        ${consoleErrors.slice(0, 10).join('\n        ')}`);
  });

  it('shows every node of the pack: palette nodes in the palette, config nodes registered', async function () {
    const registered = (await page.evaluate((types: string[]) => types.map((t) => {
      const def = RED.nodes.getType(t);
      return { type: t, known: !!def, category: def ? def.category : null, inPalette: document.querySelector(`.red-ui-palette-node[data-palette-type="${t}"]`) !== null };
    }), declaredTypes)) as { type: string; known: boolean; category: string | null; inPalette: boolean }[];
    const missing = registered.filter((r) => !r.known).map((r) => r.type);
    assert.deepEqual(missing, [], `the editor does not know: ${missing.join(', ')} (see ${join(ARTIFACTS, 'node-red.log')})`);
    for (const r of registered) {
      if (r.category === 'config') assert.equal(r.inPalette, false, `${r.type} is a config node and must not be in the palette`);
      else {
        assert.equal(r.category, 'katzenpost', `${r.type} is in category ${r.category}`);
        assert.ok(r.inPalette, `${r.type} is not in the palette`);
      }
    }
    assert.ok(registered.some((r) => r.category === 'config'), 'no config node (katzenpost-daemon) registered');
    // Our category first, so the screenshot shows it.
    await page.locator('.red-ui-palette-node[data-palette-type="katzenpost-send"]').scrollIntoViewIfNeeded();
    await shot('palette');
  });

  it('runs the demo flows deployed by npm start: the echo ping answers in the debug sidebar', async function () {
    await showTab(page, EXAMPLE_TITLE.replace(/^\d+\s*-\s*/, ''));
    await openDebugSidebar(page);
    const inject = await nodeOnActiveTab('inject');
    await clickInjectButton(page, inject);
    await waitForDebugText(page, ECHO_TEXT);
    await shot('demo-echo-ping', true);
  });

  it('runs the Pigeonhole demo: three messages written and read back in order', async function () {
    await showTab(page, 'Write three messages and read them in order');
    await openDebugSidebar(page);
    await page.click('#red-ui-sidebar-debug-clear');
    await clickInjectButton(page, await nodeOnActiveTab('inject'));
    await waitForDebugText(page, '"three"');
    const values = (await page.evaluate(() => [...document.querySelectorAll('.red-ui-debug-content .red-ui-debug-msg .red-ui-debug-msg-type-string')]
      .map((el) => el.textContent))) as string[];
    assert.deepEqual(values, ['"one"', '"two"', '"three"']);
    await shot('demo-pigeonhole', true);
  });

  it('runs the Channels demo: a message sent on the persistent channel is received by the other flow', async function () {
    // npm start gives the demo's owned channel a seed in credentials, so it works at once.
    await showTab(page, 'Two flows talking through a channel');
    await openDebugSidebar(page);
    await page.click('#red-ui-sidebar-debug-clear');
    await clickInjectButton(page, await nodeOnActiveTab('inject'));
    await waitForDebugText(page, '"hello channel"');
    const status = (await page.evaluate(() => [...document.querySelectorAll('.red-ui-flow-node-status-label')].map((el) => el.textContent))) as string[];
    assert.ok(!status.some((t) => /no credentials/i.test(t ?? '')), `channel nodes report: ${status.join(', ')}`);
    await shot('demo-channel', true);
  });

  it('imports an example from the Import menu, edits a node, deploys, and the change takes effect', async function () {
    // menu > Import > Examples > flows > <our module> > Basics > 01 - Echo ping, into a new flow
    await page.click('#red-ui-header-button-sidemenu');
    await page.click('#menu-item-import');
    await page.click('#red-ui-tab-red-ui-clipboard-dialog-import-tab-examples');
    const tree = page.locator('#red-ui-clipboard-dialog-import-tab-examples');
    for (const label of ['flows', MODULE, EXAMPLE_GROUP]) {
      const item = tree.locator('.red-ui-treeList-label', { hasText: label }).first();
      await item.waitFor({ state: 'visible', timeout: 15_000 });
      await item.click();
    }
    await tree.locator('.red-ui-treeList-label', { hasText: EXAMPLE_TITLE }).first().click();
    await page.click('#red-ui-clipboard-dialog-import-opt-new');
    await shot('import-examples', true);
    const before = (await page.evaluate(() => RED.workspaces.count())) as number;
    await page.click('#red-ui-clipboard-dialog-ok');
    // The demo already holds these nodes: Node-RED offers to import a copy.
    const copy = page.locator('.red-ui-notification button', { hasText: /import copy/i });
    try {
      await copy.waitFor({ state: 'visible', timeout: 3000 });
      await copy.click();
    } catch {
      // No conflict: imported as is.
    }
    await page.waitForFunction((n: number) => RED.workspaces.count() === n + 1, before, { timeout: 10_000 });
    // Imported nodes follow the mouse until a click on the canvas drops them.
    const canvas = await page.locator('#red-ui-workspace-chart').boundingBox();
    assert.ok(canvas);
    await page.mouse.move(canvas.x + 120, canvas.y + 80);
    await page.mouse.click(canvas.x + 120, canvas.y + 80);

    // The imported copy reuses the demo's daemon config node (same id, global).
    const send = await nodeOnActiveTab('katzenpost-blocking-send');
    const daemonId = (await page.evaluate((id: string) => RED.nodes.node(id).daemon, send)) as string;
    assert.equal(await page.evaluate((id: string) => RED.nodes.node(id)?.type, daemonId), 'katzenpost-daemon');

    // Open the node's edit dialog (double-click on the canvas) and change fields.
    // Node-RED times its own double click (two clicks more than 0 ms apart), so click twice.
    const body = page.locator(`[id="${send}"] .red-ui-flow-node`);
    await body.click();
    await page.waitForTimeout(120);
    await body.click();
    await page.locator('#node-input-payloadAs').waitFor({ state: 'visible', timeout: 10_000 });
    await page.fill('#node-input-name', 'echo as buffer');
    await page.selectOption('#node-input-payloadAs', 'buffer');
    await shot('edit-dialog', true);
    await page.click('#node-dialog-ok');
    const edited = (await page.evaluate((id: string) => { const n = RED.nodes.node(id); return { name: n.name, payloadAs: n.payloadAs, changed: n.changed }; }, send)) as Record<string, unknown>;
    assert.deepEqual(edited, { name: 'echo as buffer', payloadAs: 'buffer', changed: true });
    // The canvas redraws the node with its new name.
    await page.locator(`[id="${send}"] .red-ui-flow-node-label`, { hasText: 'echo as buffer' }).waitFor({ timeout: 10_000 });

    // Deploy through the Deploy button.
    await deploy(page);

    // Trigger the imported inject node; the edited node now answers with a Buffer.
    await openDebugSidebar(page);
    await page.click('#red-ui-sidebar-debug-clear');
    const inject = await nodeOnActiveTab('inject');
    await clickInjectButton(page, inject);
    // The demo's copy answers with a string; only the edited node answers with a Buffer.
    await waitForDebugText(page, `buffer[${Buffer.byteLength(ECHO_TEXT)}]`);
    await shot('imported-and-edited');
  });

  // ------------------------------------------------------------ helpers

  async function nodeOnActiveTab(type: string): Promise<string> {
    const ids = (await page.evaluate((t: string) => RED.nodes.filterNodes({ z: RED.workspaces.active(), type: t }).map((n: { id: string }) => n.id), type)) as string[];
    assert.equal(ids.length, 1, `expected one ${type} node on the active tab, found ${ids.length}`);
    return ids[0];
  }
});
