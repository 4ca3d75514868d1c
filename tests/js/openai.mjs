// The docs' JavaScript examples for the OpenAI-compatible surface, with only baseURL and apiKey changed.
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { z } from "zod";

const openai = new OpenAI({
  apiKey: process.env.GEMINI_API_KEY,
  baseURL: process.env.GOOGLE_GEMINI_BASE_URL + "/v1beta/openai/",
  maxRetries: 0,
});

const chat = await openai.chat.completions.create({
  model: "gemini-2.5-flash",
  reasoning_effort: "low",
  messages: [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "Explain to me how AI works" },
  ],
});

const stream = await openai.chat.completions.create({
  model: "gemini-2.5-flash",
  messages: [{ role: "user", content: "Explain to me how AI works" }],
  stream: true,
  stream_options: { include_usage: true },
});
let streamed = "";
let streamUsage = null;
for await (const chunk of stream) {
  streamed += chunk.choices[0]?.delta?.content || "";
  if (chunk.usage) streamUsage = chunk.usage.total_tokens;
}

const tools = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the weather in a given location",
    parameters: {
      type: "object",
      properties: {
        location: { type: "string", description: "The city and state, e.g. Chicago, IL" },
        unit: { type: "string", enum: ["celsius", "fahrenheit"] },
      },
      required: ["location"],
    },
  },
}];
const called = await openai.chat.completions.create({
  model: "gemini-2.5-flash",
  messages: [{ role: "user", content: "What's the weather like in Chicago today?" }],
  tools,
  tool_choice: "auto",
});

const CalendarEvent = z.object({ name: z.string(), date: z.string(), participants: z.array(z.string()) });
const parsed = await openai.chat.completions.parse({
  model: "gemini-2.5-flash",
  messages: [
    { role: "system", content: "Extract the event information." },
    { role: "user", content: "John and Susan are going to an AI conference on Friday." },
  ],
  response_format: zodResponseFormat(CalendarEvent, "event"),
});

const embedding = await openai.embeddings.create({
  model: "gemini-embedding-001",
  input: "Your text string goes here",
});

const image = await openai.images.generate({
  model: "imagen-3.0-generate-002",
  prompt: "a portrait of a sheepadoodle wearing a cape",
  response_format: "b64_json",
  n: 1,
});

const models = [];
for await (const model of await openai.models.list()) models.push(model.id);
const retrieved = await openai.models.retrieve("gemini-2.0-flash");

let notFound = null;
try {
  await openai.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "Hi" }] });
} catch (e) {
  notFound = e.status;
}

console.log(JSON.stringify({
  chat: chat.choices[0].message.content,
  streamed,
  streamUsage,
  call: called.choices[0].message.tool_calls?.[0]?.function,
  finish: called.choices[0].finish_reason,
  parsed: parsed.choices[0].message.parsed,
  embeddingLength: embedding.data[0].embedding.length,
  imageBytes: Buffer.from(image.data[0].b64_json, "base64").subarray(1, 4).toString(),
  models: models.slice(0, 50),
  retrieved: retrieved.id,
  notFound,
}));
