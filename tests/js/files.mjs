// Files through the JS SDK: upload a Blob and a path, get, list, use in generateContent, delete.
import { GoogleGenAI, createPartFromUri } from "@google/genai";
import { readFileSync } from "node:fs";
import { emit } from "./record.mjs";

const pdfPath = process.env.PDF_PATH;
const ai = new GoogleGenAI({});
const blob = new Blob([readFileSync(pdfPath)], { type: "application/pdf" });
const fromBlob = await ai.files.upload({ file: blob, config: { displayName: "JS blob" } });
const fromPath = await ai.files.upload({ file: pdfPath, config: { mimeType: "application/pdf" } });
const got = await ai.files.get({ name: fromBlob.name });
const listed = [];
for await (const f of await ai.files.list({ config: { pageSize: 2 } })) listed.push(f.name);
const response = await ai.models.generateContent({
  model: "gemini-2.5-flash",
  contents: [createPartFromUri(fromBlob.uri, fromBlob.mimeType), "Summarize this document"],
});
await ai.files.delete({ name: fromPath.name });
let afterDelete = null;
try {
  await ai.files.get({ name: fromPath.name });
} catch (e) {
  afterDelete = e.status;
}
emit({
  blob: { name: fromBlob.name, displayName: fromBlob.displayName, sizeBytes: fromBlob.sizeBytes, state: fromBlob.state,
          mimeType: fromBlob.mimeType },
  path: { name: fromPath.name, sizeBytes: fromPath.sizeBytes, state: fromPath.state },
  got: { name: got.name, sha256Hash: got.sha256Hash },
  listed,
  text: response.text,
  documentTokens: response.usageMetadata?.promptTokensDetails?.find((d) => d.modality === "DOCUMENT")?.tokenCount,
  afterDelete,
});
