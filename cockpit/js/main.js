// Wires the page: the D-Bus client, the table, the notices and the dialogs for each action.

/* global cockpit */

import { SnapbackClient } from "./client.js";
import { el, errorAlert, openDialog } from "./dialogs.js";
import { explainError } from "./errors.js";
import { formatBytes, formatCreated, formatUsage, listInWords } from "./format.js";
import { SnapshotTable } from "./view.js";

const $ = id => document.getElementById(id);

/** Where keyboard focus goes when the element it was on has disappeared: the list, else Create. */
function fallbackFocus() {
    return document.querySelector("#snapshot-rows button:not([hidden]):not([disabled])") || $("create-button");
}

const notices = $("notices");
const serviceState = $("service-state");
let snapshots = [];

/** A dismissible error alert at the top of the page; errors are never only logged. */
function showError(error, action, id) {
    console.warn("snapback:", action, error);
    const alert = errorAlert(error, action);
    if (id) {
        const old = document.getElementById(id);
        if (old)
            old.remove();
        alert.id = id;
    }
    const dismiss = el("button", { type: "button", class: "sb-btn sb-btn--plain sb-alert__close", "aria-label": "Dismiss" }, "×");
    dismiss.addEventListener("click", () => alert.remove());
    alert.prepend(dismiss);
    $("errors").prepend(alert);
}

function showNotice(id, tone, title, detail, ...buttons) {
    const old = document.getElementById(id);
    if (old)
        old.remove();
    const notice = el("div", { id, class: `sb-alert sb-alert--${tone}`, role: "status" },
                      el("p", { class: "sb-alert__title" }, title),
                      detail ? el("p", { class: "sb-alert__detail" }, detail) : null,
                      buttons.length ? el("div", { class: "sb-alert__actions" }, buttons) : null);
    notices.append(notice);
    return notice;
}

function snapshotName(snapshot) {
    return snapshot.description ? `“${snapshot.description}”` : `snapshot ${snapshot.id}`;
}

// --- The "will complete at next boot" notice, derived from state so it survives a reload.

function renderScheduledNotice() {
    const scheduled = snapshots.filter(snapshot => snapshot.state === "merge-scheduled");
    const old = $("scheduled-notice");
    if (scheduled.length === 0) {
        if (old)
            old.remove();
        return;
    }
    const volumes = [...new Set(scheduled.flatMap(snapshot => snapshot.volumes))];
    const title = scheduled.length === 1
        ? `The rollback to ${snapshotName(scheduled[0])} will complete at next boot.`
        : `${scheduled.length} rollbacks will complete at next boot.`;
    const detail = `${listInWords(volumes)} ${volumes.length === 1 ? "is" : "are"} in use, so the merge starts while the machine boots, ` +
        "before the volumes are mounted. Until then the system keeps running on the current state. " +
        "To undo this, use “Cancel rollback”.";
    // Rebuild only when the words change: rebuilding would take the keyboard focus off Reboot now.
    const key = title + detail;
    if (old && old.dataset.key === key)
        return;
    const hadFocus = old && old.contains(document.activeElement);
    const reboot = el("button", { type: "button", class: "sb-btn sb-btn--primary", id: "reboot-now" }, "Reboot now");
    reboot.addEventListener("click", () => confirmReboot(snapshots.filter(s => s.state === "merge-scheduled")));
    showNotice("scheduled-notice", "info", title, detail, reboot).dataset.key = key;
    if (hadFocus)
        reboot.focus();
}

function confirmReboot(scheduled) {
    openDialog({
        id: "reboot-dialog",
        title: "Reboot now?",
        body: [
            el("p", {}, `The machine restarts now. During boot, snapback rolls ${listInWords([...new Set(scheduled.flatMap(s => s.volumes))])} back ` +
                        "before they are mounted. Everyone logged in is disconnected; unsaved work is lost."),
        ],
        confirmLabel: "Reboot",
        danger: true,
        action: "reboot",
        onConfirm: () => {
            // Cockpit's own reboot flow (the Overview page's Reboot dialog does the same two calls):
            // hint("restart") makes the shell show its "reconnecting" screen instead of an error,
            // and shutdown runs with administrative access, asking for it if the session lacks it.
            cockpit.hint("restart");
            return cockpit.spawn(["shutdown", "--reboot", "now"], { superuser: "require", err: "message" });
        },
    });
}

