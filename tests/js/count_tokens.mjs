// countTokens against usageMetadata.promptTokenCount of generateContent for the same contents.
import { GoogleGenAI } from "@google/genai";
import { emit } from "./record.mjs";

const ai = new GoogleGenAI({});
const cases = {
  string: "The quick brown fox jumps over the lazy dog.",
  turns: [
    { role: "user", parts: [{ text: "What is the capital of France?" }] },
    { role: "model", parts: [{ text: "The capital of France is Paris." }] },
    { role: "user", parts: [{ text: "And how many people live there, roughly?" }] },
  ],
};

const results = {};
for (const [name, contents] of Object.entries(cases)) {
  const count = await ai.models.countTokens({ model: "gemini-2.5-flash", contents });
  const response = await ai.models.generateContent({ model: "gemini-2.5-flash", contents });
  results[name] = { totalTokens: count.totalTokens, promptTokenCount: response.usageMetadata?.promptTokenCount };
}
emit(results);
