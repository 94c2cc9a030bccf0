// Issue #12 in the real editor (Debian's Chromium driven by playwright-core),
// against Node-RED started as `npm start` starts it, on ephemeral ports:
//  - the forms refuse what the runtime refuses, with the runtime's words (item 3);
//  - importing several examples one after the other leaves one daemon config
//    node and asks nothing (item 6), and the imported write -> read example
//    runs as it is (item 1);
//  - a new resend node shows its default timeout like every form, and a read
//    that waits says so in its status (item 1);
//  - an error without a Catch node reads as its sentence in the debug sidebar (item 5);
//  - every palette label fits on one line (item 7).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { ARTIFACTS, ROOT, clickInjectButton, deploy, injectNamed, openDebugSidebar, useDemoEditor, waitForDebugText } from './browser';

const MODULE = '@katzenpost-community/node-red-katzenpost';
const DAEMON_ID = '4b50000000000001';

declare const RED: any; // eslint-disable-line @typescript-eslint/no-explicit-any
declare const document: any; // eslint-disable-line @typescript-eslint/no-explicit-any
declare const $: any; // eslint-disable-line @typescript-eslint/no-explicit-any

// The runtime's wording (the same catalogue the editor's validators read).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const inputs = require(join(ROOT, 'dist', 'nodes', 'lib', 'inputs.js')) as {
  decodeKeyText(t: string, name: string, size: number): Buffer;
  readSeconds(v: unknown, name: string, positive?: boolean): number | undefined;
};
// eslint-disable-next-line @typescript-eslint/no-require-imports
const timeouts = require(join(ROOT, 'dist', 'nodes', 'lib', 'timeouts.js')) as { DEFAULT_TIMEOUT_SECONDS: Record<string, number> };

/** The runtime's error for a value, without the field name it puts in front. */
function runtimeWords(fn: () => unknown, name: string): string {
  try {
    fn();
  } catch (e) {
    const m = (e as Error).message;
    assert.ok(m.startsWith(`${name}: `), m);
    return m.slice(name.length + 2);
  }
  throw new Error('the runtime accepted it');
}

