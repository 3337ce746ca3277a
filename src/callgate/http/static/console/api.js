// The console's only way to the server: the public API routes, with the tab's token.
const KEY = "callgate.console";

export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "null");
  } catch {
    return null;
  }
}

export function saveSession(value) {
  if (value) sessionStorage.setItem(KEY, JSON.stringify(value));
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body, headers) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || "http_" + status;
    this.details = (body && body.details) || [];
    this.headers = headers;
  }
}

export function clientPath(client, rest) {
  return `/client/${encodeURIComponent(client)}/${rest}`;
}

export async function call(method, path, { body, headers = {}, token, signal } = {}) {
  const s = session();
  const auth = token || (s && s.token);
  const init = { method, headers: { ...headers }, signal };
  if (auth) init.headers.Authorization = "Bearer " + auth;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : null;
  if (!response.ok) throw new ApiError(response.status, data, response.headers);
  return { data, headers: response.headers, status: response.status };
}

// Server-sent events over fetch: EventSource cannot send an Authorization header.
export async function stream(path, onEvent, signal) {
  const s = session();
  const response = await fetch(path, {
    headers: { Authorization: "Bearer " + s.token, Accept: "text/event-stream" },
    signal,
  });
  if (!response.ok) {
    const type = response.headers.get("Content-Type") || "";
    throw new ApiError(response.status, type.includes("json") ? await response.json() : null);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}
