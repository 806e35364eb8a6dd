// Drives snapback's Cockpit page in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core) against cockpit-ws + cockpit-bridge on a private system bus. Started by
// tests/cockpit/run, which sets:
//   ROOT_URL      page URL of a session whose bridge runs as root (authorized)
//   USER_URL      page URL of a session whose bridge runs as an unprivileged user ("" = skip)
//   BUS           the private bus address, to check the daemon's side with busctl
//   ARTIFACTS     where screenshots go
//   START_DAEMON  shell command that starts the daemon (run after the "no daemon" step)
//   BUSY_VOLUME   a volume whose rollback must be "scheduled" ("" = none available)
//   FREE_VOLUME   a volume whose rollback must be "merging"
//   BOOT_VOLUME   the volume whose sets get a boot-menu entry (BootEntry) ("" = skip)
// Prints one line per check and "N passed, N failed"; exits 1 if any check failed.

import { execFileSync, execSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { chromium } from "playwright-core";

const env = name => process.env[name] || "";
const ARTIFACTS = env("ARTIFACTS");
mkdirSync(ARTIFACTS, { recursive: true });

let passed = 0;
let failed = 0;
function check(name, ok, detail = "") {
    if (ok)
        passed += 1;
    else
        failed += 1;
    console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? ` — ${detail}` : ""}`);
    return ok;
}

/** Runs a step; an exception (e.g. a wait that timed out) is a failed check, and the rest goes on. */
async function step(name, body) {
    try {
        await body();
    } catch (error) {
        check(`${name}: completed`, false, String(error.message || error).split("\n")[0]);
    }
}

async function shot(page, file) {
    await page.screenshot({ path: `${ARTIFACTS}/${file}.png`, fullPage: true });
}

/** The daemon's view: every managed object's Snapshot properties, via busctl --json. */
function managedObjects() {
    const out = execFileSync("busctl", ["--address", env("BUS"), "--json=short", "call", "org.snapback.Snapback1",
                                        "/org/snapback/Snapback1", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"]);
    const [objects] = JSON.parse(out).data;
    const byPath = {};
    for (const [path, interfaces] of Object.entries(objects)) {
        const props = interfaces["org.snapback.Snapback1.Snapshot"];
        if (props)
            byPath[path] = Object.fromEntries(Object.entries(props).map(([k, v]) => [k, v.data]));
    }
    return byPath;
}

/** A volume's block device from the daemon's Status() ("" with the stand-in, which has none). */
function volumeDevice(name) {
    const out = execFileSync("busctl", ["--address", env("BUS"), "--json=short", "call", "org.snapback.Snapback1",
                                        "/org/snapback/Snapback1", "org.snapback.Snapback1.Manager", "Status"]);
    const [status] = JSON.parse(out).data;
    return status.volumes.data[name]?.device?.data || "";
}

const WRITE_MIB = 48;

const launchArgs = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"];
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: launchArgs });

async function openPage(url, label) {
    const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
    page.setDefaultTimeout(15000);
    page.on("pageerror", error => {
        check(`${label}: no uncaught page error`, false, error.message);
    });
    page.on("console", message => {
        if (process.env.VERBOSE)
            console.log(`  [${label} console.${message.type()}] ${message.text()}`);
    });
    await page.goto(url);
    await page.waitForSelector("body[data-loaded], #connection-error", { timeout: 20000 });
    return page;
}

const rowFor = (page, description) => page.locator("#snapshot-rows tr", { hasText: description });

/** Creates a snapshot through the dialog, keyboard only; returns its row. */
async function createSnapshot(page, description, volumes, tag) {
    await page.focus("#create-button");
    await page.keyboard.press("Enter");
    const dialog = page.locator("#create-dialog");
    await dialog.waitFor({ state: "visible" });
    check(`${tag}: focus starts in the description field`, await page.evaluate(() => document.activeElement.id) === "create-description");
    await page.keyboard.type(description);
    if (volumes) {
        for (const box of await dialog.locator('input[name="volume"]').all())
            await box.setChecked(volumes.includes(await box.getAttribute("value")));
    }
    await shot(page, `${tag}-dialog`);
    await page.focus("#create-description");
    await page.keyboard.press("Enter");
    const row = rowFor(page, description);
    await row.waitFor({ state: "visible" });
    await dialog.waitFor({ state: "detached" });
    return row;
}

// ---------------------------------------------------------------------------------------------
// 1. No daemon on the bus: the page says so in words, then connects by itself when it starts.

const page = await openPage(env("ROOT_URL"), "root");

await step("no daemon", async () => {
    await page.waitForSelector("#connection-error");
    const text = await page.textContent("#connection-error");
    check("no daemon: the error says snapbackd is not running", /snapbackd\) is not installed or not running/.test(text), text.trim());
    check("no daemon: Create is disabled", await page.isDisabled("#create-button"));
    await shot(page, "01-no-daemon");
});

// The page's pure modules, imported by the browser itself (they are ES modules served by cockpit-ws).
await step("formatting and error words", async () => {
    const r = await page.evaluate(async () => {
        const f = await import("./js/format.js");
        const e = await import("./js/errors.js");
        const names = ["NotFound", "Busy", "InvalidArgument", "SnapshotInvalid", "NoSpace", "AlreadyMerging", "NotAuthorized", "Backend"];
        const generic = e.explainError({ name: "org.example.Unknown", message: "" }).title;
        return {
            bytes: [f.formatBytes(0), f.formatBytes(1536), f.formatBytes(10 * 1024 ** 3), f.formatBytes(-1)],
            usage: f.formatUsage(512 * 1024 ** 2, 2 * 1024 ** 3),
            progress: [f.progressPercent(0.374), f.progressPercent(1.7), f.progressPercent(NaN)],
            states: ["active", "invalid", "overflow", "merge-scheduled", "merging", "merge-failed", "weird"].map(s => f.describeState(s).label),
            actions: f.allowedActions("merge-scheduled"),
            failedActions: f.allowedActions("merge-failed"),
            userdata: f.userdataEntries({ "dnf.upgrade": "a", "dnf.outcome": "success", "dnf.install": "b" }).map(([k]) => k),
            words: f.listInWords(["/", "var", "home"]),
            specific: names.filter(n => e.explainError({ name: `org.snapback.Snapback1.Error.${n}`, message: "m" }).title === generic),
            detail: e.explainError({ name: "org.snapback.Snapback1.Error.NoSpace", message: "pool 97 % full" }),
            problem: e.explainError({ problem: "not-found" }).title,
            entry: f.parseBootEntry("# comment\ntitle  Roll back to snapshot 3: x (2026-01-02 03:04 UTC)\nversion 6.1\ntitle second\noptions ro snapback.rollback=3\n"),
            meaning: [f.bootEntryMeaning(["root"], "6.1"), f.bootEntryMeaning(["root", "var"], "")],
        };
    });
    check("format: bytes in binary units", JSON.stringify(r.bytes) === JSON.stringify(["0 B", "1.5 KiB", "10.0 GiB", "unknown"]), r.bytes.join(" | "));
    check("format: used of size with percent", r.usage === "512 MiB of 2.0 GiB (25 %)", r.usage);
    check("format: progress clamped to 0..100", JSON.stringify(r.progress) === "[37,100,0]", JSON.stringify(r.progress));
    check("format: every API state has a label", JSON.stringify(r.states) ===
          JSON.stringify(["Ready", "Invalid", "Full", "Rollback at next boot", "Rolling back", "Rollback failed", "weird"]), r.states.join(" | "));
    check("format: scheduled sets offer cancel, neither rollback nor delete (the daemon refuses both)",
          r.actions.cancel && !r.actions.rollback && !r.actions.delete);
    check("format: failed merges offer rollback (it resumes), not delete (the daemon refuses it)",
          r.failedActions.rollback && !r.failedActions.delete && !r.failedActions.cancel);
    check("format: dnf outcome first, then the rest by name", JSON.stringify(r.userdata) === '["dnf.outcome","dnf.install","dnf.upgrade"]', r.userdata.join(","));
    check("format: volumes in words", r.words === "“/”, “var” and “home”", r.words);
    check("errors: every API error name has its own sentence", r.specific.length === 0, r.specific.join(","));
    check("errors: the daemon's message is kept as detail", r.detail.detail === "pool 97 % full" && /not enough free space/.test(r.detail.title), JSON.stringify(r.detail));
    check("errors: a missing service is said in words", /not installed or not running/.test(r.problem), r.problem);
    check("format: a BLS entry's title, version and options (first of each key)",
          JSON.stringify(r.entry) === JSON.stringify({ title: "Roll back to snapshot 3: x (2026-01-02 03:04 UTC)", version: "6.1", options: "ro snapback.rollback=3" }),
          JSON.stringify(r.entry));
    check("format: what the boot entry does, with the kernel and the volumes",
          /boots the kernel the system had then \(6\.1\) and rolls “root” back to this snapshot before it is mounted/.test(r.meaning[0]) &&
          /rolls “root” and “var” back to this snapshot before they are mounted/.test(r.meaning[1]), r.meaning.join(" | "));
});

// A marker the page loses if it reloads: the connection must come without one.
await page.evaluate(() => { window.loadedBeforeDaemon = true; });
execSync(env("START_DAEMON"), { stdio: "inherit", shell: "/bin/bash" });

await step("daemon starts", async () => {
    await page.waitForFunction(() => document.getElementById("service-state").textContent === "snapbackd is running", null, { timeout: 20000 });
    check("daemon starts: the page connects without a reload",
          (await page.textContent("#service-state")) === "snapbackd is running" && await page.evaluate(() => window.loadedBeforeDaemon === true));
    check("daemon starts: the stale connection error is gone", await page.locator("#connection-error").count() === 0);
    await page.waitForSelector("body[data-loaded]");
    await shot(page, "02-connected");
});

// Inside Cockpit's own shell: the manifest's menu entry, and the page in the shell's iframe.
await step("cockpit shell", async () => {
    const shell = await browser.newPage({ viewport: { width: 1200, height: 800 } });
    shell.setDefaultTimeout(20000);
    await shell.goto(env("ROOT_URL").replace(/\/cockpit\/@localhost\/snapback\/index\.html$/, "/"));
    const entry = shell.locator("nav a", { hasText: "Snapshots" });
    await entry.first().waitFor();
    check("cockpit shell: the menu has a Snapshots entry", await entry.count() === 1);
    await entry.first().click();
    const frame = shell.frameLocator('iframe[name="cockpit1:localhost/snapback"]');
    await frame.locator("#service-state", { hasText: "snapbackd is running" }).waitFor();
    check("cockpit shell: the page runs inside the shell",
          (await frame.locator("#service-state").textContent()) === "snapbackd is running");
    check("cockpit shell: the URL is the package's", new URL(shell.url()).pathname === "/snapback", shell.url());
    await shell.screenshot({ path: `${ARTIFACTS}/02b-in-cockpit-shell.png` });
    await shell.close();
});

// ---------------------------------------------------------------------------------------------
// 2. Create → the row appears (InterfacesAdded), with the daemon's own values.

const stamp = Date.now().toString(36);
const freeDescription = `cockpit test ${stamp} free`;
let freeRow;
await step("create", async () => {
    freeRow = await createSnapshot(page, freeDescription, env("FREE_VOLUME") ? [env("FREE_VOLUME")] : null, "03-create");
    await shot(page, "04-created");
    const daemon = Object.entries(managedObjects()).find(([, p]) => p.Description === freeDescription);
    check("create: the daemon has a snapshot set with that description", Boolean(daemon));
    if (daemon) {
        const [path, props] = daemon;
        check("create: the row is that object", await freeRow.getAttribute("data-path") === path, path);
        check("create: the row shows its state in words", (await freeRow.locator(".sb-state").textContent()) === "Ready", props.State);
        const volumes = (await freeRow.locator(".sb-volumes li").allTextContents());
        check("create: the row lists the daemon's volumes", JSON.stringify(volumes) === JSON.stringify(props.Volumes), volumes.join(","));
        const usage = await freeRow.locator('td[data-label="Space used"]').textContent();
        check("create: the row shows used of size", / of /.test(usage), usage);
    }
    // Change the volume after the snapshot (it was all zeros), so the rollback has data to merge
    // back and the page has a merge to show; UsedBytes must follow live.
    const device = volumeDevice(env("FREE_VOLUME"));
    if (device) {
        const cell = freeRow.locator('td[data-label="Space used"]');
        const before = await cell.textContent();
        execFileSync("dd", ["if=/dev/urandom", `of=${device}`, "bs=1M", `count=${WRITE_MIB}`, "oflag=direct", "conv=fsync", "status=none"]);
        const path = await freeRow.getAttribute("data-path");
        await page.waitForFunction(([p, b]) => document.querySelector(`#snapshot-rows tr[data-path="${p}"] td[data-label="Space used"]`).textContent !== b,
                                   [path, before], { timeout: 20000 });
        check(`create: space used grows live after writing ${WRITE_MIB} MiB to the volume`, true, `${before} → ${await cell.textContent()}`);
    }
});

