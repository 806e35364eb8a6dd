// The page's one connection to snapbackd: org.snapback.Snapback1 on the system bus through
// cockpit.dbus. Snapshot objects come from the daemon's ObjectManager (cockpit's proxies()),
// changes arrive as InterfacesAdded/Removed and PropertiesChanged — no polling anywhere.

/* global cockpit */

export const BUS_NAME = "org.snapback.Snapback1";
export const MANAGER_PATH = "/org/snapback/Snapback1";
export const MANAGER_IFACE = "org.snapback.Snapback1.Manager";
export const SNAPSHOT_IFACE = "org.snapback.Snapback1.Snapshot";

// Message flag ALLOW_INTERACTIVE_AUTHORIZATION on mutating calls: polkit may then ask the
// session's authentication agent — in a Cockpit login session that is the bridge itself, which
// answers with the login password — instead of refusing outright.
const INTERACTIVE = "i";

/** cockpit.dbus gives variants as {t, v}; a{sv} nests them. Strip them all. */
export function unwrapVariants(value) {
    if (Array.isArray(value))
        return value.map(unwrapVariants);
    if (value && typeof value === "object") {
        const keys = Object.keys(value);
        if (keys.length === 2 && "t" in value && "v" in value && typeof value.t === "string")
            return unwrapVariants(value.v);
        const plain = {};
        for (const key of keys)
            plain[key] = unwrapVariants(value[key]);
        return plain;
    }
    return value;
}

/** A plain-data copy of a Snapshot proxy: what the view renders. */
function snapshotFromProxy(proxy) {
    return {
        path: proxy.path,
        id: proxy.Id,
        description: proxy.Description || "",
        created: proxy.Created,
        volumes: Array.isArray(proxy.Volumes) ? proxy.Volumes.slice() : [],
        state: proxy.State || "",
        usedBytes: proxy.UsedBytes,
        sizeBytes: proxy.SizeBytes,
        mergeProgress: proxy.MergeProgress,
        userdata: proxy.Userdata || {},
        important: Boolean(proxy.Important),
        // The set's "Roll back to snapshot N" boot-menu entry file; "" when it has none (or the
        // daemon predates the property).
        bootEntry: typeof proxy.BootEntry === "string" ? proxy.BootEntry : "",
    };
}

/**
 * Callbacks (all optional):
 *   onSnapshots(list)         the full, current list, after any change
 *   onOwner(running)          whether snapbackd holds its bus name
 *   onManager({version, backend})
 *   onSignal(name, args)      RollbackScheduled / MergeFinished / SnapshotCreated / SnapshotRemoved
 *   onClosed(error)           the channel closed (bridge gone, bus unreachable)
 */
export class SnapbackClient {
    constructor(callbacks) {
        this.callbacks = callbacks;
        this.watchBusName();
        this.connect();
    }

    /**
     * A channel to a name that has no owner closes ("not-found") and stays closed. Watch the bus
     * driver's NameOwnerChanged for our name on a separate channel, and reconnect when snapbackd
     * appears (started later, or restarted): event-driven, no polling.
     */
    watchBusName() {
        this.busDriver = cockpit.dbus("org.freedesktop.DBus", { bus: "system" });
        this.busDriver.subscribe({ interface: "org.freedesktop.DBus", member: "NameOwnerChanged", arg0: BUS_NAME },
                                 (_path, _iface, _signal, [_name, _oldOwner, newOwner]) => {
                                     if (newOwner && this.closed)
                                         this.reconnect();
                                 });
    }

