// Thinking: thought summaries with includeThoughts, none with thinkingBudget 0.
import { GoogleGenAI } from "@google/genai";
import { emit, parts } from "./record.mjs";

const ai = new GoogleGenAI({});
const contents = "How many r's are in the word strawberry?";

const withThoughts = await ai.models.generateContent({
  model: "gemini-2.5-flash",
  contents,
  config: { thinkingConfig: { includeThoughts: true } },
});

const noThinking = await ai.models.generateContent({
  model: "gemini-2.5-flash",
  contents,
  config: { thinkingConfig: { thinkingBudget: 0 } },
});

const streamed = [];
for await (const chunk of await ai.models.generateContentStream({
  model: "gemini-2.5-flash",
  contents,
  config: { thinkingConfig: { includeThoughts: true } },
})) {
  streamed.push({ parts: parts(chunk), text: chunk.text ?? null });
}

emit({
  withThoughts: { parts: parts(withThoughts), text: withThoughts.text ?? null, usageMetadata: withThoughts.usageMetadata },
  noThinking: { parts: parts(noThinking), text: noThinking.text ?? null, usageMetadata: noThinking.usageMetadata },
  streamed,
});
