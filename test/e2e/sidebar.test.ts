// The Katzenpost sidebar tab in a real browser (Debian's Chromium driven by
// playwright-core), against Node-RED started exactly as `npm start` starts it
// (scripts/start.mjs: the pack from the working tree, the emulator, the demo
// flows), on ephemeral ports. Screenshots go to test-artifacts/e2e/;
// KATZENPOST_UPDATE_SCREENSHOTS=1 also copies the README's to docs/screenshots/.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { ThinClient } from '../../src/client/client';
import type * as Start from '../../scripts/start.mjs';
import { ARTIFACTS, ROOT, showTab, useDemoEditor } from './browser';

const SCREENSHOTS = join(ROOT, 'docs', 'screenshots');
const CHANNEL_TAB = 'Two flows talking through a channel';
const CHANNEL_TEXT = 'hello channel';

// Browser globals, used only inside page.evaluate callbacks (which run in the page).
declare const RED: any; // eslint-disable-line @typescript-eslint/no-explicit-any
declare const document: any; // eslint-disable-line @typescript-eslint/no-explicit-any
declare const window: any; // eslint-disable-line @typescript-eslint/no-explicit-any
declare const $: any; // eslint-disable-line @typescript-eslint/no-explicit-any

interface ApiChannel { id: string; name: string; kind: string; firstIndex: string; writeIndex: string | null; readIndex: string; sent: number; received: number; queued: number }
interface ApiState {
  daemons: { id: string; state: string; epoch: number; instanceToken: string; pki: { layers: { name: string }[][]; gateways: { name: string }[]; couriers: { name: string }[]; replicas: { name: string }[] } }[];
  channels: ApiChannel[];
}

