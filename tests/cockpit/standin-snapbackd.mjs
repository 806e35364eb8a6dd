// A STAND-IN for snapbackd, for the Cockpit page's browser test only: it serves DESIGN.md's
// D-Bus API v1 (org.snapback.Snapback1) from memory, with no storage at all. The test uses the
// real snapbackd; this stand-in runs only with `tests/cockpit/run --standin` — while the real
// daemon is not available, and to drive the page through states (a slow merge with progress, a
// busy volume's "scheduled" answer) on demand. Its Backend property says "stand-in" so its
// screenshots can never be mistaken for the real daemon's.
//
// Usage: [STANDIN_STATE=FILE] [STANDIN_BOOT_DIR=DIR] node standin-snapbackd.mjs VOLUME[:busy|:fail][:boot] ...
// (bus from DBUS_SYSTEM_BUS_ADDRESS; with STANDIN_STATE the sets survive a restart; a set with a
// :boot volume gets a "Roll back to snapshot N" entry in DIR/loader/entries, named by BootEntry)

import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import dbus from "dbus-next";

const { Interface, ACCESS_READ } = dbus.interface;
const { Variant, DBusError } = dbus;

const BUS_NAME = "org.snapback.Snapback1";
const ROOT = "/org/snapback/Snapback1";
const MANAGER = "org.snapback.Snapback1.Manager";
const SNAPSHOT = "org.snapback.Snapback1.Snapshot";
const ERROR = "org.snapback.Snapback1.Error.";
const GiB = 1024 ** 3;

// VOLUME:busy — rollbacks are "scheduled"; VOLUME:fail — merges stop halfway with an I/O error;
// VOLUME:boot — the root volume: its sets get a boot-menu entry.
const volumes = process.argv.slice(2).map(arg => {
    const [name, ...flags] = arg.split(":");
    return { name, busy: flags.includes("busy"), fail: flags.includes("fail"), boot: flags.includes("boot") };
});

const BOOT_DIR = process.env.STANDIN_BOOT_DIR || "";

/** The entry file of set `id` (the real daemon's name and place for a /boot without an ESP). */
function bootEntryPath(id) {
    return `${BOOT_DIR}/loader/entries/snapback-rollback-${id}.conf`;
}

/** Writes set `set`'s entry as the real daemon words it (title, kernel, snapback.rollback=N). */
function writeBootEntry(set) {
    const date = new Date(Number(set._Created / 1000n)).toISOString().replace("T", " ").slice(0, 16);
    const text = `title Roll back to snapshot ${set._Id}: ${set._Description || "snapshot"} (${date} UTC)\n` +
        "version 6.1.0-standin\nsort-key zzz-snapback\nlinux /snapback/0000000000000000/vmlinuz-6.1.0-standin\n" +
        `options root=/dev/mapper/snapback-root ro snapback.rollback=${set._Id}\n`;
    mkdirSync(`${BOOT_DIR}/loader/entries`, { recursive: true });
    writeFileSync(bootEntryPath(set._Id), text);
}

function hasBootSide(vols) {
    return Boolean(BOOT_DIR) && vols.some(name => volumes.find(v => v.name === name)?.boot);
}

const bus = dbus.systemBus();
let currentSender = null;
// Runs before dbus-next dispatches each call: remember who is calling (for the polkit stand-in).
bus.addMethodHandler(msg => {
    currentSender = msg.sender;
    // ALLOW_INTERACTIVE_AUTHORIZATION (0x4): logged so the test can see the page sets it.
    if (msg.interface === MANAGER && msg.member !== "Status")
        console.log(`call ${msg.member} interactive=${(msg.flags & 0x4) !== 0}`);
    return false;
});

async function callerUid(sender) {
    const driver = await bus.getProxyObject("org.freedesktop.DBus", "/org/freedesktop/DBus");
    return driver.getInterface("org.freedesktop.DBus").GetConnectionUnixUser(sender);
}

/** Only root may change anything (the real daemon asks polkit; here: uid 0 or refused). */
async function authorize(sender, action) {
    const uid = await callerUid(sender);
    if (uid !== 0)
        throw new DBusError(`${ERROR}NotAuthorized`, `Not authorized to ${action} (uid ${uid}; polkit action org.snapback.${action.split(" ")[0]}).`);
}

