// Errors as the SDK surfaces them: ApiError with the HTTP status and the JSON error body as its message.
import { GoogleGenAI } from "@google/genai";
import { emit, expectError } from "./record.mjs";

const ai = new GoogleGenAI({});
const beta = new GoogleGenAI({ apiVersion: "v1beta" });
const wrongKey = new GoogleGenAI({ apiKey: "AIzaSyD-this-key-does-not-exist-000000" });
const hello = "Say hello.";

emit({
  wrongKey: await expectError(() => wrongKey.models.generateContent({ model: "gemini-2.5-flash", contents: hello })),
  unknownModel: await expectError(() => ai.models.generateContent({ model: "gemini-nope", contents: hello })),
  unknownModelBeta: await expectError(() => beta.models.generateContent({ model: "gemini-nope", contents: hello })),
  unknownModelStream: await expectError(async () => {
    for await (const _ of await ai.models.generateContentStream({ model: "gemini-nope", contents: hello })) {
      // drain
    }
  }),
  unknownModelGet: await expectError(() => ai.models.get({ model: "gemini-nope" })),
  badTemperature: await expectError(() =>
    ai.models.generateContent({ model: "gemini-2.5-flash", contents: hello, config: { temperature: 5 } })),
});
