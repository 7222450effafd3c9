"""The official `openai` Python client against `answerloop serve`: one plain
and one streaming chat completion of the same greedy request. Prints what it
got as one JSON object for tests/openai_client.rs to check.

Usage: python3 openai_client.py BASE_URL   (the key comes from OPENAI_API_KEY)
"""

import json
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1], max_retries=0, timeout=600)
ask = dict(
    model="SmolLM2-135M-Instruct",
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=24,
    temperature=0,
)
plain = client.chat.completions.create(**ask)
chunks = list(
    client.chat.completions.create(
        **ask, stream=True, stream_options={"include_usage": True}
    )
)
pieces = [
    c.choices[0].delta.content
    for c in chunks
    if c.choices and c.choices[0].delta.content
]
print(
    json.dumps(
        {
            "client_version": openai.__version__,
            "plain": plain.choices[0].message.content,
            "plain_object": plain.object,
            "plain_usage": plain.usage.model_dump(),
            "streamed": "".join(pieces),
            "pieces": len(pieces),
            "roles": [c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role],
            "objects": sorted({c.object for c in chunks}),
            "finish_reasons": [
                c.choices[0].finish_reason
                for c in chunks
                if c.choices and c.choices[0].finish_reason
            ],
            "last_chunk_choices": len(chunks[-1].choices),
            "stream_usage": chunks[-1].usage.model_dump() if chunks[-1].usage else None,
        }
    )
)
