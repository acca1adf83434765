// The dashboard in a real browser: Debian's chromium driven by
// playwright-core, against the real hostcached, libvirtd and TCG VM that
// tests/web/test_dashboard.py starts (it runs this script and answers its
// requests: "@@ {json}" lines on stdout, one JSON line back on stdin).
//
// Environment: HC_URL (http://127.0.0.1:PORT), HC_TOKEN, HC_VM (the VM,
// disk vda), HC_ARTIFACTS (directory for the screenshots).
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

const BASE = process.env.HC_URL;
let token = process.env.HC_TOKEN;
const VM = process.env.HC_VM;
const ART = process.env.HC_ARTIFACTS;
const DISK = `${VM}/vda`;
const POLICY = 'e2e-fast';
assert.ok(BASE && token && VM && ART, 'HC_URL, HC_TOKEN, HC_VM and HC_ARTIFACTS must be set');

const lines = createInterface({ input: process.stdin });
const replies = lines[Symbol.asyncIterator]();
async function ask(op) {
  process.stdout.write(`@@ ${JSON.stringify({ op })}\n`);
  const { value, done } = await replies.next();
  if (done) throw new Error(`the harness did not answer ${op}`);
  const r = JSON.parse(value);
  if (r.error) throw new Error(`harness: ${op}: ${r.error}`);
  return r;
}

const browser = await chromium.launch({
  executablePath: process.env.HC_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
context.setDefaultTimeout(20_000);
const page = await context.newPage();
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  // The API's 4xx answers are expected (validation, 409, 401); anything
  // else the console reports (a CSP refusal, an exception) is a failure.
  if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) {
    problems.push(`console: ${m.text()}`);
  }
});
page.on('request', (r) => {
  if (!r.url().startsWith(BASE)) problems.push(`request outside hostcached: ${r.url()}`);
});

let stepName = '';
async function step(name, fn) {
  stepName = name;
  const t0 = Date.now();
  await fn();
  console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}
async function shot(name) {
  const path = join(ART, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`     screenshot ${path}`);
}
const nav = (label) => page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: label }).click();
const row = (disk) => page.locator(`tr[data-disk="${disk}"]`);
const points = (id) => page.locator(`#${id}`).evaluate((el) => Number(el.dataset.points));

