// node-openai: POST a chat completion to https://api.openai.com/v1/chat/completions with the
// key from OPENAI_API_KEY and print the reply. Node.js 18+ built-in fetch; no dependencies;
// knows nothing about idagent (it trusts NODE_EXTRA_CA_CERTS, like any Node program).
"use strict";

const URL = "https://api.openai.com/v1/chat/completions";

async function main() {
  const key = process.env.OPENAI_API_KEY;
  if (!key) {
    console.error("node-openai: OPENAI_API_KEY is not set (idagent run --env OPENAI_API_KEY=sk-... victims/node-openai)");
    return 2;
  }
  const body = {
    model: process.env.OPENAI_MODEL || "gpt-4o-mini",
    messages: [
      { role: "system", content: "You are a terse assistant." },
      { role: "user", content: "Say hello to the Identity Agent audit in five words." },
    ],
  };
  let res;
  try {
    res = await fetch(URL, {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (e) {
    console.error(`node-openai: POST ${URL} failed: ${e.cause || e}`);
    return 1;
  }
  const text = await res.text();
  if (!res.ok) {
    console.error(`node-openai: POST ${URL} -> ${res.status}: ${text.slice(0, 300)}`);
    return 1;
  }
  const reply = JSON.parse(text).choices?.[0]?.message?.content ?? "(no reply)";
  console.log(`node-openai: POST ${URL} -> ${res.status}`);
  console.log(`reply: ${reply}`);
  return 0;
}

main().then((code) => process.exit(code));