class SnapshotSet extends Interface {
    constructor(id, description, vols, userdata, important) {
        super(SNAPSHOT);
        this.path = `${ROOT}/snapshot/${id}`;
        this._Id = id;
        this._Description = description;
        this._Created = BigInt(Date.now()) * 1000n;
        this._Volumes = vols;
        this._State = "active";
        this._UsedBytes = 0n;
        this._SizeBytes = BigInt(vols.length * GiB);
        this._MergeProgress = 0;
        this._Userdata = userdata;
        this._Important = important;
        this._BootEntry = "";
    }
    get Id() { return this._Id; }
    get Description() { return this._Description; }
    get Created() { return this._Created; }
    get Volumes() { return this._Volumes; }
    get State() { return this._State; }
    get UsedBytes() { return this._UsedBytes; }
    get SizeBytes() { return this._SizeBytes; }
    get MergeProgress() { return this._MergeProgress; }
    get Userdata() { return this._Userdata; }
    get Important() { return this._Important; }
    // As the real daemon: the entry's path when the file is there, checked when it publishes.
    get BootEntry() { return this._BootEntry; }
    set(changes) {
        for (const [key, value] of Object.entries(changes))
            this[`_${key}`] = value;
        Interface.emitPropertiesChanged(this, changes, []);
        save();
    }
    properties() {
        const out = {};
        for (const [name, { signature }] of Object.entries(SnapshotSet.prototype.$properties))
            out[name] = new Variant(signature, this[name]);
        return out;
    }
}
const ro = signature => ({ signature, access: ACCESS_READ });
SnapshotSet.configureMembers({
    properties: {
        Id: ro("u"), Description: ro("s"), Created: ro("t"), Volumes: ro("as"), State: ro("s"),
        UsedBytes: ro("t"), SizeBytes: ro("t"), MergeProgress: ro("d"), Userdata: ro("a{ss}"), Important: ro("b"),
        BootEntry: ro("s"),
    },
});

const sets = new Map();
let nextId = 1;

// The sets survive a restart (as the real daemon's registry does) through a JSON file.
const STATE = process.env.STANDIN_STATE || "";
function save() {
    if (!STATE)
        return;
    const plain = [...sets.values()].map(set => ({
        id: set._Id, description: set._Description, created: String(set._Created), volumes: set._Volumes,
        state: set._State, userdata: set._Userdata, important: set._Important,
    }));
    writeFileSync(STATE, JSON.stringify({ nextId, sets: plain }));
}
function load() {
    if (!STATE || !existsSync(STATE))
        return;
    const saved = JSON.parse(readFileSync(STATE, "utf8"));
    nextId = saved.nextId;
    for (const s of saved.sets) {
        const set = new SnapshotSet(s.id, s.description, s.volumes, s.userdata, s.important);
        set._Created = BigInt(s.created);
        // A merge cut by the stop goes on as "scheduled", like the daemon resumes it at next start.
        set._State = s.state === "merging" ? "merge-scheduled" : s.state;
        // The real daemon writes missing entries again at every start.
        if (hasBootSide(set._Volumes)) {
            writeBootEntry(set);
            set._BootEntry = bootEntryPath(set._Id);
        }
        sets.set(set.path, set);
        bus.export(set.path, set);
    }
}

class ObjectManager extends Interface {
    GetManagedObjects() {
        const out = {};
        for (const set of sets.values())
            out[set.path] = { [SNAPSHOT]: set.properties() };
        return out;
    }
    InterfacesAdded(path, interfaces) { return [path, interfaces]; }
    InterfacesRemoved(path, interfaces) { return [path, interfaces]; }
}
ObjectManager.configureMembers({
    methods: { GetManagedObjects: { inSignature: "", outSignature: "a{oa{sa{sv}}}" } },
    signals: { InterfacesAdded: { signature: "oa{sa{sv}}" }, InterfacesRemoved: { signature: "oas" } },
});

function findSet(path) {
    for (const set of sets.values()) {
        if (set.path === path)
            return set;
    }
    throw new DBusError(`${ERROR}NotFound`, `No snapshot set at ${path}.`);
}

function removeSet(set) {
    // The entry goes with its set.
    if (hasBootSide(set._Volumes))
        rmSync(bootEntryPath(set._Id), { force: true });
    sets.delete(set.path);
    save();
    bus.unexport(set.path, set);
    objectManager.InterfacesRemoved(set.path, [SNAPSHOT]);
    manager.SnapshotRemoved(set.path);
}

/** A merge that takes ~2 s with visible progress, then removes the set, as DESIGN.md's Boot section says. */
function runMerge(set) {
    set.set({ State: "merging", MergeProgress: 0 });
    let step = 0;
    const timer = setInterval(() => {
        step += 1;
        set.set({ MergeProgress: step / 5 });
        const failing = set._Volumes.find(name => volumes.find(v => v.name === name).fail);
        if (failing && step === 2) {
            clearInterval(timer);
            set.set({ State: "merge-failed" });
            manager.MergeFinished(set.path, false, `read error on the COW of ${failing} at chunk 1234; the merge stopped and resumes when the daemon restarts`);
            return;
        }
        if (step === 5) {
            clearInterval(timer);
            manager.MergeFinished(set.path, true, `Merged ${set._Volumes.join(", ")}; the volumes hold the snapshot's content.`);
            removeSet(set);
        }
    }, 400);
}