// A snapshot made by another client (as the dnf plugin makes them) appears live, with its transaction.
await step("external create", async () => {
    const description = `dnf -y upgrade ${stamp}`;
    execFileSync("busctl", ["--address", env("BUS"), "call", "org.snapback.Snapback1", "/org/snapback/Snapback1",
        "org.snapback.Snapback1.Manager", "Snapshot", "assa{sv}", "1", env("FREE_VOLUME"), description,
        "1", "userdata", "a{ss}", "3", "dnf.upgrade", "bash-5.2.15-2.x86_64, glibc-2.36-9.x86_64", "dnf.upgrade.count", "2", "dnf.outcome", "unfinished"]);
    const row = rowFor(page, description);
    await row.waitFor({ state: "visible" });
    const userdata = await row.locator(".sb-userdata").textContent();
    check("external create: appears without a reload", await row.isVisible() && (await row.textContent()).includes(description));
    check("external create: shows the dnf transaction from userdata", /dnf\.upgrade.*glibc-2\.36/.test(userdata) && /dnf\.outcome.*unfinished/.test(userdata), userdata);
    await shot(page, "04b-external-dnf-snapshot");
});

// ---------------------------------------------------------------------------------------------
// 2b. The way back from the boot menu. A set of the root volume has a "Roll back to snapshot N"
//     entry (its BootEntry): the row says so, with the entry's title as the menu shows it and
//     what choosing it does. A set without one says nothing of the kind. When the entry is
//     removed from /boot the row says it is missing and offers to write it again
//     (RefreshBootEntries): refused for an unprivileged session, done for root.

