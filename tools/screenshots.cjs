// Captures MLflow UI pages with headless Chromium through playwright-core: node screenshots.cjs PAGES.json
// PAGES.json: {"pages": {"file.png": {"url": "...", "steps": [...]}, ...}}: each page is loaded, its steps are
// done in turn, and the window is captured. A step is one of
//   {"click": "text"}              click the first element whose text is exactly this (a folder, a file, "Show more")
//   {"clickSelector": "css"}       click the first element matching a CSS selector (an icon without text)
//   {"fill": ["placeholder", "v"]} type into the input with this placeholder (a search box)
//   {"columns": ["name", ...]}     open the runs table's Columns menu and toggle each named column
//   {"press": "Escape"}            press a key
// The UI is set up as a reviewer of model training has it (its own local-storage settings): the "Model
// training" view, the assistant panel closed.
const { chromium } = require("playwright-core");
const fs = require("fs");

const SETTINGS = {
  "mlflow.workflowType_v1": "machine_learning",
  "mlflow.assistant.panelOpen_v1": false,
  "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": true,
};

async function step(page, s) {
  if (s.click) await page.getByText(s.click, { exact: true }).first().click();
  if (s.clickSelector) await page.locator(s.clickSelector).first().click();
  if (s.fill) await page.getByPlaceholder(s.fill[0]).first().fill(s.fill[1]);
  if (s.press) await page.keyboard.press(s.press);
  if (s.columns) {
    await page.getByRole("button", { name: "Columns" }).first().click();
    await page.waitForTimeout(1000);
    for (const name of s.columns) {
      const search = page.getByPlaceholder("Search columns").last();
      await search.fill(name);
      await page.waitForTimeout(800);
      // By the whole name: the menu marks the searched text inside longer names (tune_epochs for epochs).
      const whole = new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
      await page.locator("span", { hasText: whole }).last().click();
      await page.waitForTimeout(500);
    }
    await page.keyboard.press("Escape");
  }
  await page.waitForTimeout(s.wait || 2000);
}

(async () => {
  const spec = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  await page.addInitScript((settings) => {
    for (const [key, value] of Object.entries(settings)) window.localStorage.setItem(key, JSON.stringify(value));
  }, SETTINGS);
  for (const [file, { url, steps = [] }] of Object.entries(spec.pages)) {
    await page.goto("about:blank");
    await page.goto(url, { waitUntil: "load" });
    await page.waitForTimeout(8000);  // the React app fetches runs and metrics, then draws its charts
    await page.keyboard.press("Escape");
    for (const s of steps) await step(page, s);
    await page.waitForTimeout(500);
    await page.screenshot({ path: file });
    console.log(`wrote ${file}`);
  }
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
