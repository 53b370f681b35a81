// The upload page: files go from the browser straight to S3 through the
// pre-signed POST form the server hands out; the server only sees small JSON.

const config = JSON.parse(document.getElementById("upload-config").textContent);
const queue = document.getElementById("queue");
const gallery = document.getElementById("gallery");
const announcer = document.getElementById("announcer");
const loadMore = document.getElementById("load-more");
const emptyGallery = document.getElementById("gallery-empty");
// How often an upload in flight is checked at first, and for how long (ms).
const FAST_POLL = 150;
const FAST_POLL_FOR = 3000;
// A file S3 accepted but the server has not seen yet (its event late or lost)
// is announced again this often, and given up on after this long (ms).
const RECHECK_EVERY = 5000;
const GIVE_UP_AFTER = 5 * 60 * 1000;
const FINAL = new Set(["ready", "rejected", "failed", "expired"]);
// Signed links are fetched again this long (ms) before the server says they expire.
const LINK_MARGIN = 15000;

const MESSAGES = {
  too_large: "This file is larger than the limit.",
  type_not_allowed: "This kind of file is not accepted.",
  invalid_filename: "This file name cannot be used.",
  invalid: "The request was not valid.",
  not_authenticated: "Your session has ended: sign in again.",
  csrf_failed: "The page is out of date: reload it.",
  not_found: "This upload no longer exists.",
  not_uploaded: "Storage has not received the file.",
  network: "The server could not be reached: check the connection and retry.",
  too_many_uploads: "You have many uploads in progress: wait for some to finish.",
  quota_exceeded: "This file would take you past your storage: delete some files first.",
  storage_unavailable: "Storage is not answering right now: retry in a moment.",
  server_error: "Something went wrong on our side: retry in a moment.",
};

// Browsers leave File.type empty for types they do not know (often HEIC and
// AVIF); the extension is the next best claim. The server checks the bytes.
const TYPES_BY_EXTENSION = {
  jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", webp: "image/webp", gif: "image/gif",
  heic: "image/heic", heif: "image/heif", avif: "image/avif", pdf: "application/pdf",
};

export function declaredType(file) {
  if (file.type) return file.type;
  const extension = file.name.includes(".") ? file.name.split(".").pop().toLowerCase() : "";
  return TYPES_BY_EXTENSION[extension] || "";
}
// Types a browser can show from the local file while it uploads.
const PREVIEWABLE = new Set(["image/jpeg", "image/png", "image/webp", "image/gif", "image/avif"]);

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function api(url, { method = "GET", body } = {}) {
  let response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    return { ok: false, status: 0, error: { code: "network", message: MESSAGES.network } };
  }
  if (response.status === 204) return { ok: true, data: null };
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || { code: "server", message: `Server error (${response.status}).` };
    return { ok: false, status: response.status, error };
  }
  return { ok: true, data };
}

