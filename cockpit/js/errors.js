// D-Bus and Cockpit failures → a sentence a person can act on, plus the daemon's own message.
// Never swallow: every failure the page sees goes through explainError() into an alert.

const PREFIX = "org.snapback.Snapback1.Error.";

// The API's error names (DESIGN.md, D-Bus API v1) and what they mean for the person clicking.
const SNAPBACK_ERRORS = {
    NotFound: "That snapshot no longer exists. The list has been updated.",
    Busy: "A volume is busy, so snapback cannot do this now.",
    InvalidArgument: "snapback refused the request as invalid.",
    SnapshotInvalid: "This snapshot is invalid (its copy-on-write space ran out), so it cannot be rolled back to.",
    NoSpace: "There is not enough free space in the snapshot pool.",
    AlreadyMerging: "A rollback is already running or scheduled for one of these volumes.",
    NotAuthorized: "You are not authorized to do this. Turn on administrative access (the “Limited access” button at the top) and try again.",
    Backend: "The storage backend reported an error.",
};

// Errors from the bus itself or from Cockpit's bridge, not from snapbackd.
const BUS_ERRORS = {
    "org.freedesktop.DBus.Error.ServiceUnknown": "The snapback daemon (snapbackd) is not running and could not be started.",
    "org.freedesktop.DBus.Error.NameHasNoOwner": "The snapback daemon (snapbackd) is not running.",
    "org.freedesktop.DBus.Error.AccessDenied": "The system bus refused the request (bus policy).",
    "org.freedesktop.DBus.Error.NoReply": "The snapback daemon did not answer in time.",
    "org.freedesktop.DBus.Error.UnknownMethod": "The snapback daemon does not know this request; it may be an older version.",
    "org.freedesktop.DBus.Error.UnknownObject": "That snapshot no longer exists.",
};

// Cockpit channel problems (error.problem) when there is no D-Bus error name.
const COCKPIT_PROBLEMS = {
    "not-found": "The snapback daemon (snapbackd) is not installed or not running.",
    "access-denied": "You are not allowed to do this.",
    "authentication-failed": "Authentication failed.",
    "not-authorized": "You are not authorized to do this.",
    "disconnected": "The connection to the machine was lost.",
    "timeout": "The request timed out.",
    "terminated": "The connection to the machine was closed.",
};

/** { title, detail, name } for an error from cockpit.dbus (call, wait or close). */
export function explainError(error) {
    const name = (error && error.name) || "";
    const problem = (error && error.problem) || "";
    const message = error && typeof error.message === "string" ? error.message.trim() : "";
    let title;
    if (name.startsWith(PREFIX))
        title = SNAPBACK_ERRORS[name.slice(PREFIX.length)] || `snapback reported an error (${name.slice(PREFIX.length)}).`;
    else if (BUS_ERRORS[name])
        title = BUS_ERRORS[name];
    else if (COCKPIT_PROBLEMS[problem])
        title = COCKPIT_PROBLEMS[problem];
    else
        title = "The request failed.";
    // The daemon's message says what to do about this case; show it unless it only repeats the title.
    const detail = message && message !== title && message !== problem ? message : "";
    return { title, detail, name: name || problem };
}

/** "Could not roll back: <title> <detail>" — one line for logs and test assertions. */
export function errorSentence(action, error) {
    const { title, detail } = explainError(error);
    return `Could not ${action}: ${title}${detail ? ` ${detail}` : ""}`;
}