// --- Actions

function volumeChoices() {
    const volumes = status && status.volumes ? Object.keys(status.volumes).sort() : [];
    return volumes.map(name => {
        const volume = status.volumes[name] || {};
        const box = el("input", { type: "checkbox", name: "volume", value: name, checked: Boolean(volume.auto) });
        const detail = [volume.backing, volume.size ? formatBytes(volume.size) : ""].filter(Boolean).join(", ");
        return el("label", { class: "sb-check" }, box, ` ${name}`, detail ? el("span", { class: "sb-muted" }, ` (${detail})`) : null);
    });
}

function openCreateDialog() {
    const description = el("input", { id: "create-description", type: "text", class: "sb-input", maxlength: "200", autocomplete: "off", placeholder: "Before changing the network setup" });
    const important = el("input", { id: "create-important", type: "checkbox" });
    const volumes = volumeChoices();
    openDialog({
        id: "create-dialog",
        fallbackFocus,
        title: "Create snapshot",
        body: [
            el("p", {}, "Takes a copy-on-write snapshot of the chosen volumes, all at the same instant. " +
                        "You can roll back to it later."),
            el("label", { for: "create-description", class: "sb-label" }, "Description"),
            description,
            volumes.length
                ? el("fieldset", { class: "sb-fieldset" }, el("legend", { class: "sb-label" }, "Volumes"), volumes)
                : el("p", { class: "sb-muted" }, "Volumes: every volume marked for automatic snapshots."),
            el("label", { class: "sb-check" }, important, " Important (keep it when old snapshots are cleaned up)"),
        ],
        confirmLabel: "Create",
        action: "create the snapshot",
        onConfirm: async form => {
            const chosen = [...form.querySelectorAll('input[name="volume"]:checked')].map(box => box.value);
            if (volumes.length && chosen.length === 0)
                throw { name: "org.snapback.Snapback1.Error.InvalidArgument", message: "Choose at least one volume." };
            await client.create(description.value.trim(), chosen, important.checked);
        },
    });
}

function openRollbackDialog(snapshot) {
    const when = formatCreated(snapshot.created);
    openDialog({
        id: "rollback-dialog",
        fallbackFocus,
        title: `Roll back to ${snapshotName(snapshot)}?`,
        body: [
            el("p", {}, `The volume${snapshot.volumes.length === 1 ? "" : "s"} ${listInWords(snapshot.volumes)} will be returned to ` +
                        `the state ${snapshot.volumes.length === 1 ? "it" : "they"} had on ${when}.`),
            el("p", { class: "sb-strong" }, `Everything written to ${snapshot.volumes.length === 1 ? "it" : "them"} since then is lost: ` +
                                           "installed or upgraded packages, changed settings, logs and any other files."),
            el("p", {}, "A volume that is not in use is rolled back now; this page shows the progress. " +
                        "A volume that is in use (for example the mounted root file system) cannot be changed while the system runs: " +
                        "its rollback is scheduled and completes at the next boot."),
            snapshot.bootEntry
                ? el("p", { id: "rollback-dialog-boot" }, "The kernels, boot entries and boot loader default in /boot are put back " +
                                                          "as they were too, so the next boot starts the kernel of the snapshot.")
                : null,
            snapshot.state === "merge-failed"
                ? el("p", { class: "sb-strong" }, "The last attempt stopped part way, so the volumes are half rolled back now. " +
                                                 "Retrying resumes where it stopped; fix the cause in the journal first.")
                : null,
            el("p", {}, "When the rollback has finished, this snapshot is removed."),
        ],
        confirmLabel: "Roll back",
        danger: true,
        action: "roll back",
        onConfirm: async () => {
            finishedMerges.delete(snapshot.path);
            const answer = await client.rollback(snapshot.path);
            if (answer === "scheduled") {
                // The state change (merge-scheduled) also arrives over the bus; this only makes the
                // notice appear without waiting for it, and moves focus to its Reboot now button.
                lastRollbackAnswer = { path: snapshot.path, answer };
                const pending = snapshots.find(s => s.path === snapshot.path);
                if (pending && pending.state !== "merge-scheduled")
                    snapshots = snapshots.map(s => s.path === snapshot.path ? { ...s, state: "merge-scheduled" } : s);
                renderScheduledNotice();
                return $("reboot-now");
            } else {
                lastRollbackAnswer = { path: snapshot.path, answer };
                // A small merge can finish (MergeFinished) before the reply to Rollback arrives;
                // then its result notice stays, instead of being replaced by "in progress".
                if (!finishedMerges.has(snapshot.path))
                    showNotice("rollback-notice", "info", `Rolling back to ${snapshotName(snapshot)}.`,
                               "The progress is shown in the list. The snapshot is removed when the rollback has finished.");
            }
        },
    });
}