function announce(text) {
  announcer.textContent = text;
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function statusLabel(status) {
  return {
    pending: "Waiting",
    uploading: "Uploading",
    uploaded: "Uploaded",
    processing: "Processing…",
    ready: "Ready",
    rejected: "Rejected",
    failed: "Failed",
    expired: "Expired",
    cancelled: "Cancelled",
    error: "Error",
  }[status] || status;
}

// --- One row per file being uploaded ---

let rowCount = 0;

class UploadRow {
  constructor(file) {
    this.file = file;
    this.upload = null;
    this.xhr = null;
    this.pollTimer = null;
    this.cancelled = false;
    // Not crypto.randomUUID(): it only exists on HTTPS and localhost.
    rowCount += 1;
    const id = `row-${rowCount}`;
    this.progress = element("progress", { max: "100", value: "0", "aria-labelledby": `${id}-name` });
    this.percent = element("span", { class: "percent", text: "0 %" });
    this.speed = element("span", { class: "speed" });
    this.status = element("span", { class: "status", text: statusLabel("pending") });
    this.message = element("span", { class: "message" });
    this.cancelButton = element("button", {
      type: "button",
      class: "secondary",
      text: "Cancel",
      "aria-label": `Cancel ${file.name}`,
    });
    this.retryButton = element("button", {
      type: "button",
      text: "Retry",
      "aria-label": `Retry ${file.name}`,
      hidden: "",
    });
    this.preview = element("span", { class: "preview" }, localPreview(file));
    this.cancelButton.addEventListener("click", () => this.cancel());
    this.retryButton.addEventListener("click", () => this.retry());
    this.node = element(
      "li",
      { class: "row", id, "data-state": "pending", tabindex: "-1" },
      this.preview,
      element(
        "div",
        { class: "details" },
        element(
          "div",
          { class: "line" },
          element("span", { class: "name", id: `${id}-name`, text: file.name }),
          element("span", { class: "size", text: formatBytes(file.size) }),
        ),
        element("div", { class: "bar" }, this.progress, this.percent, this.speed),
        element("div", { class: "line" }, this.status, this.message),
      ),
      element("div", { class: "actions" }, this.cancelButton, this.retryButton),
    );
    queue.prepend(this.node);
  }

  setState(state, message = "", { retryable = ["error", "cancelled", "failed"].includes(state) } = {}) {
    const hadFocus = this.node.contains(document.activeElement);
    this.node.dataset.state = state;
    this.status.textContent = statusLabel(state);
    this.message.textContent = message;
    this.retryButton.hidden = !retryable;
    // Once the bytes are in storage there is nothing left to cancel.
    this.cancelButton.hidden = !["pending", "uploading"].includes(state);
    if (state !== "uploading") this.speed.textContent = "";
    // A keyboard user who pressed Cancel or Retry keeps their place in the row.
    if (hadFocus && !this.node.contains(document.activeElement)) {
      const visible = [this.retryButton, this.cancelButton].find((button) => !button.hidden);
      (visible || this.node).focus();
    }
    announce(`${this.file.name}: ${statusLabel(state)}${message ? `. ${message}` : ""}`);
  }

  checkLocally() {
    if (!(declaredType(this.file) in config.allowedTypes)) {
      const allowed = Object.values(config.allowedTypes).join(", ");
      return `This kind of file is not accepted. Allowed: ${allowed}.`;
    }
    if (this.file.size > config.maxBytes) {
      return `This file is ${formatBytes(this.file.size)}; the limit is ${formatBytes(config.maxBytes)}.`;
    }
    if (this.file.size === 0) return "This file is empty.";
    return null;
  }

  async start() {
    const problem = this.checkLocally();
    if (problem) {
      this.setState("rejected", problem);
      return;
    }
    this.cancelled = false;
    this.setState("pending", "Preparing…");
    const result = await api(config.uploadsUrl, {
      method: "POST",
      body: { filename: this.file.name, content_type: declaredType(this.file), size: this.file.size },
    });
    if (!result.ok) {
      const message = result.error.message || MESSAGES[result.error.code] || "The upload was refused.";
      const permanent = ["too_large", "type_not_allowed", "invalid_filename", "invalid"];
      this.setState(permanent.includes(result.error.code) ? "rejected" : "error", message);
      return;
    }
    this.upload = result.data.upload;
    this.node.dataset.uploadId = this.upload.id;
    if (this.cancelled) {
      // Cancel was pressed while the server prepared the form.
      this.discard();
      return;
    }
    this.send(result.data.url, result.data.fields);
  }

  send(url, fields) {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    form.append("file", this.file); // S3 ignores every field after the file
    const xhr = new XMLHttpRequest();
    this.xhr = xhr;
    const started = performance.now();
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const percent = Math.floor((event.loaded / event.total) * 100);
      this.progress.value = percent;
      this.percent.textContent = `${percent} %`;
      const seconds = (performance.now() - started) / 1000;
      if (seconds > 0.2) this.speed.textContent = `${formatBytes(event.loaded / seconds)}/s`;
    });
    xhr.addEventListener("load", () => {
      this.xhr = null;
      if (xhr.status >= 200 && xhr.status < 300) {
        this.progress.value = 100;
        this.percent.textContent = "100 %";
        this.complete();
      } else {
        this.setState("error", `Storage refused the file (${xhr.status}).`);
      }
    });
    xhr.addEventListener("error", () => {
      this.xhr = null;
      this.setState("error", "The connection to storage failed.");
    });
    xhr.addEventListener("abort", () => {
      this.xhr = null;
      this.discard();
    });
    xhr.open("POST", url);
    xhr.send(form);
    this.setState("uploading");
  }

  async complete() {
    this.setState("uploaded", "Checking…");
    this.pollingSince = performance.now();
    await this.announceArrival();
    // Even if this call failed, S3's own event will move the upload on.
    this.poll(FAST_POLL);
  }

  async announceArrival() {
    this.announcedAt = performance.now();
    const result = await api(`${config.uploadsUrl}${this.upload.id}/complete`, { method: "POST" });
    if (result.ok) this.show(result.data);
  }

  poll(delay) {
    clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(async () => {
      const result = await api(`${config.uploadsUrl}${this.upload.id}/`);
      if (!result.ok) {
        if (result.status === 404) return this.setState("error", MESSAGES.not_found);
        if ([401, 403].includes(result.status)) {
          return this.setState("error", MESSAGES[result.error.code] || result.error.message);
        }
        if (performance.now() - this.pollingSince > GIVE_UP_AFTER) {
          return this.setState("error", result.error.message || MESSAGES.network);
        }
        return this.poll(Math.min(delay * 2, 5000));
      }
      this.show(result.data);
      if (FINAL.has(result.data.status)) return;
      if (result.data.status === "pending") {
        const now = performance.now();
        if (now - this.pollingSince > GIVE_UP_AFTER) {
          return this.setState("error", MESSAGES.not_uploaded);
        }
        if (now - this.announcedAt > RECHECK_EVERY) await this.announceArrival();
      }
      // Most files are done within a couple of seconds: poll briskly for
      // those, then back off, never past a second while processing (the
      // outcome should show within about a second). A long-pending file (its
      // event lost, say) is checked less often. Measured: bench/page_latency.py.
      const ceiling = result.data.status === "processing" ? 1000 : 3000;
      const brisk = performance.now() - this.pollingSince < FAST_POLL_FOR;
      this.poll(brisk ? FAST_POLL : Math.min(delay * 1.5, ceiling));
    }, delay);
  }

  show(upload) {
    const changed = !this.upload || upload.status !== this.upload.status;
    this.upload = upload;
    if (!changed && this.node.dataset.state === upload.status) return false;
    this.setState(upload.status, upload.error || "");
    if (upload.status === "ready") {
      this.preview.replaceChildren(thumbnailFor(upload));
      notifications.refreshSoon();
      galleryItems.upsert(upload);
    } else if (FINAL.has(upload.status)) {
      notifications.refreshSoon();
    }
    return true;
  }

  cancel() {
    this.cancelled = true;
    if (this.xhr) this.xhr.abort(); // its abort handler discards the upload
    else if (!this.upload) this.setState("cancelled", "", { retryable: false });
  }

  // Forget an upload whose file never reached storage, so it is not listed.
  discard() {
    if (this.upload && this.upload.status === "pending") {
      api(`${config.uploadsUrl}${this.upload.id}/`, { method: "DELETE" });
    }
    this.upload = null;
    delete this.node.dataset.uploadId;
    this.setState("cancelled");
  }

  async retry() {
    if (this.upload && ["pending", "failed"].includes(this.upload.status)) {
      await api(`${config.uploadsUrl}${this.upload.id}/`, { method: "DELETE" });
    }
    this.upload = null;
    this.progress.value = 0;
    this.percent.textContent = "0 %";
    this.start();
  }
}