/** The title line of a BLS entry file, as the boot menu shows it. */
function entryTitle(path) {
    const line = readFileSync(path, "utf8").split("\n").find(l => l.startsWith("title "));
    return line ? line.slice("title ".length).trim() : "";
}

if (env("BOOT_VOLUME")) {
    await step("boot menu", async () => {
        // The data-only set made above: no entry on the daemon's side, nothing on the page.
        const freePath = await freeRow.getAttribute("data-path");
        check("boot menu: a set without the root volume has no BootEntry", managedObjects()[freePath]?.BootEntry === "",
              JSON.stringify(managedObjects()[freePath]?.BootEntry));
        check("boot menu: its row says nothing about the boot menu",
              await freeRow.locator(".sb-boot").isHidden() && !/boot menu/i.test(await freeRow.textContent()));

        const description = `cockpit test ${stamp} boot`;
        const row = await createSnapshot(page, description, [env("BOOT_VOLUME")], "04c-create-boot");
        const path = await row.getAttribute("data-path");
        const props = managedObjects()[path];
        const entry = props?.BootEntry || "";
        check("boot menu: the daemon names the set's entry file", entry.endsWith(`/loader/entries/snapback-rollback-${props?.Id}.conf`) &&
              existsSync(entry), entry);
        // The page reads the title from the file: wait until it is there, not the fallback.
        const name = row.locator('.sb-boot[data-state="present"] .sb-boot__name');
        await name.filter({ hasText: description }).waitFor();
        const title = entryTitle(entry);
        check("boot menu: the row shows the entry's title, as the boot menu does", (await name.textContent()) === title, title);
        check("boot menu: the title is the daemon's \"Roll back to snapshot N: description (date)\"",
              new RegExp(`^Roll back to snapshot ${props.Id}: ${description} \\(\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d UTC\\)$`).test(title), title);
        const block = await row.locator(".sb-boot").textContent();
        check("boot menu: the row says a way back is in the boot menu", block.startsWith("A way back is in the boot menu"), block);
        const version = (readFileSync(entry, "utf8").match(/^version (.+)$/m) || [])[1] || "";
        check("boot menu: and what choosing it does (kernel, volumes, before mounting, /boot)",
              version !== "" && block.includes(`boots the kernel the system had then (${version}) and rolls “${env("BOOT_VOLUME")}” back ` +
                                               "to this snapshot before it is mounted; /boot is put back as it was too."), block);
        check("boot menu: the entry does what the page says (snapback.rollback=N)",
              readFileSync(entry, "utf8").includes(`snapback.rollback=${props.Id}`));
        await shot(page, "04d-boot-menu");

        await row.locator('button[data-action="rollback"]').click();
        const dialog = page.locator("#rollback-dialog");
        await dialog.waitFor({ state: "visible" });
        check("boot menu: the rollback confirmation says /boot is put back too",
              /in \/boot are put back as they were too/.test(await dialog.textContent()));
        await page.keyboard.press("Escape");
        await dialog.waitFor({ state: "detached" });
        check("boot menu: the free set's confirmation does not", await (async () => {
            await freeRow.locator('button[data-action="rollback"]').click();
            await dialog.waitFor({ state: "visible" });
            const text = await dialog.textContent();
            await page.keyboard.press("Escape");
            await dialog.waitFor({ state: "detached" });
            return !/\/boot/.test(text);
        })());

        // An administrator cleans /boot: the page notices the entry has gone, by itself (the file
        // is watched; the daemon's BootEntry turns "" only at its next publish of the set).
        rmSync(entry);
        const missing = row.locator('.sb-boot[data-state="missing"]');
        await missing.waitFor();
        const missingText = await missing.textContent();
        check("boot menu: a removed entry is said to be missing, with its file",
              missingText.startsWith("The way back in the boot menu is missing") && missingText.includes(entry), missingText);
        const write = missing.locator('button[data-action="refresh-boot"]');
        check("boot menu: the row offers to write the entries again", await write.isVisible() && await write.isEnabled());
        await shot(page, "04e-boot-entry-missing");

        if (env("USER_URL")) {
            const user = await openPage(env("USER_URL"), "user");
            await user.waitForSelector("body[data-loaded]");
            // This page never saw the entry; the daemon may already say BootEntry "": the action
            // for every set, in the list's header, is the one to use here.
            await user.click("#refresh-boot-button");
            const alert = user.locator("#boot-error");
            await alert.waitFor({ state: "visible" });
            const text = await alert.textContent();
            check("boot menu: an unprivileged session's RefreshBootEntries is refused in words",
                  /Could not write the boot menu entries: You are not authorized/.test(text) &&
                  await alert.getAttribute("data-error-name") === "org.snapback.Snapback1.Error.NotAuthorized", text.trim());
            check("boot menu: and the entry is still missing", !existsSync(entry));
            await user.screenshot({ path: `${ARTIFACTS}/04f-boot-refresh-refused.png`, fullPage: true });
            await user.close();
        }

        await write.focus();
        await page.keyboard.press("Enter");
        await row.locator('.sb-boot[data-state="present"] .sb-boot__name').filter({ hasText: description }).waitFor();
        check("boot menu: written again, the file is back with the same title", existsSync(entry) && entryTitle(entry) === title,
              existsSync(entry) ? entryTitle(entry) : "no file");
        check("boot menu: the row shows the way back again", (await row.locator(".sb-boot__name").textContent()) === title);
        await page.locator("#boot-notice").waitFor({ state: "visible" });
        const notice = await page.textContent("#boot-notice");
        check("boot menu: a notice names what the daemon wrote", notice.includes("One boot menu entry was written again.") && notice.includes(entry), notice);
        check("boot menu: the keyboard focus stays on the row",
              await page.evaluate(p => document.activeElement.tagName === "BUTTON" && document.activeElement.closest("tr")?.dataset.path === p, path));
        check("boot menu: the daemon still names the same file", managedObjects()[path]?.BootEntry === entry);
        await shot(page, "04g-boot-entry-written-again");

        // The entry goes with its set (the daemon prunes it); the block goes with the row.
        await row.locator('button[data-action="delete"]').click();
        await page.locator("#delete-dialog button[data-action=confirm]").click();
        await page.locator(`#snapshot-rows tr[data-path="${path}"]`).waitFor({ state: "detached" });
        check("boot menu: deleting the set removes its entry file", !existsSync(entry));
    });
}