describe('e2e: the Katzenpost sidebar tab in the Node-RED editor, in Chromium', function () {
  this.timeout(180_000);
  const editor = useDemoEditor('sidebar');
  let demo: Start.Demo | null = null;
  let page: Page;
  let userDir = '';

  async function shot(name: string, forReadme = false): Promise<void> {
    const file = join(ARTIFACTS, `${name}.png`);
    await page.screenshot({ path: file });
    if (forReadme && process.env.KATZENPOST_UPDATE_SCREENSHOTS === '1') {
      mkdirSync(SCREENSHOTS, { recursive: true });
      copyFileSync(file, join(SCREENSHOTS, `${name}.png`));
    }
  }

  /** The sidebar's data as the editor gets it (the same admin endpoint, with the editor's session). */
  async function api(): Promise<ApiState> {
    return (await page.evaluate(() => new Promise((resolve, reject) => {
      $.ajax({ url: 'katzenpost/sidebar', dataType: 'json', cache: false }).done(resolve).fail((x: { status: number }) => reject(new Error(`GET katzenpost/sidebar: ${x.status}`)));
    }))) as ApiState;
  }

  async function demoChannel(): Promise<ApiChannel> {
    const c = (await api()).channels.find((x) => x.name === 'demo');
    assert.ok(c, 'the demo channel is not in the sidebar data');
    return c;
  }

  const card = () => page.locator('.kp-sb-channel', { has: page.locator('.kp-sb-name', { hasText: /^demo$/ }) });

  before(function () {
    ({ demo, page, userDir } = editor.session);
  });

  it('has a Katzenpost tab showing the daemon connected, its instance token, its epoch and the network by layer', async function () {
    await page.evaluate(() => RED.sidebar.show('katzenpost'));
    const daemon = page.locator('.kp-sb-daemon').first();
    await daemon.waitFor({ state: 'visible', timeout: 15_000 });
    await page.locator('.kp-sb-daemon[data-state="connected"]').waitFor({ timeout: 30_000 });
    const state = await api();
    const d = state.daemons[0];
    assert.equal(d.state, 'connected');
    // What the tab shows matches what the runtime and the emulator know.
    assert.equal(await daemon.locator('.kp-sb-state').textContent(), 'connected');
    assert.equal(await daemon.locator('.kp-sb-epoch').textContent(), String(d.epoch));
    assert.equal(d.epoch, (demo!.emulator as unknown as { epoch: number }).epoch);
    assert.equal(await daemon.locator('.kp-sb-token').textContent(), (demo!.emulator as unknown as { instanceToken: Buffer }).instanceToken.toString('hex'));
    assert.equal(await daemon.locator('.kp-sb-address').textContent(), demo!.emulator!.address);
    // The picture: three mix layers by name, then gateways, couriers and replicas.
    const mixRows = daemon.locator('.kp-sb-row[data-role="mix"]');
    assert.equal(await mixRows.count(), 3);
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(await mixRows.nth(i).locator('.kp-sb-node-name').allTextContents(), [`mix${i + 1}`]);
      assert.equal(await mixRows.nth(i).locator('.kp-sb-row-label').textContent(), `Layer ${i + 1}`);
    }
    assert.deepEqual(await daemon.locator('.kp-sb-row[data-role="gateway"] .kp-sb-node-name').allTextContents(), d.pki.gateways.map((g) => g.name));
    assert.deepEqual(await daemon.locator('.kp-sb-box.kp-sb-courier .kp-sb-node-name').allTextContents(), d.pki.couriers.map((c) => c.name));
    assert.ok(d.pki.couriers.length > 0);
    assert.deepEqual(await daemon.locator('.kp-sb-row[data-role="replica"] .kp-sb-node-name').allTextContents(), d.pki.replicas.map((r) => r.name));
    assert.ok(d.pki.replicas.length >= 2);
  });

  it('shows the demo channel with its positions, counts and last activity once a message went through', async function () {
    const before = await demoChannel();
    // Send "hello channel" through the demo's channel and wait until the reader got it.
    await showTab(page, CHANNEL_TAB);
    const inject = (await page.evaluate(() => RED.nodes.filterNodes({ z: RED.workspaces.active(), type: 'inject' })[0].id)) as string;
    await page.locator(`[id="${inject}"] .red-ui-flow-node-button-button`).click();
    await page.evaluate(() => RED.sidebar.show('katzenpost'));
    const c = card();
    await c.waitFor({ state: 'visible', timeout: 15_000 });
    await c.locator('.kp-sb-received .kp-sb-num', { hasText: String(before.received + 1) }).waitFor({ timeout: 30_000 });
    await c.locator('.kp-sb-sent .kp-sb-num', { hasText: String(before.sent + 1) }).waitFor({ timeout: 30_000 });
    const now = await demoChannel();
    assert.equal(now.sent, before.sent + 1);
    assert.equal(now.received, before.received + 1);
    assert.equal(await c.locator('.kp-sb-kind').textContent(), 'owned');
    assert.equal(await c.locator('.kp-sb-queued .kp-sb-num').textContent(), '0');
    assert.equal(await c.locator('.kp-sb-writer .kp-sb-pos').textContent(), `box ${BigInt(now.writeIndex!) - BigInt(now.firstIndex)}`);
    assert.equal(await c.locator('.kp-sb-writer .kp-sb-counter').textContent(), now.writeIndex);
    assert.equal(await c.locator('.kp-sb-reader .kp-sb-pos').textContent(), `box ${BigInt(now.readIndex) - BigInt(now.firstIndex)}`);
    assert.equal(await c.locator('.kp-sb-reader .kp-sb-counter').textContent(), now.readIndex);
    assert.match((await c.locator('.kp-sb-last').textContent()) ?? '', /^(just now|\d+ s ago)$/);
    // No cap anywhere in the tab.
    const seeds = JSON.parse(readFileSync(join(userDir, 'demo-channel-seeds.json'), 'utf8')) as Record<string, string>;
    const text = (await page.locator('.kp-sb').innerHTML()) as string;
    for (const s of Object.values(seeds)) assert.ok(!text.includes(s), 'the tab shows a seed');

    // The picture for the README: the tab wide enough to read, beside the channel demo.
    await page.evaluate(() => { const n = document.getElementById('red-ui-notifications'); if (n) n.style.visibility = 'hidden'; });
    const sep = await page.locator('#red-ui-sidebar-separator').boundingBox();
    if (sep) {
      await page.mouse.move(sep.x + sep.width / 2, sep.y + 200);
      await page.mouse.down();
      await page.mouse.move(sep.x - 200, sep.y + 200, { steps: 5 });
      await page.mouse.up();
    }
    await page.waitForTimeout(300);
    await shot('sidebar', true);
    await page.evaluate(() => { const n = document.getElementById('red-ui-notifications'); if (n) n.style.visibility = ''; });
  });

  it('shares the read cap: a QR code that decodes to the channel\'s read cap, and its text', async function () {
    const c = card();
    await c.locator('.kp-sb-share-button').click();
    const dialog = page.locator('.red-ui-notification .kp-sb-share');
    await dialog.waitFor({ state: 'visible', timeout: 15_000 });
    const shown = await dialog.locator('textarea.kp-sb-readcap').inputValue();
    // The demo's channel is owned: its read cap comes from the seed npm start gave it.
    const seeds = JSON.parse(readFileSync(join(userDir, 'demo-channel-seeds.json'), 'utf8')) as Record<string, string>;
    const client = new ThinClient({ dial: demo!.emulator!.address });
    await client.connect();
    let readCap: Buffer;
    try {
      const seed = seeds[(await demoChannel()).id];
      assert.ok(seed, 'npm start gave the demo channel no seed');
      readCap = (await client.newKeypair(Buffer.from(seed, 'hex'))).readCap;
    } finally {
      await client.close();
    }
    assert.equal(shown, readCap.toString('hex'));
    // The QR code is drawn, and a decoder reads the read cap from its pixels.
    const qr = dialog.locator('svg.kp-sb-qr');
    await qr.waitFor({ state: 'visible' });
    const box = await qr.boundingBox();
    assert.ok(box && box.width >= 200 && box.height >= 200, `the QR code is ${box?.width} x ${box?.height}`);
    await page.addScriptTag({ path: require.resolve('jsqr/dist/jsQR.js') });
    const decoded = (await page.evaluate(() => new Promise((resolve, reject) => {
      const svg = document.querySelector('.red-ui-notification svg.kp-sb-qr');
      const img = new window.Image();
      img.onload = () => {
        const canvas = document.createElement('canvas');
        canvas.width = 400; canvas.height = 400;
        const ctx = canvas.getContext('2d');
        ctx.drawImage(img, 0, 0, 400, 400);
        const data = ctx.getImageData(0, 0, 400, 400);
        const found = window.jsQR(data.data, 400, 400);
        resolve(found ? found.data : null);
      };
      img.onerror = () => reject(new Error('the QR svg does not load as an image'));
      img.src = 'data:image/svg+xml;base64,' + window.btoa(new window.XMLSerializer().serializeToString(svg));
    }))) as string | null;
    assert.equal(decoded, readCap.toString('hex').toUpperCase());
    await shot('sidebar-share');
    await page.locator('.red-ui-notification button.kp-sb-share-close').click();
    await dialog.waitFor({ state: 'detached', timeout: 5_000 });
    assert.equal(await page.locator('textarea.kp-sb-readcap').count(), 0, 'the read cap stays in the page after closing');
  });

  it('rewinds the reader only after confirmation, and the message is delivered again', async function () {
    await page.evaluate(() => RED.sidebar.show('debug'));
    await page.click('#red-ui-sidebar-debug-clear');
    await page.evaluate(() => RED.sidebar.show('katzenpost'));
    const before = await demoChannel();
    assert.ok(before.received >= 1, 'nothing to rewind yet');
    const c = card();
    await c.locator('input.kp-sb-count').fill('1');

    // Cancel: nothing moves.
    await c.locator('.kp-sb-rewind').click();
    const question = page.locator('.red-ui-notification .kp-sb-confirm[data-action="rewind"]');
    await question.waitFor({ state: 'visible', timeout: 5_000 });
    assert.match((await question.textContent()) ?? '', /Rewind the reader of channel "demo" by 1 entry\?/);
    await page.waitForTimeout(400); // the notification slides in
    await shot('sidebar-confirm');
    await page.locator('.red-ui-notification button.kp-sb-confirm-cancel').click();
    await question.waitFor({ state: 'detached', timeout: 5_000 });
    await page.waitForTimeout(500);
    assert.equal((await demoChannel()).readIndex, before.readIndex, 'cancel moved the reader');

    // Confirm: the reader goes back one entry and the receive node emits it again.
    await c.locator('.kp-sb-rewind').click();
    await question.waitFor({ state: 'visible', timeout: 5_000 });
    await page.locator('.red-ui-notification button.kp-sb-confirm-ok').click();
    await page.locator('.red-ui-notification', { hasText: /Channel "demo": the reader is now at box/ }).waitFor({ timeout: 30_000 });
    await page.waitForFunction((text: string) => [...document.querySelectorAll('.red-ui-debug-content .red-ui-debug-msg')]
      .some((el: { textContent: string }) => el.textContent.includes(text)), CHANNEL_TEXT, { timeout: 30_000 });
    const after = await demoChannel();
    assert.equal(after.readIndex, before.readIndex, 'the reader read the rewound entry again');
    assert.equal(after.received, before.received);
  });
});
