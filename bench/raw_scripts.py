"""The baselines: the smallest scripts that stream an answer with each SDK, used the documented way.

A fresh interpreter runs each, like `llmchat`, so a ratio compares the whole cost of a question: the
interpreter, the imports, the request and every chunk of the answer written to stdout.
"""

RAW_OPENAI = """
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-bench", max_retries=0)
stream = client.chat.completions.create(model="qwen-plus", messages=[{"role": "user", "content": "go"}], stream=True,
                                        stream_options={"include_usage": True})
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        sys.stdout.write(chunk.choices[0].delta.content)
"""

RAW_OLLAMA = """
import sys, ollama
client = ollama.Client(host=sys.argv[1])
for chunk in client.chat(model="qwen3:0.6b", messages=[{"role": "user", "content": "go"}], stream=True):
    sys.stdout.write(chunk.message.content or "")
"""
