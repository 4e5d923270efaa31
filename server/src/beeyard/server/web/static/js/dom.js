// A small helper to build DOM nodes. Text is always set as text, never parsed
// as HTML, so nothing the server or a user sends can inject markup.

/**
 * h("p", { class: "muted" }, "text", child) → <p class="muted">text…</p>
 * Attributes starting with "on" attach listeners; false/null attributes are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace the contents of `parent` with `nodes`. */
export function mount(parent, ...nodes) {
  parent.replaceChildren(...nodes.flat().filter(Boolean));
}
