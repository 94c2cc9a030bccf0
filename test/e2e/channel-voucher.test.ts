// Issue #14, part 3 in the real editor (Debian's Chromium driven by
// playwright-core), against Node-RED started as `npm start -- --protocol
// current` starts it, on ephemeral ports:
//  - a channel switched to kind "invite someone" shows its own fields, gets a
//    seed when saved, deploys, and "show voucher" shows the voucher as text
//    and as a QR code that decodes to it;
//  - a channel of kind "join with a voucher" marks a malformed voucher red, in
//    the runtime's words, and accepts a well-formed one with spaces and capitals;
//  - the shipped example pair: Alice's voucher pasted into Bob's node, one
//    deploy, and the two flows talk both ways.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { ARTIFACTS, ROOT, clickInjectButton, deploy, injectNamed, openDebugSidebar, showTab, useDemoEditor, waitForDebugText } from './browser';

const DAEMON_ID = '4b50000000000001';
const ALICE_ID = '4b50000000000c02';
const BOB_ID = '4b50000000000c03';
const CAROL_ID = '4b5000000000e2e1';
const EXAMPLE_TAB = 'Two flows introduced by a voucher';
const VOUCHER = /^([0-9a-f]{8}-){7}[0-9a-f]{8}$/;

declare const RED: any; // eslint-disable-line @typescript-eslint/no-explicit-any
declare const document: any; // eslint-disable-line @typescript-eslint/no-explicit-any
declare const window: any; // eslint-disable-line @typescript-eslint/no-explicit-any

// The runtime's check of a voucher, whose words the form must use.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const channels = require(join(ROOT, 'dist', 'channels', 'index.js')) as { parseVoucher(t: unknown): Buffer };

function runtimeWords(text: string): string {
  try {
    channels.parseVoucher(text);
  } catch (e) {
    const m = (e as Error).message;
    assert.ok(m.startsWith('voucher: '), m);
    return m.slice('voucher: '.length);
  }
  throw new Error('the runtime accepted it');
}

