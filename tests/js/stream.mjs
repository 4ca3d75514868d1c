// generateContentStream against generateContent for the same request.
import { GoogleGenAI } from "@google/genai";
import { calls, emit } from "./record.mjs";

const ai = new GoogleGenAI({});
const request = {
  model: "gemini-2.5-flash",
  contents: "Write a short paragraph about the history of the bicycle.",
  config: { seed: 7 },
};

const whole = await ai.models.generateContent(request);
const chunks = [];
for await (const chunk of await ai.models.generateContentStream(request)) {
  chunks.push({
    text: chunk.text ?? null,
    finishReason: chunk.candidates?.[0]?.finishReason ?? null,
    role: chunk.candidates?.[0]?.content?.role ?? null,
    usageMetadata: chunk.usageMetadata ?? null,
    responseId: chunk.responseId ?? null,
    modelVersion: chunk.modelVersion ?? null,
  });
}

emit({
  text: whole.text,
  finishReason: whole.candidates?.[0]?.finishReason,
  usageMetadata: whole.usageMetadata,
  chunks,
  streamCall: calls.find((c) => c.path.endsWith(":streamGenerateContent")) ?? null,
});