function openDeleteDialog(snapshot) {
    openDialog({
        id: "delete-dialog",
        fallbackFocus,
        title: `Delete ${snapshotName(snapshot)}?`,
        body: [
            el("p", {}, `You can no longer roll back ${listInWords(snapshot.volumes)} to ${formatCreated(snapshot.created)}. ` +
                        "Its space in the snapshot pool is freed. The volumes themselves are not changed."),
        ],
        confirmLabel: "Delete",
        danger: true,
        action: "delete the snapshot",
        onConfirm: () => client.remove(snapshot.path),
    });
}

// Paths with a CancelRollback in flight: a second click is ignored. (Disabling the button
// instead would throw the keyboard focus to the page body.)
const cancelling = new Set();

async function cancelRollback(snapshot, button) {
    if (cancelling.has(snapshot.path))
        return;
    cancelling.add(snapshot.path);
    button.setAttribute("aria-busy", "true");
    try {
        await client.cancelRollback(snapshot.path);
        showNotice("rollback-notice", "info", `The rollback to ${snapshotName(snapshot)} was cancelled.`, "The snapshot is kept.");
    } catch (error) {
        showError(error, "cancel the rollback");
    } finally {
        cancelling.delete(snapshot.path);
        button.removeAttribute("aria-busy");
    }
}

// RefreshBootEntries in flight: a second click is ignored (see `cancelling`).
let refreshingBoot = false;

async function refreshBootEntries(button) {
    if (refreshingBoot)
        return;
    refreshingBoot = true;
    button.setAttribute("aria-busy", "true");
    try {
        const written = await client.refreshBootEntries();
        const old = $("boot-error");
        if (old)
            old.remove();
        // The entry's row turns back to "A way back is in the boot menu" by itself once the file
        // is there again (it watches the file); this says what the daemon did.
        if (written.length)
            showNotice("boot-notice", "success",
                       `${written.length === 1 ? "One boot menu entry was" : `${written.length} boot menu entries were`} written again.`,
                       written.join(", "));
        else
            showNotice("boot-notice", "info", "No boot menu entry was written.",
                       "No snapshot set has recorded the boot configuration, or the boot side is turned off in snapback.toml.");
    } catch (error) {
        showError(error, "write the boot menu entries", "boot-error");
    } finally {
        refreshingBoot = false;
        button.removeAttribute("aria-busy");
    }
}

let lastRollbackAnswer = null;
// Object paths whose MergeFinished arrived since their Rollback call was made.
const finishedMerges = new Set();
// Names of every set seen, for messages about sets that were removed meanwhile.
const knownNames = new Map();

// --- Status(): pool usage for the header and the volume list for "Create snapshot". It is a
// method, not a property, so it is re-read when a signal says something changed.

let status = null;

async function refreshStatus() {
    try {
        status = await client.status();
    } catch (error) {
        status = null;
        showError(error, "read the status of snapbackd", "status-error");
        return;
    }
    const stale = $("status-error");
    if (stale)
        stale.remove();
    const pool = status.pool || {};
    $("pool").textContent = pool.size ? `Pool: ${formatUsage(pool.used, pool.size)} used` : "";
}