// ---------------------------------------------------------------------------------------------
// 3. Roll back, keyboard: the confirmation says what happens; Escape closes, focus returns.

await step("rollback confirmation", async () => {
    const button = freeRow.locator('button[data-action="rollback"]');
    await button.focus();
    await page.keyboard.press("Enter");
    const dialog = page.locator("#rollback-dialog");
    await dialog.waitFor({ state: "visible" });
    const text = await dialog.textContent();
    const volumes = await freeRow.locator(".sb-volumes li").allTextContents();
    check("rollback confirmation: names every volume", volumes.every(v => text.includes(`“${v}”`)), volumes.join(","));
    check("rollback confirmation: says changes since the snapshot are lost", /since then is lost/.test(text));
    check("rollback confirmation: says a busy volume completes at the next boot", /in use.*completes at the next boot/s.test(text));
    check("rollback confirmation: focus starts on Cancel (destructive action)",
          await page.evaluate(() => document.activeElement.dataset.action) === "cancel");
    await shot(page, "05-rollback-confirm");
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" });
    check("rollback confirmation: Escape closes and focus returns to Roll back",
          await page.evaluate(() => document.activeElement.dataset.action) === "rollback");
});

// ---------------------------------------------------------------------------------------------
// 4. Roll back a free volume: "merging" → progress bar → set removed → success notice.

