// Shared helpers for the scripts in this folder (not a test script itself).
//
// Importing this module wraps the global `fetch` that @google/genai uses, to record what the SDK sent: the method,
// host, path, query and JSON body of each request, and the status it got back. Nothing is changed on the way: the
// SDK still finds the server only through GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY, exactly as a user's program.
import { ApiError } from "@google/genai";

export const calls = [];

const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
  const headers = new Headers(init?.headers);
  const call = {
    method: init?.method ?? "GET",
    origin: url.origin,
    path: url.pathname,
    query: Object.fromEntries(url.searchParams),
    apiKeyHeader: headers.has("x-goog-api-key"),
  };
  if (typeof init?.body === "string" && init.body) {
    try {
      call.body = JSON.parse(init.body);
    } catch {
      call.body = init.body;
    }
  }
  calls.push(call);
  const response = await realFetch(input, init);
  call.status = response.status;
  return response;
};

/** Print one JSON document on stdout: the Python test parses the last line. */
export function emit(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

/** What a caught error looks like to a user: its class, HTTP status and message (parsed when it is JSON). */
export function describeError(e) {
  const out = { isApiError: e instanceof ApiError, name: e?.name, status: e?.status, message: String(e?.message) };
  try {
    out.body = JSON.parse(out.message);
  } catch {
    out.body = null;
  }
  return out;
}

/** Run `fn`, expecting it to throw; return the error's description, or {threw: false, value} when it did not. */
export async function expectError(fn) {
  try {
    const value = await fn();
    return { threw: false, value: JSON.parse(JSON.stringify(value ?? null)) };
  } catch (e) {
    return { threw: true, ...describeError(e) };
  }
}

/** The parts of candidate 0, as plain JSON. */
export function parts(response) {
  return JSON.parse(JSON.stringify(response?.candidates?.[0]?.content?.parts ?? []));
}
