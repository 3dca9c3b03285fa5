// Real Chromium for the web UI's end-to-end tests: Debian's /usr/bin/chromium driven by
// puppeteer-core (which never downloads a browser). Headless, no sandbox (tests run as root in
// containers), self-signed certificates accepted (the e2e registry serves HTTPS). Screenshots go
// to test-artifacts/ui/ (gitignored), one per page, so a CI run keeps what each page looked like.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { repoRoot } from "./registry";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const ARTIFACTS = join(repoRoot, "test-artifacts/ui");

export async function launchChromium(): Promise<Browser> {
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    acceptInsecureCerts: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run", "--ignore-certificate-errors", "--window-size=1280,900"],
    defaultViewport: { width: 1280, height: 900 },
  });
}

/**
 * A page that fails the test on any CSP violation or script error (the UI must run under its
 * strict CSP), and accepts confirm() dialogs (forms ask before destructive actions).
 */
export async function newPage(browser: Browser | import("puppeteer-core").BrowserContext): Promise<{ page: Page; problems: string[] }> {
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on("console", (m) => {
    const t = m.text();
    if (m.type() === "error" && /Content Security Policy|Refused to/i.test(t)) problems.push(t);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e instanceof Error ? e.message : String(e)}`));
  page.on("dialog", (d) => void d.accept());
  return { page, problems };
}

export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file as `${string}.png`, fullPage: true });
  return file;
}

/** Clicks and waits for the navigation it causes. */
export async function clickAndWait(page: Page, selector: string): Promise<void> {
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click(selector)]);
}

export async function text(page: Page, selector: string): Promise<string> {
  return page.$eval(selector, (el) => (el as unknown as { innerText: string }).innerText);
}

/** The value of an input or textarea. */
export async function valueOf(page: Page, selector: string): Promise<string> {
  return page.$eval(selector, (el) => (el as unknown as { value: string }).value);
}

/** Replaces the value of an input or textarea (typing a long JSON document is slow). */
export async function setValue(page: Page, selector: string, value: string): Promise<void> {
  await page.$eval(selector, (el, v) => void ((el as unknown as { value: string }).value = v as string), value);
}

/** Waits until the element's text contains (or, with absent, no longer contains) `needle`. */
export async function waitForText(page: Page, selector: string, needle: string, o: { absent?: boolean; timeout?: number } = {}): Promise<void> {
  await page.waitForFunction(
    (sel: string, n: string, absent: boolean) => {
      const el = (globalThis as unknown as { document: { querySelector(s: string): { textContent: string | null } | null } }).document.querySelector(sel);
      const has = !!el?.textContent?.includes(n);
      return absent ? !!el && !has : has;
    },
    { timeout: o.timeout ?? 10_000 },
    selector,
    needle,
    !!o.absent,
  );
}
