// Captures MLflow UI pages with headless Chromium through playwright-core: node screenshots.cjs PAGES.json
// PAGES.json: {"pages": {"file.png": {"url": "...", "click": ["text", ...]}, ...}}: each page is loaded, the
// texts in "click" are clicked in turn (a folder, then a file to preview), and the window is captured. The UI is set up as a reviewer of model training has it
// (its own local-storage settings): the "Model training" view, the assistant panel closed.
const { chromium } = require("playwright-core");
const fs = require("fs");

const SETTINGS = {
  "mlflow.workflowType_v1": "machine_learning",
  "mlflow.assistant.panelOpen_v1": false,
  "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": true,
};

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
  for (const [file, { url, click = [] }] of Object.entries(spec.pages)) {
    await page.goto("about:blank");
    await page.goto(url, { waitUntil: "load" });
    await page.waitForTimeout(8000);  // the React app fetches runs and metrics, then draws its charts
    await page.keyboard.press("Escape");
    for (const text of click) {
      await page.getByText(text, { exact: true }).first().click();
      await page.waitForTimeout(2500);
    }
    await page.waitForTimeout(500);
    await page.screenshot({ path: file });
    console.log(`wrote ${file}`);
  }
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
