// Modal dialogs on the native <dialog> element: showModal() makes the rest of the page inert,
// Escape closes it (the "cancel" event), and focus returns to the button that opened it.

import { explainError } from "./errors.js";

/** Small DOM builder: el("p", {class: "x"}, "text", childNode). */
export function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
        if (value === false || value === null || value === undefined)
            continue;
        if (key.startsWith("on") && typeof value === "function")
            node.addEventListener(key.slice(2), value);
        else
            node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
        if (child === null || child === undefined || child === false)
            continue;
        node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
}

/** An inline PatternFly-style danger alert with the error in words. */
export function errorAlert(error, action) {
    const { title, detail, name } = explainError(error);
    return el("div", { class: "sb-alert sb-alert--danger", role: "alert", "data-error-name": name },
              el("p", { class: "sb-alert__title" }, `Could not ${action}: ${title}`),
              detail ? el("p", { class: "sb-alert__detail" }, detail) : null);
}

/**
 * Opens a modal dialog.
 *   id            stable id (tests and styling)
 *   title         heading text
 *   body          nodes for the dialog body
 *   confirmLabel  text of the primary button
 *   danger        true: the primary button is styled as destructive and focus starts on Cancel
 *   action        verb phrase used in error text ("roll back")
 *   onConfirm     async (dialogBody) => void; a throw keeps the dialog open and shows the error
 *   initialFocus  element to focus first (default: first input, else Cancel for danger, else confirm)
 *   fallbackFocus () => element, for when the opener is gone or hidden after the action
 * onConfirm may return an element: focus goes there after the dialog closes (e.g. a new notice).
 */
export function openDialog({ id, title, body, confirmLabel, danger, action, onConfirm, initialFocus, fallbackFocus }) {
    const opener = document.activeElement;
    const titleId = `${id}-title`;
    const errorSlot = el("div", { class: "sb-dialog__error", "aria-live": "polite" });
    const confirm = el("button", { type: "submit", class: danger ? "sb-btn sb-btn--danger" : "sb-btn sb-btn--primary", "data-action": "confirm" }, confirmLabel);
    const cancel = el("button", { type: "button", class: "sb-btn sb-btn--link", "data-action": "cancel" }, "Cancel");
    const form = el("form", { method: "dialog", class: "sb-dialog__form" },
                    el("header", { class: "sb-dialog__header" }, el("h2", { id: titleId }, title)),
                    el("div", { class: "sb-dialog__body" }, body, errorSlot),
                    el("footer", { class: "sb-dialog__footer" }, confirm, cancel));
    const dialog = el("dialog", { id, class: "sb-dialog", "aria-labelledby": titleId }, form);

    let busy = false;
    let focusAfter = null;
    const close = () => {
        dialog.close();
    };
    cancel.addEventListener("click", close);
    dialog.addEventListener("cancel", event => {
        // Escape closes, except while the request is in flight (its answer must be shown).
        if (busy)
            event.preventDefault();
    });
    dialog.addEventListener("close", () => {
        dialog.remove();
        // Back to the button that opened the dialog — unless the action moved on (a notice to act
        // on) or took that button away (its row was deleted, or it is hidden in the new state).
        const usable = node => node && node.isConnected && !node.closest("[hidden]") && !node.disabled;
        const target = [focusAfter, opener, fallbackFocus && fallbackFocus()].find(usable);
        if (target)
            target.focus();
    });
    form.addEventListener("submit", async event => {
        event.preventDefault();
        if (busy)
            return;
        busy = true;
        confirm.disabled = true;
        confirm.setAttribute("aria-busy", "true");
        errorSlot.replaceChildren();
        try {
            const next = await onConfirm(form);
            if (next instanceof HTMLElement)
                focusAfter = next;
            busy = false;
            close();
        } catch (error) {
            console.warn("snapback:", action, error);
            errorSlot.replaceChildren(errorAlert(error, action));
            busy = false;
            confirm.disabled = false;
            confirm.removeAttribute("aria-busy");
            // Stay in the dialog, on the button that failed, so trying again or Escape is one key.
            confirm.focus();
        }
    });

    document.body.append(dialog);
    dialog.showModal();
    const focusTarget = initialFocus || form.querySelector("input, textarea, select") || (danger ? cancel : confirm);
    focusTarget.focus();
    return dialog;
}
