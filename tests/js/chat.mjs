// ai.chats: two sendMessage turns, then a sendMessageStream turn.
import { GoogleGenAI } from "@google/genai";
import { calls, emit } from "./record.mjs";

const ai = new GoogleGenAI({});
const chat = ai.chats.create({ model: "gemini-2.5-flash" });

const first = await chat.sendMessage({ message: "Hello! My name is Ada and I like gardening." });
const second = await chat.sendMessage({ message: "Suggest a plant for a sunny balcony." });
const afterTwo = JSON.parse(JSON.stringify(chat.getHistory()));

const chunks = [];
for await (const chunk of await chat.sendMessageStream({ message: "Now tell me how often to water it." })) {
  chunks.push({ text: chunk.text ?? null, finishReason: chunk.candidates?.[0]?.finishReason ?? null });
}
const afterStream = JSON.parse(JSON.stringify(chat.getHistory()));

const generateCalls = calls.filter((c) => /:(stream)?[gG]enerateContent$/.test(c.path));
emit({
  first: first.text,
  second: second.text,
  historyAfterTwo: afterTwo,
  streamChunks: chunks,
  historyAfterStream: afterStream,
  sentContents: generateCalls.map((c) => ({ path: c.path, roles: (c.body?.contents ?? []).map((x) => x.role) })),
});
