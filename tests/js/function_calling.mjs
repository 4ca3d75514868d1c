// Function calling: the model calls get_weather, the program answers with a functionResponse, the model uses it.
import { GoogleGenAI, Type } from "@google/genai";
import { calls, emit, parts } from "./record.mjs";

const ai = new GoogleGenAI({});
const tools = [{
  functionDeclarations: [{
    name: "get_weather",
    description: "Returns the current weather for a location.",
    parameters: {
      type: Type.OBJECT,
      properties: { location: { type: Type.STRING, description: "The city, e.g. San Francisco" } },
      required: ["location"],
    },
  }],
}];
const contents = [{ role: "user", parts: [{ text: "What's the weather in Boston?" }] }];

const first = await ai.models.generateContent({ model: "gemini-2.5-flash", contents, config: { tools } });
const functionCalls = JSON.parse(JSON.stringify(first.functionCalls ?? []));

let second = null;
if (functionCalls.length > 0) {
  const call = functionCalls[0];
  contents.push(first.candidates[0].content);
  contents.push({
    role: "user",
    parts: [{
      functionResponse: {
        id: call.id,
        name: call.name,
        response: { temperature_celsius: 21, conditions: "partly cloudy", location: call.args?.location },
      },
    }],
  });
  const response = await ai.models.generateContent({ model: "gemini-2.5-flash", contents, config: { tools } });
  second = {
    text: response.text ?? null,
    functionCalls: response.functionCalls ?? [],
    finishReason: response.candidates?.[0]?.finishReason ?? null,
  };
}

emit({
  functionCalls,
  firstText: first.text ?? null,
  firstParts: parts(first),
  firstFinishReason: first.candidates?.[0]?.finishReason ?? null,
  second,
  sentHistoryRoles: (calls.at(-1)?.body?.contents ?? []).map((c) => c.role),
});