describe('e2e: introducing two channels with a voucher (kinds invite and join), in Chromium', function () {
  this.timeout(240_000);
  const editor = useDemoEditor('voucher', { demoOptions: { protocol: 'current' } });
  let page: Page;
  let carolVoucher = '';

  before(function () {
    page = editor.page;
  });

  it('invite: the form shows its fields, saving makes a seed, and after deploying "show voucher" shows the text and a QR code of it', async function () {
    // A new channel config node (owned, as a user would start), then switched to "invite someone" in its form.
    await page.evaluate(({ id, daemon }: { id: string; daemon: string }) => {
      RED.view.importNodes([{ id, type: 'katzenpost-channel', name: 'carol', daemon, mode: 'owned', database: 'katzenpost-carol.db' }]);
    }, { id: CAROL_ID, daemon: DAEMON_ID });
    await page.waitForFunction((id: string) => !!RED.nodes.node(id), CAROL_ID, { timeout: 10_000 });
    await openChannelForm(CAROL_ID);
    await page.selectOption('#node-config-input-mode', 'invite');
    const visible = async (sel: string) => page.locator(sel).isVisible();
    assert.deepEqual(
      {
        seed: await visible('#node-config-input-seed'),
        displayName: await visible('#node-config-input-displayName'),
        showVoucher: await visible('#katzenpost-channel-show-voucher'),
        writeCap: await visible('#node-config-input-writeCap'),
        readCap: await visible('#node-config-input-readCap'),
        voucher: await visible('#node-config-input-voucher'),
        showReadCap: await visible('#katzenpost-channel-show-readcap'),
      },
      { seed: true, displayName: true, showVoucher: true, writeCap: false, readCap: false, voucher: false, showReadCap: false },
    );
    await page.fill('#node-config-input-displayName', 'Carol');
    await page.click('#node-config-dialog-ok');
    await page.locator('#node-config-input-mode').waitFor({ state: 'detached', timeout: 10_000 });
    const saved = (await page.evaluate((id: string) => {
      const n = RED.nodes.node(id);
      return { mode: n.mode, displayName: n.displayName, seed: n.credentials && n.credentials.seed, valid: n.valid };
    }, CAROL_ID)) as { mode: string; displayName: string; seed: string; valid: boolean };
    assert.equal(saved.mode, 'invite');
    assert.equal(saved.displayName, 'Carol');
    assert.match(saved.seed ?? '', /^[0-9a-f]{64}$/, 'saving the form generated the seed of the outgoing channel');
    assert.equal(saved.valid, true);
    await deploy(page);

    await openChannelForm(CAROL_ID);
    await page.click('#katzenpost-channel-show-voucher');
    const text = page.locator('#katzenpost-channel-voucher-text');
    await page.waitForFunction(() => /^([0-9a-f]{8}-){7}[0-9a-f]{8}$/.test(document.querySelector('#katzenpost-channel-voucher-text')?.value ?? ''), null, { timeout: 30_000 });
    carolVoucher = await text.inputValue();
    assert.match(carolVoucher, VOUCHER);
    const img = page.locator('#katzenpost-channel-voucher-qr');
    await img.waitFor({ state: 'visible' });
    const box = await img.boundingBox();
    assert.ok(box && box.width >= 200 && box.height >= 200, `the QR code is ${box?.width} x ${box?.height}`);
    await page.addScriptTag({ path: require.resolve('jsqr/dist/jsQR.js') });
    const decoded = (await page.evaluate(() => new Promise((resolve, reject) => {
      const shown = document.querySelector('#katzenpost-channel-voucher-qr');
      const img = new window.Image();
      img.onload = () => {
        const canvas = document.createElement('canvas');
        canvas.width = 400; canvas.height = 400;
        const ctx = canvas.getContext('2d');
        ctx.fillStyle = '#fff';
        ctx.fillRect(0, 0, 400, 400);
        ctx.drawImage(img, 0, 0, 400, 400);
        const found = window.jsQR(ctx.getImageData(0, 0, 400, 400).data, 400, 400);
        resolve(found ? found.data : null);
      };
      img.onerror = () => reject(new Error('the QR code does not load as an image'));
      img.src = shown.getAttribute('src');
    }))) as string | null;
    assert.equal(decoded, carolVoucher.toUpperCase(), 'the QR code holds the voucher');
    await page.screenshot({ path: join(ARTIFACTS, 'voucher-invite.png') });
    await page.click('#node-config-dialog-cancel');
    await page.locator('#node-config-input-mode').waitFor({ state: 'detached', timeout: 10_000 });
    // The voucher stays out of the flow: not a property of the node, not in the exported JSON.
    const exported = (await page.evaluate(() => JSON.stringify(RED.nodes.createCompleteNodeSet({ credentials: false })))) as string;
    assert.ok(!exported.includes(carolVoucher) && !exported.includes(carolVoucher.replace(/-/g, '')), 'the voucher is in the exported flow');
  });

  it('join: a malformed voucher is marked red in the runtime\'s words; a voucher with spaces and capitals passes', async function () {
    await openChannelForm(BOB_ID);
    assert.equal(await page.locator('#node-config-input-mode').inputValue(), 'join');
    assert.equal(await page.locator('#node-config-input-voucher').isVisible(), true);
    assert.equal(await page.locator('#node-config-input-displayName').isVisible(), false);
    assert.equal(await page.locator('#katzenpost-channel-show-voucher').isVisible(), false);
    for (const bad of ['abcd-1234', 'zz'.repeat(32), carolVoucher.slice(0, -2)]) {
      assert.deepEqual(await typeInto('#node-config-input-voucher', bad), { red: true }, `"${bad}" is not marked red`);
      const says = (await page.evaluate((v: string) => {
        const def = RED.nodes.getType('katzenpost-channel');
        return def.credentials.voucher.validate.call({ _: def._, mode: 'join' }, v, {});
      }, bad)) as string;
      assert.equal(says, `Voucher: ${runtimeWords(bad)}`);
      assert.ok(!says.includes(bad), 'the message repeats what was typed');
    }
    const typed = carolVoucher.toUpperCase().replace(/-/g, ' ');
    assert.deepEqual(await typeInto('#node-config-input-voucher', typed), { red: false });
    // Other kinds do not check the voucher field.
    assert.deepEqual(await typeInto('#node-config-input-voucher', 'abcd'), { red: true });
    await page.screenshot({ path: join(ARTIFACTS, 'voucher-join.png') });
    await page.selectOption('#node-config-input-mode', 'owned');
    await page.locator('#node-config-input-voucher').dispatchEvent('change');
    assert.equal((await page.locator('#node-config-input-voucher').getAttribute('class') ?? '').includes('input-error'), false);
    await page.click('#node-config-dialog-cancel');
    await page.locator('#node-config-input-mode').waitFor({ state: 'detached', timeout: 10_000 });
  });

  it('the example pair: Alice\'s voucher pasted into Bob\'s node, one deploy, and the two flows talk both ways', async function () {
    await openChannelForm(ALICE_ID);
    await page.click('#katzenpost-channel-show-voucher');
    await page.waitForFunction(() => /^([0-9a-f]{8}-){7}[0-9a-f]{8}$/.test(document.querySelector('#katzenpost-channel-voucher-text')?.value ?? ''), null, { timeout: 30_000 });
    const voucher = await page.locator('#katzenpost-channel-voucher-text').inputValue();
    await page.click('#node-config-dialog-cancel');
    await page.locator('#node-config-input-mode').waitFor({ state: 'detached', timeout: 10_000 });

    await openChannelForm(BOB_ID);
    await typeInto('#node-config-input-voucher', voucher);
    await page.click('#node-config-dialog-ok');
    await page.locator('#node-config-input-mode').waitFor({ state: 'detached', timeout: 10_000 });
    await deploy(page);

    await showTab(page, EXAMPLE_TAB);
    await openDebugSidebar(page);
    await page.click('#red-ui-sidebar-debug-clear');
    // Bob's outgoing channel works at once; Alice reads it once introduced.
    await clickInjectButton(page, await injectNamed(page, 'hello from Bob'));
    await waitForDebugText(page, 'hello from Bob', 90_000);
    // Alice's send node leaves "introducing: ..." once she is introduced.
    const aliceSend = (await page.evaluate((id: string) => RED.nodes.filterNodes({ type: 'katzenpost-channel-send' }).find((n: { channel: string }) => n.channel === id)?.id, ALICE_ID)) as string;
    await page.waitForFunction((id: string) => {
      const s = RED.nodes.node(id).status;
      return !!s && s.fill === 'green';
    }, aliceSend, { timeout: 60_000 });
    await clickInjectButton(page, await injectNamed(page, 'hello from Alice'));
    await waitForDebugText(page, 'hello from Alice', 60_000);
    await page.screenshot({ path: join(ARTIFACTS, 'voucher-example.png') });
  });

  // ------------------------------------------------------------ helpers
  async function openChannelForm(id: string): Promise<void> {
    await page.evaluate((nodeId: string) => RED.editor.editConfig('', 'katzenpost-channel', nodeId), id);
    await page.locator('#node-config-input-mode').waitFor({ state: 'visible', timeout: 10_000 });
  }

  async function typeInto(selector: string, value: string): Promise<{ red: boolean }> {
    await page.fill(selector, value);
    await page.locator(selector).dispatchEvent('change');
    return { red: (await page.locator(selector).getAttribute('class') ?? '').includes('input-error') };
  }
});