try {
  await step('without a token: the login form and nothing else', async () => {
    const fresh = await context.newPage();
    await fresh.goto(`${BASE}/`);
    await fresh.getByLabel('Access token').waitFor();
    assert.equal(await fresh.getByRole('navigation').count(), 0, 'navigation shown without a token');
    assert.equal(await fresh.locator('table').count(), 0);
    await fresh.getByLabel('Access token').fill('not-the-token-0123456789');
    await fresh.getByLabel('Access token').press('Enter');
    await fresh.getByText('hostcached refused this token.').waitFor();
    // The link opened in the same tab logs in too.
    await fresh.goto(`${BASE}/#token=${token}`);
    await fresh.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
    assert.ok(!fresh.url().includes(token), `token still in ${fresh.url()}`);
    await fresh.close();
  });

  await step('log in through the #token= link; the token leaves the address bar', async () => {
    await page.goto(`${BASE}/#token=${token}`);
    await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
    assert.ok(!page.url().includes(token), `token still in ${page.url()}`);
    assert.ok(page.url().endsWith('#/overview'), page.url());
    assert.equal(await page.evaluate(() => sessionStorage.getItem('hostcache.token')), token);
  });

  await step('the default policies', async () => {
    await page.goto(`${BASE}/#/overview`);
    for (const p of ['balanced', 'read-mostly', 'monitor']) {
      await page.locator('#overview-policies').getByRole('cell', { name: p, exact: true }).waitFor();
    }
    await nav('Policies');
    for (const p of ['balanced', 'read-mostly', 'monitor']) {
      await page.locator(`tr[data-policy="${p}"]`).waitFor();
    }
  });

  await step('create a policy through the form: a bad value is shown at its field', async () => {
    await page.getByRole('button', { name: 'New policy' }).click();
    await page.getByLabel('Name').fill(POLICY);
    await page.getByLabel('Description').fill('created by the browser test');
    await page.getByLabel('Mode').selectOption('write-through');
    await page.getByLabel('RAM size').fill('64M');
    await page.getByLabel('Block size').fill('1000');
    await page.getByLabel('Block size').press('Enter');  // the keyboard submits
    const err = page.locator('#pf-block-size-error');
    await err.waitFor();
    assert.match(await err.innerText(), /block-size must be a power of two/);
    assert.equal(await page.getByLabel('Block size').getAttribute('aria-invalid'), 'true');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'pf-block-size');
    assert.equal(await page.locator(`tr[data-policy="${POLICY}"]`).count(), 0);
    await shot('policy-validation');
    await page.getByLabel('Block size').fill('4k');
    await page.getByRole('button', { name: 'Create policy' }).click();
    await page.getByText(`Policy ${POLICY} created.`).waitFor();
    const r = page.locator(`tr[data-policy="${POLICY}"]`);
    await r.waitFor();
    assert.match(await r.innerText(), /64 MiB/);
  });

  await step('edit it', async () => {
    await page.getByRole('button', { name: `Edit policy ${POLICY}` }).click();
    assert.equal(await page.getByLabel('RAM size').inputValue(), '64M');
    assert.equal(await page.getByLabel('Name').getAttribute('readonly'), '');
    await page.getByLabel('RAM size').fill('32M');
    await page.getByRole('button', { name: 'Save changes' }).click();
    await page.getByText(`Policy ${POLICY} saved.`).waitFor();
    await page.locator(`tr[data-policy="${POLICY}"]`, { hasText: '32 MiB' }).waitFor();
  });

  await step('assign it to the disk; the disk becomes compliant', async () => {
    await nav('VMs and disks');
    await row(DISK).waitFor();
    await page.getByLabel(`Policy of ${VM} vda`, { exact: true }).selectOption(POLICY);
    await row(DISK).getByRole('button', { name: 'Assign' }).click();
    await row(DISK).locator('.compliance .badge', { hasText: /^compliant$/ }).waitFor({ timeout: 60_000 });
    assert.equal(await page.getByLabel(`Policy of ${VM} vda`, { exact: true }).inputValue(), POLICY);
  });

  await step('deleting the assigned policy shows the 409', async () => {
    await nav('Policies');
    const r = page.locator(`tr[data-policy="${POLICY}"]`);
    await r.locator('[data-field="disks"]', { hasText: '1' }).waitFor();
    await page.getByRole('button', { name: `Delete policy ${POLICY}` }).click();
    await page.getByRole('button', { name: `Really delete policy ${POLICY}` }).click();
    const alert = page.locator('#policy-problem');
    await alert.waitFor();
    assert.match(await alert.innerText(),
      new RegExp(`Cannot delete ${POLICY}: policy '${POLICY}' is assigned to .*unassign it`));
    assert.equal(await r.count(), 1);
  });

  await step('the disk\'s charts draw points, live', async () => {
    await ask('io-start');
    await nav('VMs and disks');
    await page.getByRole('link', { name: `Charts of ${VM} vda` }).click();
    await page.locator('#chart-iops').waitFor();
    await page.evaluate(() => { window.hcNoReload = true; });
    const first = await points('chart-iops');
    await page.waitForFunction(
      (n) => ['chart-iops', 'chart-hit-ratio', 'chart-latency', 'chart-use']
        .every((id) => Number(document.getElementById(id).dataset.points) >= n), 8, { timeout: 60_000 });
    // New samples arrive without a reload.
    await page.waitForFunction((n) => Number(document.getElementById('chart-iops').dataset.points) > n,
      first, { timeout: 30_000 });
    assert.equal(await page.evaluate(() => window.hcNoReload), true, 'the page was reloaded');
    // The plot's canvas has pixels of the first series' colour (#1f6feb).
    const drawn = await page.locator('#chart-iops canvas').evaluate((c) => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (Math.abs(d[i] - 31) < 24 && Math.abs(d[i + 1] - 111) < 24 && Math.abs(d[i + 2] - 235) < 24) n++;
      }
      return n;
    });
    assert.ok(drawn > 50, `the IOPS chart drew ${drawn} pixels of its line`);
    await ask('io-stop');
    assert.notEqual(await page.locator('[data-field="hit-ratio"]').innerText(), '–');
    await shot('disk-charts');
  });

  await step('the overview shows the disk, its policy and the hit ratio', async () => {
    await nav('Overview');
    await page.locator('[data-field="disks-total"]', { hasText: /^1$/ }).waitFor();
    await page.locator('[data-state="compliant"]', { hasText: /^1$/ }).waitFor();
    const pol = page.locator('#overview-policies tr', { hasText: POLICY });
    assert.match(await pol.innerText(), /1$/);
    assert.notEqual(await page.locator('[data-field="hit-ratio"]').innerText(), '–');
    assert.notEqual(await page.locator('[data-field="reserved"]').first().innerText(), '0 B');
    await shot('overview');
  });

  await step('events, filtered by VM and kind', async () => {
    await nav('Events');
    await page.getByLabel('VM').selectOption(VM);
    await page.getByLabel('Kind').fill('assign');
    await page.getByLabel('Kind').press('Enter');
    await page.getByText(new RegExp(`^\\d+ event\\(s\\) of ${VM}, kind assign`)).waitFor();
    assert.match(page.url(), new RegExp(`#/events\\?vm=${VM}&action=assign$`));
    const kinds = await page.locator('#events tbody td code').allInnerTexts();
    assert.ok(kinds.length > 0 && kinds.every((k) => k === 'assign'), `kinds: ${kinds}`);
    assert.match(await page.locator('#events tbody').innerText(), new RegExp(POLICY));
    await shot('events');
  });

  await step('unassign; then the policy can be deleted', async () => {
    await nav('VMs and disks');
    await page.getByRole('button', { name: `Unassign the policy of ${VM} vda` }).click();
    await page.waitForFunction((id) => document.getElementById(id).value === '', `policy-${VM}-vda`);
    await page.getByRole('link', { name: `Charts of ${VM} vda` }).waitFor({ state: 'detached' });
    await shot('vms');
    await nav('Policies');
    await page.getByRole('button', { name: `Delete policy ${POLICY}` }).click();
    await page.getByRole('button', { name: `Really delete policy ${POLICY}` }).click();
    await page.getByText(`Policy ${POLICY} deleted.`).waitFor();
    await page.locator(`tr[data-policy="${POLICY}"]`).waitFor({ state: 'detached' });
  });

  await step('a 401 (hostcached restarted with another token) returns to the login form', async () => {
    await nav('Overview');
    await page.locator('[data-field="disks-total"]').waitFor();
    const r = await ask('restart');
    assert.notEqual(r.token, token);
    await page.getByLabel('Access token').waitFor({ timeout: 30_000 });
    await page.getByText('hostcached refused the token').waitFor();
    assert.equal(await page.getByRole('navigation').count(), 0);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('hostcache.token')), null);
    await shot('login-after-401');
    token = r.token;
    await page.getByLabel('Access token').fill(token);
    await page.getByLabel('Access token').press('Enter');
    await page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
  });

  await step('a narrow window', async () => {
    await page.setViewportSize({ width: 420, height: 800 });
    await nav('VMs and disks');
    await row(DISK).waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow} px wider than a 420 px window`);
    await shot('narrow-vms');
  });

  assert.deepEqual(problems, [], 'the browser reported problems');
} catch (e) {
  console.log(`FAIL ${stepName}: ${e.stack || e}`);
  if (problems.length) console.log(problems.join('\n'));
  await shot(`failure`).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
  process.stdout.write(`@@ ${JSON.stringify({ op: 'done' })}\n`);  // no answer
  lines.close();
}