await step("rollback (merging)", async () => {
    const path = await freeRow.getAttribute("data-path");
    // Record every state the row goes through, and its progress bar in each, as the DOM changes:
    // a fast merge may be over before a screenshot could be taken.
    await page.evaluate(p => {
        const row = document.querySelector(`#snapshot-rows tr[data-path="${p}"]`);
        window.rowHistory = [];
        const record = () => {
            const bar = row.querySelector(".sb-progress");
            window.rowHistory.push({ state: row.dataset.state, barVisible: !bar.hidden, value: bar.getAttribute("aria-valuenow"),
                badge: row.querySelector(".sb-state").textContent });
        };
        new MutationObserver(record).observe(row, { attributes: true, subtree: true, attributeFilter: ["data-state", "aria-valuenow", "hidden"] });
    }, path);
    await freeRow.locator('button[data-action="rollback"]').click();
    await page.locator("#rollback-dialog button[data-action=confirm]").click();
    await page.locator("#rollback-dialog").waitFor({ state: "detached" });
    const answer = await page.evaluate(() => window.snapbackPage.lastRollbackAnswer());
    check("rollback (merging): the daemon answered merging", answer && answer.answer === "merging", JSON.stringify(answer));
    if (await page.locator(`#snapshot-rows tr[data-path="${path}"][data-state="merging"]`).count())
        await shot(page, "06-merging");
    await page.locator(`#snapshot-rows tr[data-path="${path}"]`).waitFor({ state: "detached", timeout: 60000 });
    check("rollback (merging): the row disappears when the merge has finished",
          await page.locator(`#snapshot-rows tr[data-path="${path}"]`).count() === 0);
    const history = await page.evaluate(() => window.rowHistory);
    const merging = history.filter(h => h.state === "merging");
    check("rollback (merging): the row showed the merging state live", merging.length > 0, JSON.stringify(history.slice(0, 8)));
    check("rollback (merging): while merging, a progress bar is shown", merging.length > 0 && merging.every(h => h.barVisible && h.badge === "Rolling back"));
    console.log(`  progress values seen: ${[...new Set(merging.map(h => h.value))].join(", ")}`);
    await page.locator("#rollback-notice.sb-alert--success").waitFor({ state: "visible" });
    const finished = await page.textContent("#rollback-notice");
    check("rollback (merging): a notice says which rollback has finished",
          finished.includes(`The rollback to “${freeDescription}” has finished.`), finished);
    check("rollback (merging): the daemon no longer has the set", !(path in managedObjects()));
    const device = volumeDevice(env("FREE_VOLUME"));
    if (device) {
        let zeros = true;
        try {
            execFileSync("cmp", ["-s", "-n", String(WRITE_MIB * 1024 * 1024), device, "/dev/zero"]);
        } catch {
            zeros = false;
        }
        check("rollback (merging): the volume holds the snapshot's bytes again (zeros)", zeros, device);
    }
    await shot(page, "07-merged");
});

