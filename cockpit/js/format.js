// Pure presentation helpers: numbers, times, states and userdata as words.
// No DOM and no cockpit here, so tests/cockpit/unit.mjs can check them under node.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** 1536 → "1.5 KiB"; binary units, as `df -h` and the kernel's figures are. */
export function formatBytes(bytes) {
    let value = Number(bytes);
    if (!Number.isFinite(value) || value < 0)
        return "unknown";
    let unit = 0;
    while (value >= 1024 && unit < UNITS.length - 1) {
        value /= 1024;
        unit += 1;
    }
    const digits = unit === 0 || value >= 100 ? 0 : 1;
    return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

/** "1.5 KiB of 1.0 MiB (0.1 %)" — how full a snapshot's COW space is. */
export function formatUsage(usedBytes, sizeBytes) {
    const used = Number(usedBytes);
    const size = Number(sizeBytes);
    if (!(size > 0))
        return formatBytes(used);
    const percent = Math.min(100, (used / size) * 100);
    return `${formatBytes(used)} of ${formatBytes(size)} (${percent.toFixed(percent < 10 ? 1 : 0)} %)`;
}

/** Created is µs since the epoch (D-Bus `t`); shown in the browser's locale, to the second. */
export function formatCreated(microseconds) {
    const ms = Number(microseconds) / 1000;
    if (!Number.isFinite(ms) || ms <= 0)
        return "unknown";
    return new Date(ms).toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
}

/** Machine-readable timestamp for <time datetime=…>. */
export function isoCreated(microseconds) {
    const ms = Number(microseconds) / 1000;
    if (!Number.isFinite(ms) || ms <= 0)
        return "";
    return new Date(ms).toISOString();
}

// Every State the API defines (DESIGN.md, D-Bus API v1), as a label and a tone for the badge.
const STATES = {
    "active": { label: "Ready", tone: "ok", help: "Can be rolled back to." },
    "invalid": { label: "Invalid", tone: "danger", help: "Its copy-on-write space ran out; it can no longer be rolled back to." },
    "overflow": { label: "Full", tone: "warning", help: "Its copy-on-write space is full; writes to the snapshot fail, the volume is unaffected." },
    "merge-scheduled": { label: "Rollback at next boot", tone: "info", help: "The rollback starts when the machine boots next, before the volumes are mounted." },
    "merging": { label: "Rolling back", tone: "info", help: "The snapshot is being merged into its volumes." },
    "merge-failed": { label: "Rollback failed", tone: "danger", help: "The merge stopped part way with an error (see the system journal of snapbackd). Fix the cause, then retry the rollback to finish it." },
};

/** { label, tone, help } for a State string; unknown states are shown as they are. */
export function describeState(state) {
    return STATES[state] || { label: String(state || "unknown"), tone: "neutral", help: "" };
}

/**
 * Which actions make sense in a state — the same rules the daemon enforces, so no button only
 * leads to a refusal: a failed merge is finished by rolling back again (it resumes), never
 * deleted (its volumes are half rolled back); a scheduled rollback is cancelled before delete.
 */
export function allowedActions(state) {
    return {
        rollback: state === "active" || state === "merge-failed",
        cancel: state === "merge-scheduled",
        delete: state === "active" || state === "invalid" || state === "overflow",
    };
}

/** Merge progress d (0..1) → whole percent, clamped. */
export function progressPercent(fraction) {
    const f = Number(fraction);
    if (!Number.isFinite(f))
        return 0;
    return Math.round(Math.min(1, Math.max(0, f)) * 100);
}

// Userdata keys the dnf plugin writes first, then the rest in name order. Keys are shown as-is
// so nothing the plugin records is hidden.
const USERDATA_FIRST = ["dnf.outcome", "dnf.important", "dnf.failed"];

/** Userdata a{ss} → [[key, value], …] in a stable, readable order. */
export function userdataEntries(userdata) {
    if (!userdata || typeof userdata !== "object")
        return [];
    const keys = Object.keys(userdata);
    keys.sort((a, b) => {
        const ia = USERDATA_FIRST.indexOf(a);
        const ib = USERDATA_FIRST.indexOf(b);
        if (ia !== -1 || ib !== -1)
            return (ia === -1 ? USERDATA_FIRST.length : ia) - (ib === -1 ? USERDATA_FIRST.length : ib);
        return a < b ? -1 : a > b ? 1 : 0;
    });
    return keys.map(key => [key, String(userdata[key])]);
}

/** "/", "var" → "“/” and “var”" for sentences in dialogs. */
export function listInWords(items) {
    const quoted = (items || []).map(item => `“${item}”`);
    if (quoted.length === 0)
        return "every automatically snapshotted volume";
    if (quoted.length === 1)
        return quoted[0];
    return `${quoted.slice(0, -1).join(", ")} and ${quoted[quoted.length - 1]}`;
}

/**
 * A Boot Loader Specification entry's text → { title, version, options }: one "key value" per
 * line, '#' comments, the first occurrence of a key wins (as systemd-boot reads them).
 */
export function parseBootEntry(text) {
    const entry = {};
    for (const line of String(text || "").split("\n")) {
        const trimmed = line.trim();
        if (trimmed === "" || trimmed.startsWith("#"))
            continue;
        const match = /^(\S+)\s+(.*)$/.exec(trimmed);
        if (match && !(match[1] in entry))
            entry[match[1]] = match[2].trim();
    }
    return { title: entry.title || "", version: entry.version || "", options: entry.options || "" };
}

/**
 * What choosing a set's rollback entry at the boot menu does, in one paragraph. The entry boots
 * the snapshot-time kernel with snapback.rollback=N: the initramfs starts the set's rollback
 * before root is mounted, without the bus or the daemon, and /boot is put back once snapbackd runs.
 */
export function bootEntryMeaning(volumes, version) {
    const one = (volumes || []).length === 1;
    const kernel = version ? `the kernel the system had then (${version})` : "the kernel the system had then";
    return `Choosing it when the machine starts boots ${kernel} and rolls ${listInWords(volumes)} back to this snapshot ` +
        `before ${one ? "it is" : "they are"} mounted; /boot is put back as it was too. Everything written to ` +
        `${one ? "it" : "them"} since is lost. This works even when an upgrade has left the system unable to start.`;
}