describe('e2e: issue #12 in the editor (forms, imports, statuses)', function () {
  this.timeout(180_000);
  const editor = useDemoEditor('issue12');
  let page: Page;

  before(function () {
    page = editor.page;
  });

  it('3: the channel and daemon forms mark seed zz, write cap abcd, read cap 1234 and handshake -5 red, in the runtime\'s words', async function () {
    const channelId = (await page.evaluate(() => RED.nodes.filterNodes({ type: 'katzenpost-channel' }).map((n: { id: string }) => n.id)[0]
      ?? (() => { let id: string | null = null; RED.nodes.eachConfig((c: { id: string; type: string }) => { if (c.type === 'katzenpost-channel' && !id) id = c.id; }); return id; })())) as string;
    assert.ok(channelId, 'the demo has a channel config node');
    await page.evaluate((id: string) => RED.editor.editConfig('', 'katzenpost-channel', id), channelId);
    await page.locator('#node-config-input-seed').waitFor({ state: 'visible', timeout: 10_000 });
    await page.selectOption('#node-config-input-mode', 'owned');

    const typeInto = async (selector: string, value: string): Promise<{ red: boolean }> => {
      await page.fill(selector, value);
      await page.locator(selector).dispatchEvent('change');
      return { red: (await page.locator(selector).getAttribute('class') ?? '').includes('input-error') };
    };
    assert.deepEqual(await typeInto('#node-config-input-seed', 'zz'), { red: true });
    assert.deepEqual(await typeInto('#node-config-input-writeCap', 'abcd'), { red: true });
    // A valid seed clears the mark.
    assert.deepEqual(await typeInto('#node-config-input-seed', 'ab'.repeat(32)), { red: false });
    assert.deepEqual(await typeInto('#node-config-input-seed', 'zz'), { red: true });

    // The message is the runtime's, word for word (the field's label in front of it).
    const editorSays = (await page.evaluate(() => {
      const def = RED.nodes.getType('katzenpost-channel');
      // The dialog is open with kind "owned" selected: the validators read the form.
      const ctx = { _: def._, mode: 'owned' };
      return {
        seed: def.credentials.seed.validate.call(ctx, 'zz', {}),
        writeCap: def.credentials.writeCap.validate.call(ctx, 'abcd', {}),
      };
    })) as Record<string, string>;
    const runtimeSeed = runtimeWords(() => inputs.decodeKeyText('zz', 'seed', 32), 'seed');
    assert.equal(runtimeSeed, 'expected 32 bytes as hex (64 characters) or base64 (44 characters), got 2 characters');
    assert.equal(editorSays.seed, `Seed: ${runtimeSeed}`);
    assert.equal(editorSays.writeCap, `Write cap: ${runtimeWords(() => inputs.decodeKeyText('abcd', 'w', 168), 'w')}`);

    await page.selectOption('#node-config-input-mode', 'imported');
    assert.deepEqual(await typeInto('#node-config-input-readCap', '1234'), { red: true });
    const readCapSays = (await page.evaluate(() => {
      const def = RED.nodes.getType('katzenpost-channel');
      return def.credentials.readCap.validate.call({ _: def._, mode: 'imported' }, '1234', {});
    })) as string;
    assert.equal(readCapSays, `Read cap: ${runtimeWords(() => inputs.decodeKeyText('1234', 'r', 136), 'r')}`);
    // Hidden owned-mode fields no longer count against an imported channel.
    assert.equal((await page.locator('#node-config-input-seed').getAttribute('class') ?? '').includes('input-error'), false);
    await page.screenshot({ path: join(ARTIFACTS, 'issue12-channel-form.png') });
    await page.click('#node-config-dialog-cancel');
    await page.locator('#node-config-input-readCap').waitFor({ state: 'detached', timeout: 10_000 });

    // The daemon form: a negative handshake timeout, a port out of range.
    await page.evaluate((id: string) => RED.editor.editConfig('', 'katzenpost-daemon', id), DAEMON_ID);
    await page.locator('#node-config-input-handshakeTimeout').waitFor({ state: 'visible', timeout: 10_000 });
    assert.deepEqual(await typeInto('#node-config-input-handshakeTimeout', '-5'), { red: true });
    assert.deepEqual(await typeInto('#node-config-input-port', '70000'), { red: true });
    const daemonSays = (await page.evaluate(() => {
      const def = RED.nodes.getType('katzenpost-daemon');
      return def.defaults.handshakeTimeout.validate.call({ _: def._, transport: 'tcp' }, '-5', {});
    })) as string;
    assert.equal(daemonSays, `Handshake: ${runtimeWords(() => inputs.readSeconds('-5', 'h', true), 'h')}`);
    assert.deepEqual(await typeInto('#node-config-input-handshakeTimeout', '10'), { red: false });
    await page.click('#node-config-dialog-cancel');
    await page.locator('#node-config-input-handshakeTimeout').waitFor({ state: 'detached', timeout: 10_000 });
  });

  it('6 and 1: importing three examples one after the other leaves one daemon config node, asks nothing, and the write -> read example runs', async function () {
    // Start from an empty workspace (the demo deployed every example with the examples' own ids).
    await page.evaluate(() => {
      const tabs: unknown[] = [];
      RED.nodes.eachWorkspace((ws: unknown) => { tabs.push(ws); });
      for (const ws of tabs) RED.workspaces.delete(ws);
    });
    const examples: [string, string][] = [['Pigeonhole', '01 - Write and read one box'], ['Basics', '01 - Echo ping'], ['Pigeonhole', '02 - Write three messages and read them in order']];
    for (const [group, title] of examples) {
      await importExample(group, title);
      const conflict = page.locator('.red-ui-notification', { hasText: /already exist/i });
      await page.waitForTimeout(1000);
      assert.equal(await conflict.count(), 0, `importing ${group}/${title} asked about nodes that already exist`);
      const daemons = (await page.evaluate(() => {
        const out: string[] = [];
        RED.nodes.eachConfig((c: { id: string; type: string }) => { if (c.type === 'katzenpost-daemon') out.push(c.id); });
        return out;
      })) as string[];
      assert.deepEqual(daemons, [DAEMON_ID], `after ${group}/${title}`);
    }
    // Every imported node uses that daemon node, which still points at the demo's daemon (the user's settings win).
    const users = (await page.evaluate((id: string) => RED.nodes.filterNodes({}).filter((n: { daemon?: string }) => n.daemon !== undefined)
      .every((n: { daemon?: string }) => n.daemon === id), DAEMON_ID)) as boolean;
    assert.ok(users);
    await page.screenshot({ path: join(ARTIFACTS, 'issue12-imported.png') });

    // Deploy and run the write -> read example exactly as imported.
    await deploy(page);
    await showTabOf('katzenpost-new-keypair', 'Hello, Pigeonhole!');
    await openDebugSidebar(page);
    await page.click('#red-ui-sidebar-debug-clear');
    await clickInjectButton(page, await injectNamed(page, 'Hello, Pigeonhole!'));
    await waitForDebugText(page, 'Hello, Pigeonhole!');
  });

  it('1: a new resend node shows its 120 s default like every form, advance off, and a waiting read says so in its status', async function () {
    const def = (await page.evaluate(() => {
      const d = RED.nodes.getType('katzenpost-resend');
      return { advance: d.defaults.advance.value, timeout: d.defaults.timeout.value };
    })) as { advance: boolean; timeout: string };
    assert.deepEqual(def, { advance: false, timeout: '' });
    // A flow as the palette makes it: inject -> new keypair -> encrypt read -> resend (nobody writes the box).
    const tab = (await page.evaluate(() => RED.workspaces.add(null).id)) as string;
    await page.evaluate(({ z, daemon }: { z: string; daemon: string }) => {
      const nodes = [
        { id: 'e12a000000000001', type: 'inject', z, x: 120, y: 80, props: [{ p: 'payload' }], payload: '', payloadType: 'date', wires: [['e12a000000000002']] },
        { id: 'e12a000000000002', type: 'katzenpost-new-keypair', z, x: 300, y: 80, daemon, wires: [['e12a000000000003']] },
        { id: 'e12a000000000003', type: 'katzenpost-encrypt-read', z, x: 480, y: 80, daemon, wires: [['e12a000000000004']] },
        { id: 'e12a000000000004', type: 'katzenpost-resend', z, x: 660, y: 80, daemon, wires: [[], []] },
      ];
      RED.view.importNodes(nodes, { generateIds: false, addFlow: false, applyNodeDefaults: true, touchImport: true });
    }, { z: tab, daemon: DAEMON_ID });
    // Its form shows the default as the placeholder, as the encrypt read form shows its own.
    for (const [id, type] of [['e12a000000000004', 'katzenpost-resend'], ['e12a000000000003', 'katzenpost-encrypt-read']]) {
      await page.evaluate((nid: string) => RED.editor.edit(RED.nodes.node(nid)), id);
      await page.locator('#node-input-timeout').waitFor({ state: 'visible', timeout: 10_000 });
      assert.equal(await page.getAttribute('#node-input-timeout', 'placeholder'), String(timeouts.DEFAULT_TIMEOUT_SECONDS[type]));
      if (type === 'katzenpost-resend') assert.equal(await page.isChecked('#node-input-advance'), false);
      await page.click('#node-dialog-cancel');
      await page.locator('#node-input-timeout').waitFor({ state: 'detached', timeout: 10_000 });
    }
    await deploy(page);
    await page.evaluate((id: string) => RED.workspaces.show(id), tab);
    await clickInjectButton(page, 'e12a000000000001');
    const status = page.locator('[id="e12a000000000004"] .red-ui-flow-node-status-label', { hasText: /^waiting for box [0-9a-f]{6}, \d+ s$/ });
    await status.waitFor({ state: 'visible', timeout: 20_000 });
    await page.locator('[id="e12a000000000004"] .red-ui-flow-node-status-label', { hasText: /^waiting for box [0-9a-f]{6}, ([3-9]|\d\d) s$/ })
      .waitFor({ state: 'visible', timeout: 20_000 });
    await page.screenshot({ path: join(ARTIFACTS, 'issue12-waiting.png') });
  });

  it('5: an error without a Catch node shows in the debug sidebar as its sentence', async function () {
    await openDebugSidebar(page);
    await page.click('#red-ui-sidebar-debug-clear');
    // An encrypt read with no read cap: msg.readCap is missing.
    const tab = (await page.evaluate(() => RED.workspaces.add(null).id)) as string;
    await page.evaluate(({ z, daemon }: { z: string; daemon: string }) => {
      RED.view.importNodes([
        { id: 'e12b000000000001', type: 'inject', z, x: 120, y: 80, props: [{ p: 'payload' }], payload: '', payloadType: 'date', wires: [['e12b000000000002']] },
        { id: 'e12b000000000002', type: 'katzenpost-encrypt-read', z, x: 320, y: 80, daemon, wires: [[]] },
      ], { generateIds: false, addFlow: false, applyNodeDefaults: true, touchImport: true });
    }, { z: tab, daemon: DAEMON_ID });
    await deploy(page);
    await page.evaluate((id: string) => RED.workspaces.show(id), tab);
    await clickInjectButton(page, 'e12b000000000001');
    const sentence = 'msg.readCap: expected a Buffer of 136 bytes, got undefined (missing)';
    await page.locator('.red-ui-debug-content .red-ui-debug-msg .red-ui-debug-msg-type-string', { hasText: sentence }).first()
      .waitFor({ state: 'visible', timeout: 15_000 });
    const shown = (await page.locator('.red-ui-debug-content .red-ui-debug-msg').last().textContent()) ?? '';
    assert.ok(!shown.includes('__enc__'), shown);
  });

  it('7: every palette label fits on one line', async function () {
    await page.locator('.red-ui-palette-node[data-palette-type="katzenpost-channel-receive"]').scrollIntoViewIfNeeded();
    const tall = (await page.evaluate(() => [...document.querySelectorAll('.red-ui-palette-node[data-palette-type^="katzenpost-"]')].map((el: any) => {
      const label = el.querySelector('.red-ui-palette-label');
      return { type: el.getAttribute('data-palette-type'), text: String(label?.textContent ?? '').replace(/\s+/g, ' ').trim(), height: el.getBoundingClientRect().height };
    }))) as { type: string; text: string; height: number }[];
    assert.ok(tall.length >= 10);
    const single = Math.min(...tall.map((t) => t.height));
    const wrapped = tall.filter((t) => t.height > single + 2);
    assert.deepEqual(wrapped, [], `labels on two lines: ${wrapped.map((w) => w.text).join(', ')}`);
    assert.ok(tall.some((t) => t.type === 'katzenpost-channel-receive' && t.text === 'ch receive'), JSON.stringify(tall));
  });

  // ------------------------------------------------------------ helpers
  async function importExample(group: string, title: string): Promise<void> {
    await page.click('#red-ui-header-button-sidemenu');
    await page.click('#menu-item-import');
    await page.click('#red-ui-tab-red-ui-clipboard-dialog-import-tab-examples');
    const tree = page.locator('#red-ui-clipboard-dialog-import-tab-examples');
    // A branch opened by an earlier import may still be open: click a label only when its child is not shown yet.
    const path = ['flows', MODULE, group, title];
    for (let i = 0; i < path.length - 1; i++) {
      const item = tree.locator('.red-ui-treeList-label', { hasText: path[i] }).first();
      await item.waitFor({ state: 'visible', timeout: 15_000 });
      const child = tree.locator('.red-ui-treeList-label', { hasText: path[i + 1] }).first();
      if (!(await child.isVisible().catch(() => false))) await item.click();
      await child.waitFor({ state: 'visible', timeout: 15_000 });
    }
    await tree.locator('.red-ui-treeList-label', { hasText: title }).first().click();
    await page.click('#red-ui-clipboard-dialog-import-opt-new');
    const before = (await page.evaluate(() => RED.workspaces.count())) as number;
    await page.click('#red-ui-clipboard-dialog-ok');
    await page.waitForFunction((n: number) => RED.workspaces.count() === n + 1, before, { timeout: 10_000 });
    // Imported nodes follow the mouse until a click drops them.
    const canvas = await page.locator('#red-ui-workspace-chart').boundingBox();
    assert.ok(canvas);
    await page.mouse.move(canvas.x + 120, canvas.y + 80);
    await page.mouse.click(canvas.x + 120, canvas.y + 80);
  }

  async function showTabOf(type: string, injectName: string): Promise<void> {
    const z = (await page.evaluate(({ t, name }: { t: string; name: string }) => {
      const inj = RED.nodes.filterNodes({ type: 'inject' }).find((n: { name: string }) => n.name === name);
      return inj ? inj.z : RED.nodes.filterNodes({ type: t })[0]?.z;
    }, { t: type, name: injectName })) as string;
    await page.evaluate((id: string) => RED.workspaces.show(id), z);
  }
});