// ---------------------------------------------------------------------------------------------
// 5. Roll back a busy volume: "scheduled" → next-boot notice → Reboot now (intercepted) → cancel.

const busyDescription = `cockpit test ${stamp} busy`;
const otherDescription = `cockpit test ${stamp} other`;
if (env("BUSY_VOLUME")) {
    let busyRow;
    await step("rollback (scheduled)", async () => {
        // An older set of the same volume, for the next step (none can be taken once a rollback is pending).
        execFileSync("busctl", ["--address", env("BUS"), "call", "org.snapback.Snapback1", "/org/snapback/Snapback1",
            "org.snapback.Snapback1.Manager", "Snapshot", "assa{sv}", "1", env("BUSY_VOLUME"), otherDescription, "0"]);
        busyRow = await createSnapshot(page, busyDescription, [env("BUSY_VOLUME")], "08-create-busy");
        await busyRow.locator('button[data-action="rollback"]').click();
        await page.locator("#rollback-dialog button[data-action=confirm]").click();
        await page.locator("#scheduled-notice").waitFor({ state: "visible" });
        await page.locator("#rollback-dialog").waitFor({ state: "detached" });
        const notice = await page.textContent("#scheduled-notice");
        check("rollback (scheduled): notice says it completes at next boot", /will complete at next boot/.test(notice), notice.trim());
        check("rollback (scheduled): focus moves to Reboot now", await page.evaluate(() => document.activeElement.id) === "reboot-now");
        await busyRow.locator('.sb-badge:text("Rollback at next boot")').waitFor();
        const path = await busyRow.getAttribute("data-path");
        check("rollback (scheduled): the daemon's state is merge-scheduled", managedObjects()[path]?.State === "merge-scheduled");
        check("rollback (scheduled): Roll back is replaced by Cancel rollback",
              await busyRow.locator('button[data-action="rollback"]').isHidden() && await busyRow.locator('button[data-action="cancel"]').isVisible());
        check("rollback (scheduled): Delete is hidden until the rollback is cancelled",
              await busyRow.locator('button[data-action="delete"]').isHidden());
        await shot(page, "09-scheduled");
    });

    await step("daemon error in words", async () => {
        // A second set of the same volume cannot be rolled back while the first one's is pending:
        // the daemon's AlreadyMerging must reach the person, in the dialog, with its own message.
        const row = rowFor(page, otherDescription);
        await row.waitFor({ state: "visible" });
        await row.locator('button[data-action="rollback"]').click();
        await page.locator("#rollback-dialog button[data-action=confirm]").click();
        const alert = page.locator("#rollback-dialog .sb-alert--danger");
        await alert.waitFor({ state: "visible" });
        const text = await alert.textContent();
        check("daemon error in words: AlreadyMerging is said as a sentence",
              /Could not roll back: A rollback is already running or scheduled for one of these volumes\./.test(text), text.trim());
        check("daemon error in words: with the D-Bus error name",
              await alert.getAttribute("data-error-name") === "org.snapback.Snapback1.Error.AlreadyMerging");
        const daemonMessage = await alert.locator(".sb-alert__detail").count() ? await alert.locator(".sb-alert__detail").textContent() : "";
        check("daemon error in words: the daemon's own message is shown too", daemonMessage.length > 0, daemonMessage);
        await shot(page, "09b-already-merging");
        await page.keyboard.press("Escape");
        await page.locator("#rollback-dialog").waitFor({ state: "detached" });
        check("daemon error in words: the other set is unchanged", (await row.getAttribute("data-state")) === "active");
    });

    await step("reboot now", async () => {
        // Never reboot the test machine: record what the page asks Cockpit to do instead.
        await page.evaluate(() => {
            window.rebootCalls = [];
            window.cockpit.hint = (...args) => window.rebootCalls.push(["hint", ...args]);
            window.cockpit.spawn = (argv, options) => {
                window.rebootCalls.push(["spawn", argv, options]);
                return Promise.resolve("");
            };
        });
        await page.click("#reboot-now");
        const dialog = page.locator("#reboot-dialog");
        await dialog.waitFor({ state: "visible" });
        check("reboot now: the dialog says what the reboot does",
              /restarts now.*rolls .*back/s.test(await dialog.textContent()));
        await shot(page, "10-reboot-confirm");
        await dialog.locator("button[data-action=confirm]").click();
        await dialog.waitFor({ state: "detached" });
        const calls = await page.evaluate(() => window.rebootCalls);
        check("reboot now: Cockpit's restart hint, then shutdown --reboot now as superuser",
              JSON.stringify(calls) === JSON.stringify([["hint", "restart"], ["spawn", ["shutdown", "--reboot", "now"], { superuser: "require", err: "message" }]]),
              JSON.stringify(calls));
    });

    await step("cancel rollback", async () => {
        const path = await busyRow.getAttribute("data-path");
        await busyRow.locator('button[data-action="cancel"]').focus();
        await page.keyboard.press("Enter");
        await busyRow.locator('.sb-badge:text("Ready")').waitFor();
        check("cancel rollback: focus stays on the row (its Roll back button)",
              await page.evaluate(p => document.activeElement.dataset.action === "rollback" &&
                                       document.activeElement.closest("tr").dataset.path === p, path));
        check("cancel rollback: the row is Ready again", (await busyRow.locator(".sb-state").textContent()) === "Ready");
        check("cancel rollback: the daemon's state is active", managedObjects()[path]?.State === "active");
        check("cancel rollback: the next-boot notice is gone", await page.locator("#scheduled-notice").count() === 0);
        await shot(page, "11-cancelled");
    });
} else {
    console.log("skip rollback (scheduled): no busy volume in this setup");
}

