// Which API version the SDK uses: the 3.x default (`v1`, or GOOGLE_GENAI_API_VERSION when the test sets it), and
// `apiVersion: 'v1beta'` in code. Each client makes a generateContent, a stream and a countTokens call.
import { GoogleGenAI } from "@google/genai";
import { calls, emit } from "./record.mjs";

async function exercise(ai) {
  const start = calls.length;
  const request = { model: "gemini-2.5-flash", contents: "Name three primary colours." };
  const response = await ai.models.generateContent(request);
  let streamed = "";
  for await (const chunk of await ai.models.generateContentStream(request)) {
    streamed += chunk.text ?? "";
  }
  const count = await ai.models.countTokens({ model: request.model, contents: request.contents });
  return {
    text: response.text,
    streamed,
    totalTokens: count.totalTokens,
    calls: calls.slice(start).map(({ method, path, query, status }) => ({ method, path, query, status })),
  };
}

emit({
  default: await exercise(new GoogleGenAI({})),
  v1beta: await exercise(new GoogleGenAI({ apiVersion: "v1beta" })),
  origins: [...new Set(calls.map((c) => c.origin))],
  apiKeyHeader: calls.every((c) => c.apiKeyHeader),
});
