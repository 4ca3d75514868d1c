// Structured output: responseJsonSchema (JSON Schema) and responseSchema (the SDK's Type enum).
import { GoogleGenAI, Type } from "@google/genai";
import { emit } from "./record.mjs";

const ai = new GoogleGenAI({});

const jsonSchemaResponse = await ai.models.generateContent({
  model: "gemini-2.5-flash",
  contents: "Describe a fictional person who lives in Lisbon.",
  config: {
    responseMimeType: "application/json",
    responseJsonSchema: {
      type: "object",
      properties: {
        name: { type: "string", description: "Full name" },
        age: { type: "integer", minimum: 0, maximum: 120 },
        hobbies: { type: "array", items: { type: "string" }, minItems: 1 },
      },
      required: ["name", "age", "hobbies"],
    },
  },
});

const schemaResponse = await ai.models.generateContent({
  model: "gemini-2.5-flash",
  contents: "List a classic cookie recipe.",
  config: {
    responseMimeType: "application/json",
    responseSchema: {
      type: Type.OBJECT,
      properties: {
        recipeName: { type: Type.STRING },
        servings: { type: Type.INTEGER },
        rating: { type: Type.NUMBER },
        vegan: { type: Type.BOOLEAN },
        ingredients: { type: Type.ARRAY, items: { type: Type.STRING } },
      },
      required: ["recipeName", "servings", "rating", "vegan", "ingredients"],
      propertyOrdering: ["recipeName", "servings", "rating", "vegan", "ingredients"],
    },
  },
});

const arrayResponse = await ai.models.generateContent({
  model: "gemini-2.5-flash",
  contents: "Give me two colours with their hex codes.",
  config: {
    responseMimeType: "application/json",
    responseSchema: {
      type: Type.ARRAY,
      items: {
        type: Type.OBJECT,
        properties: { colour: { type: Type.STRING }, hex: { type: Type.STRING } },
        required: ["colour", "hex"],
      },
    },
  },
});

emit({ jsonSchema: jsonSchemaResponse.text, responseSchema: schemaResponse.text, arraySchema: arrayResponse.text });
