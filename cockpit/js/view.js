// The snapshot list: one table row per snapshot set, kept by object path and updated in place,
// so a PropertiesChanged (e.g. merge progress) does not rebuild buttons under the keyboard focus.

import { el } from "./dialogs.js";
import {
    allowedActions, bootEntryMeaning, describeState, formatCreated, formatUsage, isoCreated, parseBootEntry, progressPercent,
    userdataEntries,
} from "./format.js";

/**
 * One snapshot set's row. actions: { rollback(snapshot, button), cancel(...), remove(...),
 * refreshBoot(snapshot, button), watchFile(path, onChange) → { remove() }, online() }
 */
class SnapshotRow {
    constructor(actions) {
        this.actions = actions;
        this.created = el("time");
        this.description = el("span", { class: "sb-description" });
        this.importantBadge = el("span", { class: "sb-badge sb-badge--important", hidden: true }, "Important");
        this.userdata = el("dl", { class: "sb-userdata" });
        // "A way back is in the boot menu": only for sets with a rollback entry (BootEntry).
        this.boot = el("div", { class: "sb-boot", hidden: true });
        this.bootPath = "";
        // The daemon clears BootEntry once the file has gone from /boot (at its next publish of
        // the set): a set that had an entry while this page watched keeps showing it, as missing.
        this.bootLost = false;
        this.bootWatch = null;
        // What the entry file said last: null until read, then { text } | { missing } | { error }.
        this.bootFile = null;
        this.bootKey = "";
        this.volumes = el("ul", { class: "sb-volumes" });
        this.usage = el("span");
        this.stateBadge = el("span", { class: "sb-badge" });
        this.progress = el("div", { class: "sb-progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", hidden: true },
                           el("div", { class: "sb-progress__bar" }));
        this.progressText = el("span", { class: "sb-progress__text", hidden: true });
        this.rollbackButton = el("button", { type: "button", class: "sb-btn sb-btn--secondary", "data-action": "rollback" }, "Roll back");
        this.cancelButton = el("button", { type: "button", class: "sb-btn sb-btn--secondary", "data-action": "cancel" }, "Cancel rollback");
        this.deleteButton = el("button", { type: "button", class: "sb-btn sb-btn--link sb-btn--danger-link", "data-action": "delete" }, "Delete");
        this.rollbackButton.addEventListener("click", () => this.actions.rollback(this.snapshot, this.rollbackButton));
        this.cancelButton.addEventListener("click", () => this.actions.cancel(this.snapshot, this.cancelButton));
        this.deleteButton.addEventListener("click", () => this.actions.remove(this.snapshot, this.deleteButton));

        // data-label feeds the stacked layout at narrow widths (see snapback.css).
        this.element = el("tr", { class: "sb-row" },
                          el("td", { "data-label": "Created" }, this.created),
                          el("th", { scope: "row", "data-label": "Description" },
                             el("div", {}, el("div", {}, this.description, " ", this.importantBadge), this.userdata, this.boot)),
                          el("td", { "data-label": "Volumes" }, this.volumes),
                          el("td", { "data-label": "Space used" }, this.usage),
                          el("td", { "data-label": "State" }, el("div", {}, this.stateBadge, this.progress, this.progressText)),
                          el("td", { "data-label": "Actions", class: "sb-actions" },
                             this.rollbackButton, this.cancelButton, this.deleteButton));
    }

    update(snapshot) {
        this.snapshot = snapshot;
        this.element.dataset.path = snapshot.path;
        this.element.dataset.id = String(snapshot.id);
        this.element.dataset.state = snapshot.state;

        this.created.textContent = formatCreated(snapshot.created);
        this.created.setAttribute("datetime", isoCreated(snapshot.created));
        this.description.textContent = snapshot.description || "(no description)";
        this.description.classList.toggle("sb-muted", !snapshot.description);
        this.importantBadge.hidden = !snapshot.important;

        this.userdata.replaceChildren(...userdataEntries(snapshot.userdata).flatMap(([key, value]) => [el("dt", {}, key), el("dd", {}, value)]));
        this.userdata.hidden = this.userdata.childElementCount === 0;
        this.volumes.replaceChildren(...snapshot.volumes.map(volume => el("li", {}, volume)));
        this.usage.textContent = formatUsage(snapshot.usedBytes, snapshot.sizeBytes);

        const state = describeState(snapshot.state);
        this.stateBadge.textContent = state.label;
        this.stateBadge.className = `sb-badge sb-state sb-badge--${state.tone}`;
        this.stateBadge.title = state.help;

        const merging = snapshot.state === "merging";
        const percent = progressPercent(snapshot.mergeProgress);
        this.progress.hidden = !merging;
        this.progressText.hidden = !merging;
        this.progress.setAttribute("aria-valuenow", String(percent));
        this.progress.setAttribute("aria-label", `Rollback progress of snapshot ${snapshot.id}`);
        this.progress.firstChild.style.width = `${percent}%`;
        this.progressText.textContent = `${percent} %`;

        const focused = this.element.contains(document.activeElement) ? document.activeElement : null;
        const allowed = allowedActions(snapshot.state);
        for (const button of [this.rollbackButton, this.cancelButton, this.deleteButton])
            button.disabled = !this.actions.online();
        this.rollbackButton.hidden = !allowed.rollback;
        this.cancelButton.hidden = !allowed.cancel;
        this.deleteButton.hidden = !allowed.delete;
        const name = snapshot.description || `snapshot ${snapshot.id}`;
        const retry = snapshot.state === "merge-failed";
        this.rollbackButton.textContent = retry ? "Retry rollback" : "Roll back";
        this.rollbackButton.setAttribute("aria-label", `${retry ? "Retry the rollback" : "Roll back"} to “${name}”`);
        this.cancelButton.setAttribute("aria-label", `Cancel the rollback to “${name}”`);
        this.deleteButton.setAttribute("aria-label", `Delete “${name}”`);
        // A state change hid the focused button (e.g. Cancel rollback once cancelled): keep the
        // keyboard user on this row.
        if (focused && (focused.hidden || focused.disabled))
            this.focusFirstButton();

        this.bootLost = !snapshot.bootEntry && this.bootPath !== "";
        const bootPath = snapshot.bootEntry || this.bootPath;
        if (bootPath !== this.bootPath) {
            this.stopBootWatch();
            this.bootPath = bootPath;
            this.bootFile = null;
            if (this.bootPath) {
                this.bootWatch = this.actions.watchFile(this.bootPath, file => {
                    this.bootFile = file;
                    this.renderBoot();
                });
            }
        }
        this.renderBoot();
    }