// A merge that fails (only the stand-in can fail one on demand): the failure reaches the person.
if (env("FAILING_VOLUME")) {
    await step("merge failure", async () => {
        const description = `cockpit test ${stamp} failing`;
        const row = await createSnapshot(page, description, [env("FAILING_VOLUME")], "11b-create-failing");
        await row.locator('button[data-action="rollback"]').click();
        await page.locator("#rollback-dialog button[data-action=confirm]").click();
        await row.locator('.sb-state:text("Rollback failed")').waitFor();
        await page.locator("#rollback-notice.sb-alert--danger").waitFor({ state: "visible" });
        const notice = await page.textContent("#rollback-notice");
        check("merge failure: a notice says which rollback failed, with the daemon's message",
              notice.includes(`The rollback to “${description}” failed.`) && /read error on the COW/.test(notice), notice);
        const retry = row.locator('button[data-action="rollback"]');
        check("merge failure: the row offers Retry rollback, not Delete (a half-merged set is kept)",
              await retry.isVisible() && (await retry.textContent()).trim() === "Retry rollback" &&
              await row.locator('button[data-action="delete"]').isHidden());
        await shot(page, "11c-merge-failed");
    });
}

// ---------------------------------------------------------------------------------------------
// 6. Narrow width: rows become stacked cards with their column names.

await step("narrow", async () => {
    if (await page.locator("#snapshot-rows tr").count() === 0)
        await createSnapshot(page, `cockpit test ${stamp} narrow`, null, "12-create-narrow");
    await page.setViewportSize({ width: 400, height: 900 });
    const layout = await page.evaluate(() => {
        const row = document.querySelector("#snapshot-rows tr");
        const cell = row.querySelector("td");
        return { row: getComputedStyle(row).display, label: getComputedStyle(cell, "::before").content,
            overflow: document.documentElement.scrollWidth <= window.innerWidth };
    });
    check("narrow: rows are stacked", layout.row === "block", layout.row);
    check("narrow: each cell is labelled with its column", layout.label === '"Created"', layout.label);
    check("narrow: nothing overflows sideways", layout.overflow);
    await shot(page, "13-narrow");
    await page.setViewportSize({ width: 1200, height: 800 });
});

// ---------------------------------------------------------------------------------------------
// 7. Delete (confirmation, then the row and the daemon's object are gone).

await step("delete", async () => {
    // A set that can be deleted (not one with a failed or scheduled rollback).
    const row = page.locator("#snapshot-rows tr").filter({ has: page.locator('button[data-action="delete"]:visible') }).first();
    const path = await row.getAttribute("data-path");
    await row.locator('button[data-action="delete"]').click();
    const dialog = page.locator("#delete-dialog");
    await dialog.waitFor({ state: "visible" });
    check("delete: the dialog says the volumes are not changed", /volumes themselves are not changed/.test(await dialog.textContent()));
    await shot(page, "14-delete-confirm");
    await dialog.locator("button[data-action=confirm]").click();
    await page.locator(`#snapshot-rows tr[data-path="${path}"]`).waitFor({ state: "detached" });
    check("delete: the row is gone", await page.locator(`#snapshot-rows tr[data-path="${path}"]`).count() === 0);
    await dialog.waitFor({ state: "detached" });
    check("delete: focus lands on a button, not lost", await page.evaluate(() => document.activeElement.tagName === "BUTTON"),
          await page.evaluate(() => document.activeElement.outerHTML.slice(0, 80)));
    check("delete: the daemon no longer has the set", !(path in managedObjects()));
    await shot(page, "15-deleted");
});