    connect() {
        // superuser "try": use the administrative bridge when the session has admin access turned
        // on, else the user's own; snapbackd's polkit check then sees that caller.
        this.dbus = cockpit.dbus(BUS_NAME, { bus: "system", superuser: "try" });
        this.dbus.addEventListener("owner", (_event, owner) => this.emit("onOwner", owner !== null && owner !== undefined));
        this.closed = false;
        const channel = this.dbus;
        this.dbus.addEventListener("close", (_event, options) => {
            if (channel !== this.dbus)
                return; // an old channel we closed ourselves in reconnect()
            this.closed = true;
            this.emit("onClosed", options || {});
        });

        this.manager = this.dbus.proxy(MANAGER_IFACE, MANAGER_PATH);
        this.manager.addEventListener("changed", () => this.emitManager());
        this.manager.addEventListener("signal", (_event, name, args) => this.emit("onSignal", name, args));
        this.manager.wait(() => this.emitManager());

        this.snapshots = this.dbus.proxies(SNAPSHOT_IFACE, MANAGER_PATH);
        const update = () => this.emit("onSnapshots", this.list());
        this.snapshots.addEventListener("added", update);
        this.snapshots.addEventListener("changed", update);
        this.snapshots.addEventListener("removed", update);
        this.snapshots.wait(update);
    }

    /** Drop the channel and open a new one (after the session's admin access changed). */
    reconnect() {
        const old = this.dbus;
        this.connect();
        old.close();
    }

    emit(name, ...args) {
        const callback = this.callbacks[name];
        if (callback)
            callback(...args);
    }

    emitManager() {
        if (this.manager.valid)
            this.emit("onManager", { version: this.manager.Version, backend: this.manager.Backend });
    }

    /** Every snapshot set, newest first. */
    list() {
        const all = Object.keys(this.snapshots).map(path => this.snapshots[path])
            .filter(proxy => proxy && proxy.valid)
            .map(snapshotFromProxy);
        all.sort((a, b) => Number(b.created) - Number(a.created) || Number(b.id) - Number(a.id));
        return all;
    }

    /** Snapshot(as s a{sv}) → o. Empty volumes = every auto-snapshot volume. */
    async create(description, volumes, important) {
        const options = {};
        if (important)
            options.important = { t: "b", v: true };
        const [path] = await this.dbus.call(MANAGER_PATH, MANAGER_IFACE, "Snapshot",
                                            [volumes, description, options], { type: "assa{sv}", flags: INTERACTIVE });
        return path;
    }

    /** Rollback(o a{sv}) → "merging" | "scheduled". */
    async rollback(path) {
        const [answer] = await this.dbus.call(MANAGER_PATH, MANAGER_IFACE, "Rollback",
                                              [path, {}], { type: "oa{sv}", flags: INTERACTIVE });
        return answer;
    }

    async cancelRollback(path) {
        await this.dbus.call(MANAGER_PATH, MANAGER_IFACE, "CancelRollback", [path], { type: "o", flags: INTERACTIVE });
    }

    async remove(path) {
        await this.dbus.call(MANAGER_PATH, MANAGER_IFACE, "Delete", [path], { type: "o", flags: INTERACTIVE });
    }

    /** RefreshBootEntries() → as: writes every set's boot-menu entry again; the files written. */
    async refreshBootEntries() {
        const [written] = await this.dbus.call(MANAGER_PATH, MANAGER_IFACE, "RefreshBootEntries", [],
                                               { type: "", flags: INTERACTIVE });
        return written;
    }

    /**
     * Follows a file (a boot-menu entry) through the bridge, live: onChange({ text }) while it
     * exists, ({ missing: true }) once it is gone, ({ error }) when it cannot be read. The daemon
     * only re-checks BootEntry when it publishes a set, so an entry removed from /boot
     * meanwhile is noticed here. Returns { remove() }.
     */
    watchFile(path, onChange) {
        const file = cockpit.file(path, { superuser: "try" });
        const watch = file.watch((content, tag, error) => {
            if (error)
                onChange({ error });
            else if (content === null)
                onChange({ missing: true });
            else
                onChange({ text: content });
        });
        return {
            remove: () => {
                watch.remove();
                file.close();
            },
        };
    }

    /** Status() → a{sv} as plain data (backend, version, pool {path,size,used}, volumes {name → {...}}, pending, merging). */
    async status() {
        const [status] = await this.dbus.call(MANAGER_PATH, MANAGER_IFACE, "Status", [], { type: "" });
        return unwrapVariants(status);
    }
}