    focusFirstButton() {
        const next = [this.rollbackButton, this.cancelButton, this.deleteButton].find(b => !b.hidden && !b.disabled);
        if (next)
            next.focus();
    }

    /**
     * The boot-menu block: the entry's title as the menu shows it and what choosing it does; or,
     * when the file has gone from /boot (an administrator cleaned it), that it is missing, with
     * a button that has the daemon write the entries again.
     */
    renderBoot() {
        const snapshot = this.snapshot;
        if (!snapshot || !this.bootPath) {
            this.boot.hidden = true;
            this.boot.replaceChildren();
            this.bootKey = "";
            return;
        }
        const file = this.bootFile;
        const online = this.actions.online();
        let key;
        let children;
        // The file is the truth (it is what the boot loader reads); the daemon's word when the
        // file cannot be read.
        const missing = file && !file.error ? Boolean(file.missing) : this.bootLost;
        if (missing) {
            key = `missing\n${this.bootPath}\n${online}`;
            const button = el("button", {
                type: "button", class: "sb-btn sb-btn--secondary sb-btn--small", "data-action": "refresh-boot",
                "aria-label": `Write the boot menu entry of “${snapshot.description || `snapshot ${snapshot.id}`}” again`,
            }, "Write boot entries again");
            button.disabled = !online;
            button.addEventListener("click", () => this.actions.refreshBoot(snapshot, button));
            children = [
                el("p", { class: "sb-boot__title sb-boot__title--missing" }, "The way back in the boot menu is missing"),
                el("p", { class: "sb-boot__detail" }, `Its entry ${this.bootPath} is no longer there, so the boot menu ` +
                   "does not offer this snapshot. snapbackd can write it again, with the kernel it boots."),
                button,
            ];
        } else {
            // Until the file is read (or when it cannot be, e.g. /boot not readable without
            // administrative access), the title is said as the daemon writes it, without the rest.
            const entry = file && typeof file.text === "string" ? parseBootEntry(file.text) : { title: "", version: "" };
            const title = entry.title || `Roll back to snapshot ${snapshot.id}`;
            key = `present\n${title}\n${entry.version}\n${snapshot.volumes.join("\n")}`;
            children = [
                el("p", { class: "sb-boot__title" }, "A way back is in the boot menu"),
                el("p", { class: "sb-boot__entry" }, "Entry ", el("q", { class: "sb-boot__name" }, title)),
                el("p", { class: "sb-boot__detail" }, bootEntryMeaning(snapshot.volumes, entry.version)),
            ];
        }
        this.boot.hidden = false;
        this.boot.dataset.entry = this.bootPath;
        this.boot.dataset.state = missing ? "missing" : "present";
        // Rebuild only when the words change: a PropertiesChanged (merge progress, space used)
        // must not take the keyboard focus off the button in this block.
        if (key === this.bootKey)
            return;
        const hadFocus = this.boot.contains(document.activeElement);
        this.bootKey = key;
        this.boot.replaceChildren(...children);
        if (hadFocus) {
            const button = this.boot.querySelector("button");
            if (button)
                button.focus();
            else
                this.focusFirstButton();
        }
    }

    stopBootWatch() {
        if (this.bootWatch)
            this.bootWatch.remove();
        this.bootWatch = null;
    }

    dispose() {
        this.stopBootWatch();
        this.element.remove();
    }
}

export class SnapshotTable {
    constructor(tbody, empty, actions) {
        this.tbody = tbody;
        this.empty = empty;
        this.actions = actions;
        this.rows = new Map();
    }

    render(snapshots) {
        const seen = new Set();
        snapshots.forEach((snapshot, index) => {
            seen.add(snapshot.path);
            let row = this.rows.get(snapshot.path);
            if (!row) {
                row = new SnapshotRow(this.actions);
                this.rows.set(snapshot.path, row);
            }
            row.update(snapshot);
            // Keep DOM order = list order without moving rows that are already in place.
            if (this.tbody.children[index] !== row.element)
                this.tbody.insertBefore(row.element, this.tbody.children[index] || null);
        });
        for (const [path, row] of this.rows) {
            if (!seen.has(path)) {
                row.dispose();
                this.rows.delete(path);
            }
        }
        this.empty.hidden = snapshots.length > 0;
    }

    /** Re-render every row, e.g. after the daemon went away or came back (buttons follow online()). */
    refresh() {
        for (const row of this.rows.values())
            row.update(row.snapshot);
    }

    /** The row's first visible button, to move focus somewhere sane after a row vanished. */
    firstButton() {
        return this.tbody.querySelector("button:not([hidden])");
    }
}
