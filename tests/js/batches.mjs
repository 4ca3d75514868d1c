// Batch Mode through the JS SDK: an inline batch created, polled until it ends, read back (inlinedResponses), found
// in the list, then deleted. The same prompts answered online, for comparison by the Python test.
import { GoogleGenAI } from "@google/genai";
import { calls, emit, expectError } from "./record.mjs";

const ai = new GoogleGenAI({});
const model = "gemini-2.5-flash";
const prompts = ["Explain how AI works in a few words", "Name a colour"];

const created = await ai.batches.create({
  model,
  src: [
    { contents: [{ parts: [{ text: prompts[0] }], role: "user" }], metadata: { key: "js-1" } },
    { contents: [{ parts: [{ text: prompts[1] }], role: "user" }], config: { temperature: 0.3 }, metadata: { key: "js-2" } },
  ],
  config: { displayName: "js-batch" },
});

const terminal = new Set(["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"]);
let job = created;
const deadline = Date.now() + 60_000;
while (!terminal.has(job.state) && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 200));
  job = await ai.batches.get({ name: created.name });
}

const responses = (job.dest?.inlinedResponses ?? []).map((r) => ({
  text: r.response?.candidates?.[0]?.content?.parts?.map((p) => p.text ?? "").join("") ?? null,
  metadata: r.metadata ?? null,
  error: r.error ?? null,
}));
const online = [];
online.push((await ai.models.generateContent({ model, contents: prompts[0] })).text);
online.push((await ai.models.generateContent({ model, contents: prompts[1], config: { temperature: 0.3 } })).text);

const listed = [];
for await (const b of await ai.batches.list({ config: { pageSize: 2 } })) listed.push(b.name);

await ai.batches.delete({ name: created.name });
const afterDelete = await expectError(() => ai.batches.get({ name: created.name }));

emit({
  created: { name: created.name, state: created.state, displayName: created.displayName, model: created.model },
  final: { state: job.state, displayName: job.displayName, endTime: job.endTime ?? null },
  responses,
  online,
  listed,
  afterDelete: { threw: afterDelete.threw, status: afterDelete.status, body: afterDelete.body },
  createCall: calls.find((c) => c.path.endsWith(":batchGenerateContent")) ?? null,
});