function fileIcon(contentType) {
  const kind = (contentType.split("/")[1] || "file").toUpperCase();
  return element("span", { class: "file-icon", "aria-hidden": "true", text: kind });
}

// The file itself, shown from memory while it uploads (no request is made).
function localPreview(file) {
  if (!PREVIEWABLE.has(file.type) || file.size > config.maxBytes) return fileIcon(file.type || "file");
  const url = URL.createObjectURL(file);
  const img = element("img", { src: url, alt: "" });
  const release = () => URL.revokeObjectURL(url);
  img.addEventListener("load", release, { once: true });
  img.addEventListener("error", () => {
    release();
    img.replaceWith(fileIcon(file.type));
  }, { once: true });
  return img;
}

function thumbnailFor(upload) {
  const thumb = upload.thumbnails.find((t) => t.name === "256") || upload.thumbnails[0];
  if (thumb) {
    return element("img", {
      src: thumb.url,
      alt: `Thumbnail of ${upload.filename}`,
      width: String(thumb.width),
      height: String(thumb.height),
      loading: "lazy",
      "data-kind": upload.content_type.startsWith("image/") ? "image" : "document",
    });
  }
  return fileIcon(upload.content_type);
}

// --- The user's earlier uploads ---

const galleryItems = {
  nodes: new Map(),
  resigned: new Set(),
  next: config.uploadsUrl,

  // Signed links expire (config.downloadUrlExpires): a tile is fetched again
  // when its image fails to load or before an expired link is followed.
  async refresh(uploadId) {
    const result = await api(`${config.uploadsUrl}${uploadId}/`);
    if (result.ok && this.nodes.has(uploadId)) this.upsert(result.data);
    return result.ok ? result.data : null;
  },

  render(upload) {
    const signedAt = Date.now();
    const stale = () => Date.now() - signedAt > config.downloadUrlExpires * 1000 - LINK_MARGIN;
    const remove = element("button", { type: "button", class: "link", text: "Delete" });
    remove.setAttribute("aria-label", `Delete ${upload.filename}`);
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete ${upload.filename}?`)) return;
      const result = await api(`${config.uploadsUrl}${upload.id}/`, { method: "DELETE" });
      if (result.ok || result.status === 404) {
        this.nodes.get(upload.id)?.remove();
        this.nodes.delete(upload.id);
        this.showEmpty();
        announce(`${upload.filename} deleted`);
      }
    });
    const thumbnail = thumbnailFor(upload);
    if (thumbnail.tagName === "IMG") {
      // Signed again once: an image that fails with a fresh link is broken, not expired.
      thumbnail.addEventListener("load", () => this.resigned.delete(upload.id), { once: true });
      thumbnail.addEventListener("error", () => {
        if (this.resigned.has(upload.id)) return;
        this.resigned.add(upload.id);
        this.refresh(upload.id);
      }, { once: true });
    }
    const link = upload.url
      ? element(
          "a",
          { href: upload.url, target: "_blank", rel: "noopener", "aria-label": `Open ${upload.filename}` },
          thumbnail,
        )
      : thumbnail;
    if (upload.url) {
      link.addEventListener("click", async (event) => {
        if (!stale()) return;
        event.preventDefault();
        // Opened now, while the click still counts, so no popup blocker stops it.
        const opened = window.open("", "_blank");
        if (opened) opened.opener = null;
        const fresh = await this.refresh(upload.id);
        if (fresh?.url && opened) opened.location.href = fresh.url;
        else opened?.close();
      });
    }
    return element(
      "li",
      { class: "tile", "data-status": upload.status, "data-upload-id": upload.id },
      link,
      element("span", { class: "name", text: upload.filename }),
      element("span", {
        class: "status",
        // In the list, a pending upload is one whose file never arrived.
        text: upload.status === "pending" ? "Not uploaded" : statusLabel(upload.status),
      }),
      upload.error ? element("span", { class: "message", text: upload.error }) : "",
      remove,
    );
  },

  upsert(upload, append = false) {
    const node = this.render(upload);
    const existing = this.nodes.get(upload.id);
    if (existing) existing.replaceWith(node);
    else if (append) gallery.append(node);
    else gallery.prepend(node);
    this.nodes.set(upload.id, node);
    this.showEmpty();
  },

  showEmpty() {
    emptyGallery.hidden = this.nodes.size > 0 || Boolean(this.next);
  },

  async loadNext() {
    if (!this.next) return;
    const result = await api(this.next);
    if (!result.ok) return;
    this.next = result.data.next;
    for (const upload of result.data.results) this.upsert(upload, true);
    loadMore.hidden = !this.next;
    gallery.setAttribute("aria-busy", "false");
    this.showEmpty();
  },
};

// --- Notifications in the header ---

const notifications = {
  timer: null,
  delay: 3000,
  badge: document.getElementById("unread-count"),
  label: document.getElementById("unread-label"),
  button: document.getElementById("notifications"),

  async refresh() {
    const result = await api(config.notificationsUrl);
    if (result.ok) {
      const unread = result.data.unread;
      this.badge.textContent = String(unread);
      this.badge.hidden = unread === 0;
      this.button.hidden = unread === 0;
      const latest = result.data.results.find((n) => !n.read);
      this.label.textContent = unread
        ? `${unread} new: ${latest ? latest.message : ""}`
        : "No new notifications";
    }
    this.schedule(Math.min(this.delay * 1.5, 30000));
  },

  schedule(delay) {
    this.delay = delay;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), delay);
  },

  refreshSoon() {
    this.schedule(100);
    this.delay = 3000;
  },

  async markRead() {
    await api(config.notificationsReadUrl, { method: "POST", body: {} });
    this.refreshSoon();
  },
};

// --- Wiring ---

const rows = new Set();

function addFiles(fileList) {
  for (const file of fileList) {
    const row = new UploadRow(file);
    rows.add(row);
    row.start();
  }
}

// Leaving the page stops every transfer still running: ask first.
window.addEventListener("beforeunload", (event) => {
  if ([...rows].some((row) => row.xhr)) event.preventDefault();
});

const dropzone = document.getElementById("dropzone");
const input = document.getElementById("file-input");
input.addEventListener("change", () => {
  addFiles(input.files);
  input.value = "";
});
for (const type of ["dragenter", "dragover"]) {
  dropzone.addEventListener(type, (event) => {
    event.preventDefault();
    dropzone.classList.add("over");
  });
}
dropzone.addEventListener("dragleave", (event) => {
  // Moving over the zone's own children fires dragleave too.
  if (!dropzone.contains(event.relatedTarget)) dropzone.classList.remove("over");
});
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropzone.classList.remove("over");
  addFiles(event.dataTransfer.files);
});
// A file dropped beside the zone would otherwise replace the page with the file.
for (const type of ["dragover", "drop"]) {
  window.addEventListener(type, (event) => {
    if (dropzone.contains(event.target)) return;
    event.preventDefault();
    if (event.dataTransfer) event.dataTransfer.dropEffect = "none";
  });
}
loadMore.addEventListener("click", () => galleryItems.loadNext());
document.getElementById("notifications")?.addEventListener("click", () => notifications.markRead());

document.getElementById("limits").textContent =
  `Up to ${formatBytes(config.maxBytes)} each: ${Object.values(config.allowedTypes).join(", ")}.`;
galleryItems.loadNext();
notifications.refresh();
