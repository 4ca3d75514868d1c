// models.list through the SDK's pager (pageSize 3): once with for-await, once page by page; then models.get.
import { GoogleGenAI } from "@google/genai";
import { calls, emit } from "./record.mjs";

const ai = new GoogleGenAI({});

const names = [];
for await (const model of await ai.models.list({ config: { pageSize: 3 } })) {
  names.push(model?.name ?? null);
}
const listCalls = calls.filter((c) => c.path.endsWith("/models")).map(({ path, query, status }) => ({ path, query, status }));

const pages = [];
const pager = await ai.models.list({ config: { pageSize: 3 } });
pages.push(pager.page.map((m) => m.name));
while (pager.hasNextPage()) {
  pages.push((await pager.nextPage()).map((m) => m.name));
}

const model = await ai.models.get({ model: "gemini-2.5-flash" });
emit({ names, pages, listCalls, model: JSON.parse(JSON.stringify(model)) });