// --- Signals that carry information the properties do not: how a merge ended.

function onSignal(name, args) {
    if (["SnapshotCreated", "SnapshotRemoved", "RollbackScheduled", "MergeFinished"].includes(name))
        refreshStatus();
    if (name === "MergeFinished") {
        const [path, success, message] = args;
        finishedMerges.add(path);
        // The set is usually gone from the list already (removed when its merge finished).
        const what = knownNames.get(path) || "a snapshot";
        if (success)
            showNotice("rollback-notice", "success", `The rollback to ${what} has finished.`,
                       message || "The volumes now hold the snapshot's content; the snapshot was removed.");
        else
            showNotice("rollback-notice", "danger", `The rollback to ${what} failed.`, message || "See the journal of snapbackd.");
    }
}

// --- Connection state

function setServiceState(text, tone) {
    serviceState.textContent = text;
    serviceState.className = `sb-service sb-service--${tone}`;
}

let daemonRunning = false;

function onOwner(running) {
    daemonRunning = running;
    // The list stays visible as it was last seen, but nothing can be done to it meanwhile.
    table.refresh();
    $("snapshot-table").classList.toggle("sb-stale", !running);
    if (!running)
        $("pool").textContent = "";
    if (running) {
        setServiceState("snapbackd is running", "ok");
        $("create-button").disabled = false;
        $("refresh-boot-button").disabled = false;
        const stale = $("connection-error");
        if (stale)
            stale.remove();
        refreshStatus();
    } else {
        setServiceState("snapbackd is not running", "warning");
        $("create-button").disabled = true;
        $("refresh-boot-button").disabled = true;
    }
}

function onClosed(options) {
    if (options && options.problem) {
        setServiceState("Not connected", "danger");
        showError(options, "connect to snapbackd", "connection-error");
    }
}

const table = new SnapshotTable($("snapshot-rows"), $("empty-state"), {
    rollback: snapshot => openRollbackDialog(snapshot),
    cancel: (snapshot, button) => cancelRollback(snapshot, button),
    remove: snapshot => openDeleteDialog(snapshot),
    refreshBoot: (_snapshot, button) => refreshBootEntries(button),
    watchFile: (path, onChange) => client.watchFile(path, onChange),
    online: () => daemonRunning,
});

const client = new SnapbackClient({
    onSnapshots: list => {
        const focusWasInTable = $("snapshot-rows").contains(document.activeElement);
        snapshots = list;
        for (const snapshot of list)
            knownNames.set(snapshot.path, snapshotName(snapshot));
        table.render(list);
        renderScheduledNotice();
        $("snapshot-count").textContent = `${list.length} snapshot${list.length === 1 ? "" : "s"}`;
        document.body.dataset.loaded = "true";
        // A deleted row took the focused button with it: keep the keyboard user in the table.
        if (focusWasInTable && !$("snapshot-rows").contains(document.activeElement)) {
            const next = table.firstButton() || $("create-button");
            next.focus();
        }
    },
    onOwner,
    onClosed,
    onManager: ({ backend, version }) => {
        $("backend").textContent = backend ? `Backend: ${backend}${version ? ` · snapbackd ${version}` : ""}` : "";
    },
    onSignal,
});

$("create-button").addEventListener("click", openCreateDialog);
$("refresh-boot-button").addEventListener("click", event => refreshBootEntries(event.currentTarget));

// When the session gains or drops administrative access, snapbackd must see the new caller:
// reopen the channel (Cockpit's superuser bridge is chosen when the channel opens).
const superuser = cockpit.dbus(null, { bus: "internal" }).proxy("cockpit.Superuser", "/superuser");
let superuserCurrent = null;
superuser.addEventListener("changed", () => {
    if (superuserCurrent !== null && superuser.Current !== superuserCurrent && superuser.Current !== "init")
        client.reconnect();
    superuserCurrent = superuser.Current;
});

// For tests and for people debugging the page from the browser console.
window.snapbackPage = { client, explainError, lastRollbackAnswer: () => lastRollbackAnswer };