// ---------------------------------------------------------------------------------------------
// 8. An unprivileged session: reading works, changing is refused — in words, in the dialog.

if (env("USER_URL")) {
    await step("unauthorized", async () => {
        // Something to see and to try to delete.
        const keep = await createSnapshot(page, `cockpit test ${stamp} kept`, null, "16-create-kept");
        const keptPath = await keep.getAttribute("data-path");
        const user = await openPage(env("USER_URL"), "user");
        await user.waitForSelector("body[data-loaded]");
        check("unauthorized: the list is readable", await user.locator(`#snapshot-rows tr[data-path="${keptPath}"]`).count() === 1);
        await user.click("#create-button");
        await user.fill("#create-description", `cockpit test ${stamp} refused`);
        await user.locator("#create-dialog button[data-action=confirm]").click();
        const alert = user.locator("#create-dialog .sb-alert--danger");
        await alert.waitFor({ state: "visible" });
        const text = await alert.textContent();
        check("unauthorized: create is refused in words", /Could not create the snapshot: You are not authorized/.test(text), text.trim());
        check("unauthorized: the refusal carries the D-Bus error name",
              await alert.getAttribute("data-error-name") === "org.snapback.Snapback1.Error.NotAuthorized");
        check("unauthorized: the dialog stays open with the error", await user.locator("#create-dialog").isVisible());
        check("unauthorized: focus stays in the dialog, on Create", await user.evaluate(() =>
            document.activeElement.closest("#create-dialog") !== null && document.activeElement.dataset.action === "confirm"));
        await user.screenshot({ path: `${ARTIFACTS}/17-unauthorized-create.png`, fullPage: true });
        await user.keyboard.press("Escape");
        check("unauthorized: no snapshot was created", !Object.values(managedObjects()).some(p => p.Description.endsWith("refused")));

        await user.locator(`#snapshot-rows tr[data-path="${keptPath}"] button[data-action="delete"]`).click();
        await user.locator("#delete-dialog button[data-action=confirm]").click();
        const deleteAlert = user.locator("#delete-dialog .sb-alert--danger");
        await deleteAlert.waitFor({ state: "visible" });
        check("unauthorized: delete is refused in words", /You are not authorized/.test(await deleteAlert.textContent()));
        check("unauthorized: the set still exists", keptPath in managedObjects());
        await user.screenshot({ path: `${ARTIFACTS}/18-unauthorized-delete.png`, fullPage: true });
        await user.close();
    });
} else {
    console.log("skip unauthorized: no unprivileged session in this setup");
}

// ---------------------------------------------------------------------------------------------
// 9. The daemon stops and starts again (an upgrade, a crash and systemd's restart): the page
//    says so, and comes back with the daemon's sets, without a reload.

await step("daemon restart", async () => {
    const before = await page.locator("#snapshot-rows tr").count();
    execSync(env("STOP_DAEMON"), { stdio: "inherit", shell: "/bin/bash" });
    await page.waitForFunction(() => document.getElementById("service-state").textContent === "snapbackd is not running");
    check("daemon restart: the page says snapbackd is not running",
          (await page.textContent("#service-state")) === "snapbackd is not running");
    check("daemon restart: Create is disabled meanwhile", await page.isDisabled("#create-button"));
    const enabled = await page.locator("#snapshot-rows button:not([hidden]):not([disabled])").count();
    check("daemon restart: the stale rows' buttons are disabled meanwhile", enabled === 0, `${enabled} enabled`);
    await shot(page, "19-daemon-stopped");
    execSync(env("START_DAEMON"), { stdio: "inherit", shell: "/bin/bash" });
    await page.waitForFunction(() => document.getElementById("service-state").textContent === "snapbackd is running", null, { timeout: 20000 });
    await page.waitForFunction(n => document.querySelectorAll("#snapshot-rows tr").length === n, before, { timeout: 20000 });
    const paths = (await page.locator("#snapshot-rows tr").evaluateAll(rows => rows.map(r => r.dataset.path))).sort();
    check("daemon restart: the page shows the restarted daemon's sets", JSON.stringify(paths) === JSON.stringify(Object.keys(managedObjects()).sort()), paths.join(","));
    check("daemon restart: the buttons work again", await page.locator("#snapshot-rows button:not([hidden]):not([disabled])").count() > 0);
    await shot(page, "20-daemon-restarted");
});

await browser.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
