// The snapshot list: one table row per snapshot set, kept by object path and updated in place,
// so a PropertiesChanged (e.g. merge progress) does not rebuild buttons under the keyboard focus.

import { el } from "./dialogs.js";
import {
    allowedActions, describeState, formatCreated, formatUsage, isoCreated, progressPercent, userdataEntries,
} from "./format.js";

/** One snapshot set's row. actions: { rollback(snapshot, button), cancel(...), remove(...) } */
class SnapshotRow {
    constructor(actions) {
        this.actions = actions;
        this.created = el("time");
        this.description = el("span", { class: "sb-description" });
        this.importantBadge = el("span", { class: "sb-badge sb-badge--important", hidden: true }, "Important");
        this.userdata = el("dl", { class: "sb-userdata" });
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
                             el("div", {}, el("div", {}, this.description, " ", this.importantBadge), this.userdata)),
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
        if (focused && (focused.hidden || focused.disabled)) {
            const next = [this.rollbackButton, this.cancelButton, this.deleteButton].find(b => !b.hidden && !b.disabled);
            if (next)
                next.focus();
        }
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
                row.element.remove();
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