class Manager extends Interface {
    get Version() { return "1 (stand-in)"; }
    get Backend() { return "stand-in"; }
    async Snapshot(vols, description, options) {
        await authorize(currentSender, "snapshot");
        const names = vols.length ? vols : volumes.map(v => v.name);
        for (const name of names) {
            if (!volumes.some(v => v.name === name))
                throw new DBusError(`${ERROR}NotFound`, `No volume named “${name}”.`);
        }
        const userdata = options.userdata ? options.userdata.value : {};
        const important = options.important ? Boolean(options.important.value) : false;
        const set = new SnapshotSet(nextId++, description, names, userdata, important);
        if (hasBootSide(names)) {
            writeBootEntry(set);
            set._BootEntry = bootEntryPath(set._Id);
        }
        sets.set(set.path, set);
        save();
        bus.export(set.path, set);
        objectManager.InterfacesAdded(set.path, { [SNAPSHOT]: set.properties() });
        this.SnapshotCreated(set.path);
        return set.path;
    }
    async Rollback(path, _options) {
        const sender = currentSender;
        const set = findSet(path);
        await authorize(sender, "rollback");
        if (set._State !== "active")
            throw new DBusError(`${ERROR}AlreadyMerging`, `Snapshot set ${set._Id} is ${set._State}.`);
        for (const other of sets.values()) {
            const pending = other._State === "merge-scheduled" || other._State === "merging";
            const shared = other._Volumes.find(name => set._Volumes.includes(name));
            if (other !== set && pending && shared)
                throw new DBusError(`${ERROR}AlreadyMerging`, `volume ${shared} is already rolling back to snapshot ${other._Id}`);
        }
        if (set._Volumes.some(name => volumes.find(v => v.name === name).busy)) {
            set.set({ State: "merge-scheduled" });
            this.RollbackScheduled(path);
            return "scheduled";
        }
        runMerge(set);
        return "merging";
    }
    async CancelRollback(path) {
        const sender = currentSender;
        const set = findSet(path);
        await authorize(sender, "rollback");
        if (set._State !== "merge-scheduled")
            throw new DBusError(`${ERROR}InvalidArgument`, `Snapshot set ${set._Id} has no scheduled rollback.`);
        set.set({ State: "active" });
    }
    async Delete(path) {
        const sender = currentSender;
        const set = findSet(path);
        await authorize(sender, "delete");
        if (set._State === "merging")
            throw new DBusError(`${ERROR}Busy`, `Snapshot set ${set._Id} is being merged; wait for the merge to finish.`);
        removeSet(set);
    }
    Status() {
        const vols = {};
        for (const v of volumes) {
            vols[v.name] = new Variant("a{sv}", {
                device: new Variant("s", ""), backing: new Variant("s", `/standin/${v.name}.img`),
                state: new Variant("s", "active"), size: new Variant("t", BigInt(GiB)), auto: new Variant("b", true),
                snapshots: new Variant("ao", [...sets.values()].filter(s => s._Volumes.includes(v.name)).map(s => s.path)),
            });
        }
        return {
            backend: new Variant("s", "stand-in"), version: new Variant("s", "stand-in"),
            pool: new Variant("a{sv}", { path: new Variant("s", "/standin/pool"), size: new Variant("t", BigInt(8 * GiB)), used: new Variant("t", 0n) }),
            volumes: new Variant("a{sv}", vols),
            pending: new Variant("ao", [...sets.values()].filter(s => s._State === "merge-scheduled").map(s => s.path)),
            merging: new Variant("ao", [...sets.values()].filter(s => s._State === "merging").map(s => s.path)),
        };
    }
    async RefreshBootEntries() {
        await authorize(currentSender, "snapshot");
        const written = [];
        for (const set of sets.values()) {
            if (!hasBootSide(set._Volumes))
                continue;
            writeBootEntry(set);
            written.push(bootEntryPath(set._Id));
            if (set._BootEntry !== bootEntryPath(set._Id))
                set.set({ BootEntry: bootEntryPath(set._Id) });
        }
        return written;
    }
    SnapshotCreated(path) { return path; }
    SnapshotRemoved(path) { return path; }
    RollbackScheduled(path) { return path; }
    MergeFinished(path, ok, message) { return [path, ok, message]; }
}
Manager.configureMembers({
    properties: { Version: ro("s"), Backend: ro("s") },
    methods: {
        Snapshot: { inSignature: "assa{sv}", outSignature: "o" },
        Rollback: { inSignature: "oa{sv}", outSignature: "s" },
        CancelRollback: { inSignature: "o", outSignature: "" },
        Delete: { inSignature: "o", outSignature: "" },
        Status: { inSignature: "", outSignature: "a{sv}" },
        RefreshBootEntries: { inSignature: "", outSignature: "as" },
    },
    signals: {
        SnapshotCreated: { signature: "o" }, SnapshotRemoved: { signature: "o" },
        RollbackScheduled: { signature: "o" }, MergeFinished: { signature: "obs" },
    },
});

const manager = new Manager(MANAGER);
const objectManager = new ObjectManager("org.freedesktop.DBus.ObjectManager");
load();
bus.export(ROOT, manager);
bus.export(ROOT, objectManager);
await bus.requestName(BUS_NAME, 0);
console.log(`standin-snapbackd: serving ${BUS_NAME} with volumes ${volumes.map(v => v.name + (v.busy ? " (busy)" : "")).join(", ")}`);
